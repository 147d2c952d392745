"""OAuth (authorization key -> access token) and the bearer-token store (fact sheet §1, §5).

Tokens live only in memory; each one remembers the account (the key it was issued for) and the scope.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
from dataclasses import dataclass
from urllib.parse import parse_qs

from gigachat_emulator.clock import Clock
from gigachat_emulator.errors import ApiError, OAuthError

SCOPES = frozenset({"GIGACHAT_API_PERS", "GIGACHAT_API_B2B", "GIGACHAT_API_CORP"})
DEFAULT_AUTH_KEY = base64.b64encode(b"emulator-client:emulator-secret").decode("ascii")
_RQUID = re.compile(r"^[0-9a-fA-F-]{36}$")
# Expired tokens are remembered this long so clients get "Token has expired" rather than "Unauthorized".
_EXPIRED_MEMORY_MS = 3_600_000
_PRUNE_ABOVE = 10_000
_JWE_HEADER = base64.urlsafe_b64encode(
    json.dumps({"cty": "jwt", "enc": "A256CBC-HS512", "alg": "RSA-OAEP-256"}).encode()
).rstrip(b"=")


@dataclass(frozen=True)
class Grant:
    """What a token stands for."""

    account: str
    scope: str
    expires_at_ms: int


def make_token() -> str:
    """Return a random opaque token shaped like the real JWE (5 dot-separated parts, about 1.2 KB)."""
    parts = [secrets.token_urlsafe(n) for n in (256, 16, 600, 32)]
    return ".".join([_JWE_HEADER.decode("ascii"), *parts])


class TokenStore:
    """Issued access tokens; thread-safe. Only dictionary operations happen under the lock."""

    def __init__(self, *, clock: Clock) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._grants: dict[str, Grant] = {}

    def issue(self, *, account: str, scope: str, ttl_s: float) -> tuple[str, Grant]:
        """Create a token valid for ``ttl_s`` seconds from now; returns the token and its grant."""
        now_ms = int(self._clock.now() * 1000)
        grant = Grant(account, scope, now_ms + int(ttl_s * 1000))
        token = make_token()
        with self._lock:
            if len(self._grants) > _PRUNE_ABOVE:
                self._prune_locked(now_ms)
            self._grants[token] = grant
        return token, grant

    def check(self, authorization: str | None) -> Grant:
        """Return the grant of a ``Bearer`` header; raises ``ApiError`` 401 (sheet §5 bodies) otherwise."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "Unauthorized")
        with self._lock:
            grant = self._grants.get(token.strip())
        if grant is None:
            raise ApiError(401, "Unauthorized")
        if grant.expires_at_ms <= int(self._clock.now() * 1000):
            raise ApiError(401, "Token has expired")
        return grant

    def clear(self) -> None:
        """Forget every token."""
        with self._lock:
            self._grants.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._grants)

    def _prune_locked(self, now_ms: int) -> None:
        cutoff = now_ms - _EXPIRED_MEMORY_MS
        for token in [t for t, g in self._grants.items() if g.expires_at_ms < cutoff]:
            del self._grants[token]


def check_oauth_request(headers: dict[str, str], body: bytes, *, auth_key: str, key_scope: str) -> str:
    """Validate an OAuth request and return the requested scope.

    Raises ``OAuthError`` with the documented codes: 4 undecodable header, 400 bad ``RqUID``,
    5 empty scope, 1 unknown scope, 6 wrong key (401), 7 scope not granted to the key.
    ``headers`` keys are lower-case.
    """
    scheme, _, key = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic" or not key.strip():
        raise OAuthError(401, 4, "Can't decode 'Authorization' header")
    if not _RQUID.match(headers.get("rquid", "")):
        # The real body for a bad RqUID is unrecorded (sheet §1); same shape, invented code.
        raise OAuthError(400, 3, "RqUID is invalid")
    scope = _form_scope(body)
    if not scope:
        raise OAuthError(400, 5, "scope is empty")
    if scope not in SCOPES:
        raise OAuthError(400, 1, "scope data format invalid")
    if not secrets.compare_digest(key.strip().encode(), auth_key.encode()):
        raise OAuthError(401, 6, "credentials doesn't match db data")
    if scope != key_scope:
        raise OAuthError(400, 7, "scope from db not fully includes consumed scope")
    return scope


def _form_scope(body: bytes) -> str:
    try:
        form = parse_qs(body.decode("utf-8"), keep_blank_values=True)
    except UnicodeDecodeError:
        return ""
    values = form.get("scope", [""])
    return values[0].strip()

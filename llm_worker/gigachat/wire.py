"""Small helpers for reading GigaChat HTTP answers and describing failures without leaking secrets.

Pure functions, called from task threads by auth.py and client.py.
"""

from __future__ import annotations

import json
import os
from typing import Any

import requests
from requests.utils import get_environ_proxies

from llm_service.config import Settings

SECRET_MASK = "***"
_MAX_MESSAGE = 200


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header; None for a missing, negative or HTTP-date value.

    The HTTP-date form is ignored on purpose, as the official SDK does: GigaChat is not known to
    send Retry-After at all, and a date needs a trustworthy shared wall clock.
    """
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


NOT_JSON: Any = object()  # what json_body answers for a body that is not JSON


def json_body(response: requests.Response) -> Any:
    """The response body parsed as JSON, or NOT_JSON: never raises, whatever the server sent.

    From bytes: json detects UTF-8 itself instead of trusting requests' charset guess. A body nested
    deeper than the parser's recursion limit raises RecursionError, not ValueError.
    """
    try:
        return json.loads(response.content)
    except (ValueError, RecursionError):
        return NOT_JSON


def server_message(response: requests.Response) -> str:
    """The ``message`` of an error body (API: ``{status, message}``, OAuth: ``{code, message}``).

    Falls back to the reason phrase when the body is not JSON (gateways answer 502/504 in HTML).
    """
    body = json_body(response)
    if not isinstance(body, dict):
        return response.reason or ""
    message = str(body.get("message") or response.reason or "")
    if "code" in body:
        message = f"code {body['code']}: {message}"
    return message[:_MAX_MESSAGE]


def describe_exception(exc: requests.RequestException) -> str:
    """A short, secret-free description of a transport failure.

    requests puts the URL and the low-level reason in the text, never the request headers, so
    the Authorization header cannot leak from here.
    """
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text[:_MAX_MESSAGE]}"


def scrub(text: str, *secrets: str) -> str:
    """``text`` with every non-empty secret replaced by the mask: a last guard on error messages."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, SECRET_MASK)
    return text


def tls_verify(settings: Settings) -> str | bool:
    """``verify=`` for requests: the CA bundle path when set, else GIGACHAT_VERIFY_SSL.

    Passed on every request rather than set on the session. With verification on and no bundle set,
    a REQUESTS_CA_BUNDLE (or CURL_CA_BUNDLE) environment variable names the CA file, as requests itself
    would read it: read here once, because the session does not read the environment (see
    :func:`environment_proxies`).
    """
    if settings.gigachat_ca_bundle:
        return settings.gigachat_ca_bundle
    if not settings.gigachat_verify_ssl:
        return False
    return os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True


def environment_proxies(url: str) -> dict[str, str]:
    """The proxies the environment (HTTPS_PROXY, ALL_PROXY, NO_PROXY, ...) gives for ``url``.

    Resolved once per client: a session left to read the environment (``trust_env``) did it on every
    request, 1.7 % of a worker's samples at 64 tasks in flight. A process's environment does not change
    after it starts, so the answer is the same.
    """
    return dict(get_environ_proxies(url))

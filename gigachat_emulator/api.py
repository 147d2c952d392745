"""The GigaChat endpoints other than chat: OAuth, models, token counting, files and balance (sheet §1-4)."""

from __future__ import annotations

from gigachat_emulator.auth import Grant, check_oauth_request
from gigachat_emulator.catalog import CATALOG, find_model
from gigachat_emulator.chat import parse_model_name
from gigachat_emulator.completions import raise_fault
from gigachat_emulator.errors import ApiError
from gigachat_emulator.files import StoredFile, parse_multipart, size_limit
from gigachat_emulator.state import EmulatorState
from gigachat_emulator.tokenizer import count_tokens
from gigachat_emulator.wire import JSON_PLAIN, Request, Response, json_response

_PURPOSES = frozenset({"general", "assistant"})
_OAUTH_HEADERS = {"Cache-Control": "no-cache, no-store, max-age=0, must-revalidate", "Pragma": "no-cache"}


class GigaChatApi:
    """Handlers for one emulator; each takes the request and the path parameters."""

    def __init__(self, state: EmulatorState) -> None:
        self._state = state

    def authorize(self, request: Request) -> Grant:
        """Return the grant of the request's bearer token; raises 401 ``ApiError``."""
        return self._state.tokens.check(request.header("authorization"))

    def oauth(self, request: Request, params: dict[str, str]) -> Response:
        """``POST /api/v2/oauth``: exchange the authorization key for an access token."""
        options = self._state.options
        scope = check_oauth_request(
            request.headers, request.body, auth_key=options.auth_key, key_scope=options.scope
        )
        config = self._state.config.get()
        fault = self._state.injector.decide(config) if config.fault_oauth else None
        if fault is not None:
            raise_fault(self._state, request, config, fault)
        token, grant = self._state.tokens.issue(account=options.auth_key, scope=scope, ttl_s=config.token_ttl)
        body = {"access_token": token, "expires_at": grant.expires_at_ms}
        return json_response(200, body, content_type=JSON_PLAIN, headers=_OAUTH_HEADERS)

    def models(self, request: Request, params: dict[str, str]) -> Response:
        """``GET /api/v1/models``."""
        self.authorize(request)
        return json_response(200, {"object": "list", "data": [m.to_json() for m in CATALOG]})

    def model(self, request: Request, params: dict[str, str]) -> Response:
        """``GET /api/v1/models/{model}``; 404 ``No such model``."""
        self.authorize(request)
        found = find_model(params["model"])
        if found is None:
            raise ApiError(404, "No such model")
        return json_response(200, found.to_json())

    def tokens_count(self, request: Request, params: dict[str, str]) -> Response:
        """``POST /api/v1/tokens/count``: one ``{object, tokens, characters}`` per input string."""
        self.authorize(request)
        payload = request.json_body()
        if not isinstance(payload, dict):
            raise ApiError(400, "Invalid JSON body: expected an object")
        request.call.model = parse_model_name(payload.get("model")).id
        inputs = payload.get("input")
        if isinstance(inputs, str):
            inputs = [inputs]
        if not isinstance(inputs, list) or not all(isinstance(text, str) for text in inputs):
            raise ApiError(422, "Invalid params: input must be a string or a list of strings")
        counts = [{"object": "tokens", "tokens": count_tokens(t), "characters": len(t)} for t in inputs]
        return json_response(200, counts)

    def balance(self, request: Request, params: dict[str, str]) -> Response:
        """``GET /api/v1/balance``; 403 for the pay-as-you-go scope."""
        grant = self.authorize(request)
        if grant.scope == "GIGACHAT_API_CORP":
            raise ApiError(403, "Permission denied")
        return json_response(200, {"balance": self._state.billing.balance()})

    def upload_file(self, request: Request, params: dict[str, str]) -> Response:
        """``POST /api/v1/files`` (multipart ``file`` + ``purpose``)."""
        self.authorize(request)
        try:
            parsed = parse_multipart(request.header("content-type") or "", request.body)
        except ValueError as exc:
            raise ApiError(400, f"Invalid multipart body: {exc}") from None
        parts = {part.name: part for part in parsed}
        file_part = parts.get("file")
        if file_part is None or file_part.filename is None:
            raise ApiError(400, "Invalid params: file is required")
        purpose_part = parts.get("purpose")
        purpose = purpose_part.data.decode("utf-8", "replace").strip() if purpose_part else "general"
        if purpose not in _PURPOSES:
            raise ApiError(422, f"Invalid params: purpose must be one of {', '.join(sorted(_PURPOSES))}")
        if len(file_part.data) > size_limit(file_part.filename):
            raise ApiError(413, "Payload too large")
        stored = self._state.files.add(
            filename=file_part.filename,
            purpose=purpose,
            content_type=file_part.content_type,
            data=file_part.data,
            now=self._state.clock.now(),
        )
        return json_response(200, stored.to_json())

    def list_files(self, request: Request, params: dict[str, str]) -> Response:
        """``GET /api/v1/files``."""
        self.authorize(request)
        return json_response(200, {"data": [f.to_json() for f in self._state.files.list()]})

    def get_file(self, request: Request, params: dict[str, str]) -> Response:
        """``GET /api/v1/files/{file}``."""
        self.authorize(request)
        return json_response(200, self._file(params["file"]).to_json())

    def delete_file(self, request: Request, params: dict[str, str]) -> Response:
        """``POST /api/v1/files/{file}/delete``."""
        self.authorize(request)
        stored = self._state.files.delete(params["file"])
        if stored is None:
            raise ApiError(404, "No such file")
        body = {"id": stored.id, "object": "file", "deleted": True, "access_policy": stored.access_policy}
        return json_response(200, body)

    def file_content(self, request: Request, params: dict[str, str]) -> Response:
        """``GET /api/v1/files/{file}/content``: the raw bytes."""
        self.authorize(request)
        stored = self._file(params["file"])
        return Response(200, stored.data, content_type=stored.content_type or "application/octet-stream")

    def _file(self, file_id: str) -> StoredFile:
        stored = self._state.files.get(file_id)
        if stored is None:
            raise ApiError(404, "No such file")
        return stored

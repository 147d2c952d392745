"""The control API under ``/_emulator/`` (not part of GigaChat): health, config, outage, call log, reset.

No authentication: the emulator is meant to listen on loopback only.
"""

from __future__ import annotations

from collections.abc import Mapping

from gigachat_emulator.calls import summarize
from gigachat_emulator.config import non_negative
from gigachat_emulator.errors import ApiError, ConfigError
from gigachat_emulator.faults import OutageMode
from gigachat_emulator.state import EmulatorState
from gigachat_emulator.wire import Request, Response, json_response


def _object_body(request: Request) -> Mapping[str, object]:
    payload = request.json_body() if request.body.strip() else {}
    if not isinstance(payload, dict):
        raise ApiError(400, "Invalid JSON body: expected an object")
    return payload


class ControlApi:
    """Handlers for one emulator; each takes the request and the path parameters."""

    def __init__(self, state: EmulatorState) -> None:
        self._state = state

    def health(self, request: Request, params: dict[str, str]) -> Response:
        """``GET /_emulator/health`` -> ``{"ok": true}``."""
        return json_response(200, {"ok": True})

    def get_config(self, request: Request, params: dict[str, str]) -> Response:
        """``GET /_emulator/config`` -> the current settings."""
        return json_response(200, self._state.config.get().to_json())

    def set_config(self, request: Request, params: dict[str, str]) -> Response:
        """``POST /_emulator/config`` with some settings -> all settings; 400 and no change on a bad value."""
        try:
            updated = self._state.config.update(_object_body(request))
        except ConfigError as exc:
            raise ApiError(400, f"Invalid config: {exc}") from None
        return json_response(200, updated.to_json())

    def outage(self, request: Request, params: dict[str, str]) -> Response:
        """``POST /_emulator/outage`` ``{"seconds": N, "mode": "503"|"reset", "model": M}``; 0 ends it.

        With ``model``, only chat calls on that model fail (per_model.py); without, the whole API.
        """
        body = _object_body(request)
        try:
            seconds = non_negative(body.get("seconds"))
            mode = OutageMode(str(body.get("mode", OutageMode.HTTP_503.value)))
        except ValueError as exc:
            raise ApiError(400, f"Invalid outage: {exc}") from None
        model = body.get("model")
        now = self._state.clock.now()
        if model is None:
            until = self._state.outage.start(now=now, seconds=seconds, mode=mode)
        elif isinstance(model, str) and model:
            until = self._state.model_outages.start(model=model, now=now, seconds=seconds, mode=mode)
        else:
            raise ApiError(400, "Invalid outage: model must be a non-empty string")
        return json_response(200, {"until": until, "seconds": seconds, "mode": mode.value, "model": model})

    def get_billing(self, request: Request, params: dict[str, str]) -> Response:
        """``GET /_emulator/billing`` -> packages, usage and the refusal switch."""
        return json_response(200, self._state.billing.snapshot())

    def set_billing(self, request: Request, params: dict[str, str]) -> Response:
        """``POST /_emulator/billing`` ``{"refuse": 0|402|403, "enforce": bool, "packages": {...}}``."""
        try:
            return json_response(200, self._state.billing.configure(_object_body(request)))
        except ValueError as exc:
            raise ApiError(400, f"Invalid billing: {exc}") from None

    def calls(self, request: Request, params: dict[str, str]) -> Response:
        """``GET /_emulator/calls[?request_id=&session_id=]`` -> records and per-request-id chat counts."""
        records = self._state.calls.query(
            request_id=request.query.get("request_id"), session_id=request.query.get("session_id")
        )
        body: dict[str, object] = {
            "calls": [r.to_json() for r in records],
            "count": len(records),
            "dropped": self._state.calls.dropped,
            **summarize(records),
        }
        return json_response(200, body)

    def stats(self, request: Request, params: dict[str, str]) -> Response:
        """``GET /_emulator/stats`` -> in-flight chat calls per account, stored tokens and files, outage."""
        now = self._state.clock.now()
        body = {
            "in_flight": sum(self._state.limiter.in_flight().values()),
            "tokens": len(self._state.tokens),
            "files": len(self._state.files.list()),
            "outage_remaining_s": round(self._state.outage.remaining(now), 3),
        }
        return json_response(200, body)

    def reset(self, request: Request, params: dict[str, str]) -> Response:
        """``POST /_emulator/reset``: clear log, tokens, files, outage and billing; keep the configuration."""
        self._state.reset()
        return json_response(200, {"ok": True})

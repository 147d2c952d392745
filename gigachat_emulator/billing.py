"""Prepaid token packages: GET /balance falls with billed usage, and 402/403 on demand.

Each model's package starts at its size (``packages``) and every answered chat call bills its
``total_tokens`` against the package of the model that answered. With ``enforce`` on, a call to a model
whose package is spent answers 402 Payment Required, as the real service does (sheet §5, D-ERR).
``refuse`` (402 or 403, 0 = off) makes every chat call answer that status regardless: the control
API's switch for tests of a spent package or of lost rights.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

from gigachat_emulator.errors import ApiError

# Invented package sizes for GET /balance (prepaid scopes only).
DEFAULT_PACKAGES = {"GigaChat": 1_000_000, "GigaChat-Pro": 500_000, "GigaChat-Max": 250_000}
_REFUSALS = {0: "", 402: "Payment Required", 403: "Permission denied"}


class Billing:
    """Packages, usage and the refusal switch of one emulator; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._packages = dict(DEFAULT_PACKAGES)
        self._used: dict[str, int] = {}
        self._enforce = False
        self._refuse = 0

    def admit(self, model: str) -> None:
        """Raise the 402/403 a chat call to ``model`` gets now, if any."""
        with self._lock:
            status = self._refuse
            if not status and self._enforce and self._left(model) <= 0:
                status = 402
        if status:
            raise ApiError(status, _REFUSALS[status])

    def charge(self, model: str, tokens: int) -> None:
        with self._lock:
            self._used[model] = self._used.get(model, 0) + tokens

    def balance(self) -> list[dict[str, object]]:
        """The ``balance`` list of GET /balance: what is left of each package."""
        with self._lock:
            return [{"usage": model, "value": float(self._left(model))} for model in self._packages]

    def _left(self, model: str) -> int:
        return max(0, self._packages.get(model, 0) - self._used.get(model, 0))

    def configure(self, body: Mapping[str, object]) -> dict[str, object]:
        """Apply ``{"refuse": 0|402|403, "enforce": bool, "packages": {model: n}}``; ValueError if bad."""
        refuse = body.get("refuse", None)
        if refuse is not None and refuse not in _REFUSALS:
            raise ValueError("refuse must be 0, 402 or 403")
        packages = body.get("packages", None)
        if packages is not None and not (
            isinstance(packages, dict) and all(isinstance(v, int) and v >= 0 for v in packages.values())
        ):
            raise ValueError("packages must map model names to token counts")
        with self._lock:
            if isinstance(refuse, int):
                self._refuse = refuse
            if "enforce" in body:
                self._enforce = bool(body["enforce"])
            if isinstance(packages, dict):
                self._packages = {str(k): int(v) for k, v in packages.items()}
                self._used = {}
        return self.snapshot()

    def snapshot(self) -> dict[str, object]:
        with self._lock:
            return {
                "refuse": self._refuse,
                "enforce": self._enforce,
                "packages": dict(self._packages),
                "used": dict(self._used),
            }

    def clear(self) -> None:
        """Full packages, no refusal (the emulator's reset)."""
        with self._lock:
            self._packages = dict(DEFAULT_PACKAGES)
            self._used = {}
            self._enforce = False
            self._refuse = 0

"""Per-model behaviour: an outage of one model, and latency or error rates that differ per model.

So that a client's fallback from one model to another (docs/gigachat-client.md) can be tested: during
``POST /_emulator/outage {"model": "GigaChat-2-Max", ...}`` chat calls on that model answer 503 (or have
their connection reset) while other models answer as usual.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # faults.py imports config.py, which imports this module
    from gigachat_emulator.faults import OutageMode

PerModel = tuple[tuple[str, float], ...]


def per_model(check: Callable[[object], float]) -> Callable[[object], PerModel]:
    """A coerce for ``"A=0.5,B=1"`` or ``{"A": 0.5}`` settings: per-model values, each checked."""

    def coerce(value: object) -> PerModel:
        items: list[tuple[str, object]]
        if isinstance(value, Mapping):
            items = [(str(k), v) for k, v in value.items()]
        elif isinstance(value, str):
            items = []
            for part in (p.strip() for p in value.split(",") if p.strip()):
                name, sep, raw = part.partition("=")
                if not sep or not name.strip():
                    raise ValueError(f"expected MODEL=VALUE, got {part!r}")
                items.append((name.strip(), raw.strip()))
        else:
            raise ValueError(f"expected MODEL=VALUE,... or an object, got {value!r}")
        return tuple((name, check(raw)) for name, raw in items)

    return coerce


def value_for(values: PerModel, model: str, default: float) -> float:
    """The model's value, or ``default`` when the setting names no such model."""
    return next((v for name, v in values if name == model), default)


class ModelOutages:
    """Outages of single models, each until a deadline on the emulator's clock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._until: dict[str, tuple[float, OutageMode]] = {}

    def start(self, *, model: str, now: float, seconds: float, mode: OutageMode) -> float:
        """Begin (or replace) an outage of ``model``; ``seconds`` 0 ends it. Returns the end time."""
        with self._lock:
            self._until[model] = (now + seconds, mode)
            return now + seconds

    def current(self, model: str, now: float) -> OutageMode | None:
        """The mode when ``model`` is out at ``now``, else ``None``."""
        with self._lock:
            window = self._until.get(model)
            return window[1] if window is not None and now < window[0] else None

    def clear(self) -> None:
        with self._lock:
            self._until.clear()

"""Run-time tunable behaviour: latency, fault injection, token lifetime and the concurrency limit.

Each setting is declared once, as a field of ``FaultConfig`` carrying its check and help line; the CLI flags
(``--latency-per-token`` for ``latency_per_token``) and ``POST /_emulator/config`` are both derived from it.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gigachat_emulator.errors import ConfigError
from gigachat_emulator.per_model import per_model, value_for

Coerce = Callable[[object], Any]


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"expected a number, got {value!r}")
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"expected a number, got {value!r}") from None


def non_negative(value: object) -> float:
    """Seconds or a rate that may be zero."""
    number = _number(value)
    if number < 0:
        raise ValueError(f"must be >= 0, got {value!r}")
    return number


def positive(value: object) -> float:
    """Seconds that must be more than zero."""
    number = _number(value)
    if number <= 0:
        raise ValueError(f"must be > 0, got {value!r}")
    return number


def fraction(value: object) -> float:
    """A probability in [0, 1]."""
    number = _number(value)
    if not 0 <= number <= 1:
        raise ValueError(f"must be within [0, 1], got {value!r}")
    return number


def count(value: object) -> int:
    """A whole number >= 0 (``"3"`` and ``3`` are accepted, ``3.5`` is not)."""
    number = _number(value)
    if number < 0 or number != int(number):
        raise ValueError(f"must be a whole number >= 0, got {value!r}")
    return int(number)


def optional_seconds(value: object) -> float | None:
    """Seconds > 0, or ``None`` / ``""`` / ``"none"`` for 'not set'."""
    if value is None or (isinstance(value, str) and value.strip().lower() in {"", "none"}):
        return None
    return positive(value)


def status_codes(value: object) -> tuple[int, ...]:
    """A non-empty list of HTTP error codes: ``"500,429"`` or ``[500, 429]``."""
    items: list[object]
    if isinstance(value, str):
        items = [item for item in value.replace(" ", "").split(",") if item]
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise ValueError(f"expected a list of HTTP codes, got {value!r}")
    codes = tuple(count(item) for item in items)
    if not codes or any(not 400 <= code <= 599 for code in codes):
        raise ValueError(f"expected HTTP error codes within 400..599, got {value!r}")
    return codes


def flag(value: object) -> bool:
    """A boolean: JSON ``true``/``false`` or the strings ``true``/``false``/``1``/``0``."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _knob(default: object, coerce: Coerce, help_text: str) -> Any:
    return field(default=default, metadata={"coerce": coerce, "help": help_text})


@dataclass(frozen=True)
class FaultConfig:
    """One immutable snapshot of the tunable settings; a request reads one snapshot and keeps it."""

    latency: float = _knob(0.0, non_negative, "fixed seconds added to every chat completion")
    latency_per_token: float = _knob(0.0, non_negative, "seconds added per generated (output) token")
    error_rate: float = _knob(0.0, fraction, "fraction of chat calls answered with an injected error")
    error_codes: tuple[int, ...] = _knob(
        (500, 429, 503), status_codes, "comma-separated codes injected errors use, in rotation"
    )
    hang_rate: float = _knob(0.0, fraction, "fraction of chat calls that hang until the client gives up")
    hang_cap: float = _knob(300.0, positive, "longest a hung call waits before answering 504")
    retry_after: float | None = _knob(None, optional_seconds, "Retry-After seconds on 429 answers (off)")
    fault_oauth: bool = _knob(False, flag, "also apply error/hang injection to /api/v2/oauth")
    token_ttl: float = _knob(1800.0, positive, "access token lifetime in seconds")
    max_concurrency: int = _knob(0, count, "in-flight chat calls per account before 429 (0 = unlimited)")
    model_latency: tuple[tuple[str, float], ...] = _knob(
        (), per_model(non_negative), "per-model fixed latency, MODEL=SECONDS,... (overrides latency)"
    )
    model_error_rate: tuple[tuple[str, float], ...] = _knob(
        (), per_model(fraction), "per-model injected error rate, MODEL=RATE,... (overrides error_rate)"
    )

    def for_model(self, model: str) -> FaultConfig:
        """This snapshot with the per-model latency and error rate of ``model`` applied."""
        return dataclasses.replace(
            self,
            latency=value_for(self.model_latency, model, self.latency),
            error_rate=value_for(self.model_error_rate, model, self.error_rate),
        )

    def updated(self, changes: Mapping[str, object]) -> FaultConfig:
        """Return a copy with ``changes`` applied.

        Every key and value is checked before anything changes; the first bad one raises ``ConfigError``
        naming the setting and the value, and the caller keeps its old snapshot.
        """
        known = {knob.name: knob for knob in knobs()}
        parsed: dict[str, Any] = {}
        for name, raw in changes.items():
            knob = known.get(name)
            if knob is None:
                raise ConfigError(f"unknown setting {name!r}; known: {', '.join(sorted(known))}")
            try:
                parsed[name] = knob.metadata["coerce"](raw)
            except ValueError as exc:
                raise ConfigError(f"{name}: {exc}") from None
        return dataclasses.replace(self, **parsed)

    def to_json(self) -> dict[str, object]:
        """Return the settings as a JSON-ready mapping (``error_codes`` as a list)."""
        data = dataclasses.asdict(self)
        data["error_codes"] = list(self.error_codes)
        data["model_latency"] = dict(self.model_latency)
        data["model_error_rate"] = dict(self.model_error_rate)
        return data


def knobs() -> tuple[dataclasses.Field[Any], ...]:
    """Return the declared settings in declaration order (used to build CLI flags and docs)."""
    return dataclasses.fields(FaultConfig)


class ConfigHolder:
    """The current ``FaultConfig``, swapped atomically by ``update``.

    Readers call ``get`` once per request and never hold a lock while they sleep.
    """

    def __init__(self, initial: FaultConfig) -> None:
        self._lock = threading.Lock()
        self._current = initial

    def get(self) -> FaultConfig:
        """Return the current snapshot."""
        return self._current

    def update(self, changes: Mapping[str, object]) -> FaultConfig:
        """Apply a partial update (all-or-nothing) and return the new snapshot; raises ``ConfigError``."""
        with self._lock:
            self._current = self._current.updated(changes)
            return self._current

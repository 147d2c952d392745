"""Circuit breakers in front of GigaChat: stop calling a model that keeps failing.

One BreakerSet per worker process, shared by its task threads, holding one ModelBreaker per model
(created on first use; the files API has its own, ``FILES_API``). GigaChatClient puts every HTTP
attempt through the breaker of the model it calls, so one model's outage leaves the others (and the
fallback models of docs/gigachat-client.md) callable. Only infrastructure failures count:
``requests`` transport errors (timeouts, refused connections) and the ``requests.HTTPError`` the
client raises for a 5xx. A 4xx is the server answering about the task, so it counts as a success.

Why not ``pybreaker.CircuitBreaker.call``: it holds the breaker's lock for the whole guarded call,
which would serialise every model call of the process behind one HTTP request. So the HTTP call runs
outside any lock; admission (closed: go; open: refuse until the reset timeout, then admit exactly
one probe; half-open: refuse all but that probe) is decided here, and each outcome is then replayed
into pybreaker with a trivial function, so pybreaker still keeps the counters, applies ``exclude``,
moves between states and notifies listeners.

Callbacks registered with :meth:`ModelBreaker.on_change` run in the task thread whose call moved the
state, with the breaker's lock held: they must be quick (set a flag, write the status table) and
must not call back into the breaker except ``state``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import pybreaker
import requests

from llm_service.config import Settings
from llm_service.errors import BreakerOpenError
from llm_service.log_lines import BREAKER_OPEN
from llm_service.status_table import Breaker

log = logging.getLogger(__name__)

T = TypeVar("T")

_STATES = {
    pybreaker.STATE_CLOSED: Breaker.CLOSED,
    pybreaker.STATE_OPEN: Breaker.OPEN,
    pybreaker.STATE_HALF_OPEN: Breaker.HALF_OPEN,
}


def is_not_infrastructure_failure(exc: BaseException) -> bool:
    """pybreaker ``exclude`` rule: only transport errors and 5xx (both RequestException) count."""
    return not isinstance(exc, requests.RequestException)


@dataclass(frozen=True)
class _Ticket:
    generation: int  # the breaker's state generation when the call was admitted
    probe: bool


class _Listener(pybreaker.CircuitBreakerListener):
    """Logs transitions and forwards them to the owning ModelBreaker (called under its lock)."""

    def __init__(self, owner: ModelBreaker) -> None:
        self._owner = owner

    def state_change(self, cb: pybreaker.CircuitBreaker, old_state: Any, new_state: Any) -> None:
        state = _STATES[new_state.name]
        if state is Breaker.OPEN:
            # The runbook's line stays exact (log scrapers match it); the model follows on its own line.
            log.warning(BREAKER_OPEN, cb.fail_counter)
            log.warning("Circuit breaker OPEN for model %s", cb.name)
        elif state is Breaker.HALF_OPEN:
            log.info(
                "Circuit breaker HALF-OPEN: letting one probe call through to GigaChat (model %s)", cb.name
            )
        else:
            log.info("Circuit breaker CLOSED: GigaChat calls resume (model %s)", cb.name)
        self._owner._state_changed(state)


class ModelBreaker:
    """Per-process circuit breaker; thread-safe. ``call`` raises BreakerOpenError when it refuses."""

    def __init__(
        self,
        *,
        fail_max: int,
        reset_timeout_s: float,
        name: str = "gigachat",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._reset_timeout_s = reset_timeout_s
        self._clock = clock
        self._lock = threading.Lock()
        self._generation = 0
        self._opened_at = 0.0
        self._probe_in_flight = False
        self._local = threading.local()  # per task thread: did its last call fail as the probe?
        self._callbacks: list[Callable[[Breaker], None]] = []
        self._cb = pybreaker.CircuitBreaker(
            fail_max=fail_max,
            reset_timeout=reset_timeout_s,
            exclude=[is_not_infrastructure_failure],
            listeners=[_Listener(self)],
            name=name,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelBreaker:
        return cls(
            fail_max=settings.gigachat_breaker_fail_max, reset_timeout_s=settings.gigachat_breaker_reset_s
        )

    @property
    def state(self) -> Breaker:
        """The current state, for the status table. Open stays OPEN until a call admits the probe."""
        return _STATES[self._cb.current_state]

    @property
    def failure_count(self) -> int:
        return self._cb.fail_counter

    def probe_failed(self) -> bool:
        """True when the calling thread's last call was the half-open probe and the server failed it.

        GigaChatClient then reports ProbeFailedError, which costs the task an attempt.
        """
        return bool(getattr(self._local, "probe_failed", False))

    def on_change(self, callback: Callable[[Breaker], None]) -> None:
        """Call ``callback(new_state)`` on every transition (see the module docstring for the rules)."""
        with self._lock:
            self._callbacks.append(callback)

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` if the breaker admits it, and record its outcome.

        Raises BreakerOpenError without calling ``fn`` when open (or half-open with the probe
        already out); otherwise returns or raises whatever ``fn`` does.
        """
        ticket = self._admit()
        try:
            result = fn()
        except BaseException as exc:
            self._record(ticket, exc)
            raise
        self._record(ticket, None)
        return result

    def _admit(self) -> _Ticket:
        self._local.probe_failed = False
        with self._lock:
            state = self._cb.current_state
            if state == pybreaker.STATE_CLOSED:
                return _Ticket(self._generation, probe=False)
            if state == pybreaker.STATE_OPEN and self._clock() - self._opened_at >= self._reset_timeout_s:
                self._cb.half_open()
                state = pybreaker.STATE_HALF_OPEN
            if state == pybreaker.STATE_HALF_OPEN and not self._probe_in_flight:
                self._probe_in_flight = True
                return _Ticket(self._generation, probe=True)
            wait = max(0.0, self._opened_at + self._reset_timeout_s - self._clock())
        raise BreakerOpenError(
            f"GigaChat circuit breaker of {self.name} is open (next probe in {wait:.1f}s); call not sent"
        )

    def _record(self, ticket: _Ticket, exc: BaseException | None) -> None:
        with self._lock:
            if ticket.probe:
                self._probe_in_flight = False
                self._local.probe_failed = exc is not None and self._cb.is_system_error(exc)
            # A call admitted before the last transition (e.g. started while closed, finished after
            # the breaker opened) says nothing about the current state: drop its outcome.
            if ticket.generation != self._generation:
                return
            if exc is None:
                self._replay(None)
            elif self._cb.is_system_error(exc):
                self._replay(exc)
            # Anything else (no call slot, shutdown, a bug) never reached the server: no verdict.

    def _replay(self, exc: BaseException | None) -> None:
        def outcome() -> None:
            if exc is not None:
                raise exc

        try:
            self._cb.call(outcome)
        except pybreaker.CircuitBreakerError:
            pass  # pybreaker's way of saying "this failure opened the circuit"; we log via the listener
        except BaseException as replayed:
            if replayed is not exc:
                raise

    def _state_changed(self, state: Breaker) -> None:
        # Runs inside pybreaker calls made by _admit/_record, i.e. with self._lock held.
        self._generation += 1
        if state is Breaker.OPEN:
            self._opened_at = self._clock()
        for callback in self._callbacks:
            callback(state)


FILES_API = "files API"  # the breaker key of file uploads and deletions (not a model)


class BreakerSet:
    """One ModelBreaker per model, created on first use; thread-safe.

    It also keeps the last state of each breaker (set by their transitions) so that ``chain_state``
    never takes another breaker's lock from inside a transition.
    """

    def __init__(
        self, *, fail_max: int, reset_timeout_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._fail_max = fail_max
        self._reset_timeout_s = reset_timeout_s
        self._clock = clock
        self._lock = threading.Lock()
        self._breakers: dict[str, ModelBreaker] = {}
        self._states: dict[str, Breaker] = {}
        self._callbacks: list[Callable[[str, Breaker], None]] = []

    @classmethod
    def from_settings(cls, settings: Settings) -> BreakerSet:
        return cls(
            fail_max=settings.gigachat_breaker_fail_max, reset_timeout_s=settings.gigachat_breaker_reset_s
        )

    def get(self, model: str) -> ModelBreaker:
        with self._lock:
            breaker = self._breakers.get(model)
            if breaker is None:
                breaker = ModelBreaker(
                    fail_max=self._fail_max,
                    reset_timeout_s=self._reset_timeout_s,
                    name=model,
                    clock=self._clock,
                )
                breaker.on_change(lambda state: self._changed(model, state))
                self._breakers[model] = breaker
            return breaker

    def state(self, model: str) -> Breaker:
        with self._lock:
            return self._states.get(model, Breaker.CLOSED)

    def chain_state(self, models: tuple[str, ...]) -> Breaker:
        """OPEN when every model of the chain is open; HALF_OPEN when none is closed; else CLOSED."""
        with self._lock:
            states = [self._states.get(m, Breaker.CLOSED) for m in models]
        if Breaker.CLOSED in states:
            return Breaker.CLOSED
        return Breaker.HALF_OPEN if Breaker.HALF_OPEN in states else Breaker.OPEN

    def on_change(self, callback: Callable[[str, Breaker], None]) -> None:
        """Call ``callback(model, new_state)`` on every transition of any breaker (same rules as above)."""
        with self._lock:
            self._callbacks.append(callback)

    def _changed(self, model: str, state: Breaker) -> None:
        # Runs inside that model's breaker lock; only this set's lock is taken here, never another
        # breaker's, so two breakers changing at once cannot deadlock.
        with self._lock:
            self._states[model] = state
            callbacks = list(self._callbacks)
        for callback in callbacks:
            callback(model, state)

"""The call log: one record per GigaChat API or OAuth call, bounded, thread-safe.

Tests read it through ``GET /_emulator/calls`` to see what a client really sent, e.g. to detect that one
task (one ``X-Request-ID``) reached the model twice.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass

CHAT_ENDPOINT = "/api/v1/chat/completions"
DEFAULT_CAPACITY = 100_000


@dataclass
class CallRecord:
    """One answered call. ``status`` 499 means the client went away before the answer was complete.

    Only ``CallLog.set_status`` may change a record once it is in the log.
    """

    ts: float
    method: str
    endpoint: str
    status: int
    request_id: str | None
    session_id: str | None
    model: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    injected: str | None
    duration_ms: float

    def to_json(self) -> dict[str, object]:
        """Return the record as a JSON-ready mapping."""
        return dataclasses.asdict(self)


class CallLog:
    """The last ``capacity`` calls, oldest first; older ones are dropped and counted."""

    def __init__(self, *, capacity: int = DEFAULT_CAPACITY) -> None:
        self._lock = threading.Lock()
        self._records: deque[CallRecord] = deque(maxlen=capacity)
        self._dropped = 0

    def add(self, record: CallRecord) -> None:
        """Append a record, dropping the oldest when full."""
        with self._lock:
            if len(self._records) == self._records.maxlen:
                self._dropped += 1
            self._records.append(record)

    def set_status(self, record: CallRecord, status: int) -> None:
        """Correct the status of a logged record (the write of its answer failed after it was logged)."""
        with self._lock:
            record.status = status

    def query(self, *, request_id: str | None = None, session_id: str | None = None) -> list[CallRecord]:
        """Return the records matching every given filter, oldest first."""
        with self._lock:
            records = [dataclasses.replace(r) for r in self._records]
        return [
            r
            for r in records
            if (request_id is None or r.request_id == request_id)
            and (session_id is None or r.session_id == session_id)
        ]

    @property
    def dropped(self) -> int:
        """How many records fell out of the bounded log since the last ``clear``."""
        with self._lock:
            return self._dropped

    def clear(self) -> None:
        """Forget every record."""
        with self._lock:
            self._records.clear()
            self._dropped = 0


def summarize(records: Iterable[CallRecord]) -> dict[str, dict[str, int]]:
    """Count chat completion calls per ``X-Request-ID``: all of them, and those answered 200.

    A request id with ``per_request_id_ok`` above 1 reached the model more than once successfully.
    """
    chat = [(r.request_id, r.status) for r in records if r.endpoint == CHAT_ENDPOINT and r.request_id]
    every = Counter(request_id for request_id, _ in chat)
    ok = Counter(request_id for request_id, status in chat if status == 200)
    return {"per_request_id": dict(every), "per_request_id_ok": dict(ok)}

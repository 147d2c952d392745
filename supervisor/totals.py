"""Service-wide task counters that survive worker restarts, for the Prometheus exporter.

Runs in the supervisor process. Each worker counts into its own status-table record, which starts
at zero with every new worker. Just before :class:`~supervisor.pool.Pool` clears a record for the
next worker of that slot, it hands the old record to :meth:`CounterBook.fold`; the exported total is
what was folded plus every record now in the table. A record is either folded or in the table, never
both (the fold and the clear happen in the same call of the single-threaded loop), so a counter
never goes down and never counts twice, even when a worker is killed with SIGKILL: its record
outlives it until the replacement is started.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from llm_service.status_table import FAILURE_CODE_COUNTERS, PROCESSING_BUCKETS_S, SlotSnapshot

# The cumulative integer counters of a record, by field name.
COUNTED_FIELDS = ("done", "failed", "retried", "tokens_used", "kafka_errors", "model_calls", "model_errors")


@dataclass(kw_only=True)
class Totals:
    """Counter values summed over records: the fields above, the histogram and the failures by code."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTED_FIELDS, 0))
    processing_s_sum: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(PROCESSING_BUCKETS_S) + 1))
    failed_by_code: list[int] = field(default_factory=lambda: [0] * FAILURE_CODE_COUNTERS)

    def add(self, snap: SlotSnapshot) -> None:
        for name in COUNTED_FIELDS:
            self.counts[name] += int(getattr(snap, name))
        self.processing_s_sum += snap.processing_s_sum
        for i, n in enumerate(snap.processing_buckets):
            self.buckets[i] += n
        for i, n in enumerate(snap.failed_by_code):
            self.failed_by_code[i] += n

    def copy(self) -> Totals:
        return Totals(
            counts=dict(self.counts),
            processing_s_sum=self.processing_s_sum,
            buckets=list(self.buckets),
            failed_by_code=list(self.failed_by_code),
        )


class CounterBook:
    """What workers that no longer own a record counted, plus the records in the table now."""

    def __init__(self) -> None:
        self._folded = Totals()

    def fold(self, record: SlotSnapshot) -> None:
        """Keep a record's counts before its slot is cleared. Called by the pool, once per record."""
        self._folded.add(record)

    def totals(self, records: Iterable[SlotSnapshot]) -> Totals:
        """The service-wide totals given every record of the table as it is now."""
        result = self._folded.copy()
        for record in records:
            result.add(record)
        return result

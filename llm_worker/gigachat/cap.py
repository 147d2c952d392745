"""The host-wide call cap's shared record and the rules that move it. Pure: no files, no clock.

The record (the limiter directory's ``cap`` file, see limiter.py) holds the cap and what it learnt:
``<cap> <decreased_at> <ceiling> <changed_at> <cap>`` (times on CLOCK_MONOTONIC, one clock for every
process of the host; the cap twice, so a torn read is told from a record).

How the cap finds the account's limit (docs/gigachat-client.md, "Finding the account's limit"):

* Slow start (no 429 seen yet, ``ceiling`` 0): while callers wait with every place taken, +a
  quarter (at least 1) per ``admit_s`` without a 429. A refused call is answered at once, so a level
  that stood ``admit_s`` without a 429 was admitted: the cap opens up in about 2 s even when each
  call takes seconds (growing per success, it doubled once per call duration). Successes do not grow
  it here: calls that end together would each add one and overshoot the account by as many.
* On a 429: the ceiling becomes the calls in flight and the cap one below; each further 429 of the
  same burst (sent before that decrease, within ``decrease_window_s``) one lower again.
* Below the ceiling: +1 per ``increase_after`` successes of a process (the limiter counts them); the
  refused level itself only ``probe_after_s`` after the last decrease. Never above ``max_concurrency``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

RECORD_BYTES = 64
NEVER = float("-inf")


MAX_LEVEL = 99_999  # a cap or ceiling beyond this is a damaged record (and would not fit RECORD_BYTES)


def _parse_time(raw: bytes) -> float:
    """A damaged time (unparsable, nan, inf) reads as never: it must neither block growth nor skip waits."""
    try:
        value = float(raw)
    except ValueError:
        return NEVER
    return value if math.isfinite(value) else NEVER


@dataclass(frozen=True)
class CapRecord:
    """The shared ``cap`` file: the cap, when it last went down and last changed, the level refused."""

    cap: int
    decreased_at: float
    ceiling: int  # in-flight count at the last 429; 0 = none seen yet (slow start)
    changed_at: float = NEVER

    @classmethod
    def fresh(cls, now: float) -> CapRecord:
        """A new account: one call until it proves more are fine."""
        return cls(1, NEVER, 0, now)

    @classmethod
    def parse(cls, raw: bytes) -> CapRecord | None:
        """None for an empty or torn record. Reads the 4-field record of earlier versions too."""
        fields = raw.split()
        if len(fields) not in (4, 5) or fields[0] != fields[-1]:
            return None
        if not fields[0].isdigit() or not fields[2].isdigit():
            return None
        if int(fields[0]) > MAX_LEVEL or int(fields[2]) > MAX_LEVEL:
            return None
        decreased_at = _parse_time(fields[1])
        changed_at = _parse_time(fields[3]) if len(fields) == 5 else decreased_at
        return cls(int(fields[0]), decreased_at, int(fields[2]), changed_at)

    def encode(self) -> bytes:
        # Fixed width, so a shorter record never leaves the tail of a longer one behind.
        text = f"{self.cap} {self.decreased_at:.6f} {self.ceiling} {self.changed_at:.6f} {self.cap}"
        return (text.ljust(RECORD_BYTES - 1) + "\n").encode()

    def since_boot(self, now: float) -> CapRecord:
        """Times after ``now`` come from before a reboot (a new monotonic clock): long past by now."""
        if self.decreased_at <= now and self.changed_at <= now:
            return self
        decreased_at = NEVER if self.decreased_at > now else self.decreased_at
        return dataclasses.replace(self, decreased_at=decreased_at, changed_at=min(self.changed_at, now))


@dataclass(frozen=True)
class CapRules:
    """When the cap grows and how far a 429 lowers it."""

    max_concurrency: int
    decrease_window_s: float
    probe_after_s: float
    admit_s: float

    def grown(self, record: CapRecord, now: float, step: int = 1) -> CapRecord | None:
        """The record with the cap ``step`` higher (within bounds), or None when it may not grow now."""
        if record.cap >= self.max_concurrency:
            return None
        since_decrease = now - record.decreased_at
        # Right after a decrease, successes of calls sent before it say nothing new.
        if since_decrease < self.decrease_window_s:
            return None
        cap = min(self.max_concurrency, record.cap + step)
        if record.ceiling and cap >= record.ceiling and since_decrease < self.probe_after_s:
            return None  # the level that was refused is tried again only rarely
        return dataclasses.replace(record, cap=cap, changed_at=now)

    def admitted(self, record: CapRecord, now: float) -> CapRecord | None:
        """Slow start, every place taken: grow by a quarter if the cap stood ``admit_s`` without a 429.

        A quarter, not double: the step is what the account may refuse at once when it is passed
        (2 of 12 calls at a limit of 10), and 1 -> 64 still takes under 2 s.
        """
        if record.ceiling or now - record.changed_at < self.admit_s:
            return None
        return self.grown(record, now, step=max(1, record.cap // 4))

    def refused(
        self, record: CapRecord, now: float, sent_at: float | None, in_flight: Callable[[], int]
    ) -> tuple[CapRecord, int]:
        """The record after a 429 to a call sent at ``sent_at``, and the in-flight level refused."""
        stale = sent_at is None or sent_at <= record.decreased_at
        if stale and now - record.decreased_at < self.decrease_window_s:
            # Another refusal of the burst already counted: the calls in flight then included this
            # one, which the account did not admit either, so one fewer fits.
            refused_at = record.cap
            return CapRecord(max(1, record.cap - 1), record.decreased_at, refused_at, now), refused_at
        refused_at = max(1, in_flight())
        new_cap = max(1, min(record.cap - 1, refused_at - 1))
        return CapRecord(new_cap, now, refused_at, now), refused_at

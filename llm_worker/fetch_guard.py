"""A guard against a kafka-python 3.0.12 bug that stops fetching a partition for good after a pause.

``Fetcher.fetched_records`` parks the parsed records of a partition paused while its records wait in
line (``_paused_partition_records``) and puts them back once the partition is resumed, but only when
``_next_partition_records is None``. A fully consumed ``PartitionRecords`` is drained, not cleared: it
stays there, falsy but not None, so the parked records are never put back, and
``_fetchable_partitions`` skips a partition that has parked records: it is never fetched again. The
worker pauses every partition whenever it is at capacity, so a worker holding two partitions or more
could leave one of them unconsumed, with no error, until the next rebalance (found by
tests/supervisor/test_scaling.py: 44 tasks of one partition waited 4 minutes after a host was lost).

:func:`clear_drained_records` runs on the consumer thread before each ``poll`` and turns a drained
in-line ``PartitionRecords`` back into None, the state the library tests for. Private kafka-python
API (``_fetcher``, ``_next_partition_records``): kafka-python is pinned to >=3.0.12,<3.1 in setup.cfg.
"""

from __future__ import annotations

from typing import Any


def clear_drained_records(consumer: Any) -> bool:
    """Forget a fully consumed in-line batch so parked partitions can be restored; True if it did."""
    fetcher = getattr(consumer, "_fetcher", None)
    current = getattr(fetcher, "_next_partition_records", None)
    if current is None or bool(current):
        return False
    fetcher._next_partition_records = None  # type: ignore[union-attr]
    return True

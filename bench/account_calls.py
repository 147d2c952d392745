"""How well the account's slots were used, seen from the GigaChat emulator's call log.

The service's throughput mixes the cap's losses with the rest of the pipeline's (Kafka, S3, CPU of a
busy machine). The emulator's log shows the cap's part alone: each answered chat call ran from
``ts - duration`` to ``ts`` on the emulator, so

* ``busy``: the share of the account's slot-time (limit x span of the run) that answered calls used;
* ``handoff_ms``: when a call ends with the account full, the time until the next admitted call
  starts (the freed place's hand-off to a waiting caller: the limiter's wake-up plus one request's
  travel), as median and 90th percentile.
"""

from __future__ import annotations

import statistics
from typing import Any


def _spans(chat_calls: list[dict[str, Any]]) -> list[tuple[float, float]]:
    return sorted((c["ts"] - c["duration_ms"] / 1000, c["ts"]) for c in chat_calls if c["status"] == 200)


def _handoffs(spans: list[tuple[float, float]], limit: int) -> list[float]:
    """Gaps from a call ending with ``limit`` in flight to the next start (the account was full)."""
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    in_flight, freed_at, gaps = 0, None, []
    for at, step in events:
        if step < 0 and in_flight == limit:
            freed_at = at
        elif step > 0 and freed_at is not None:
            gaps.append(at - freed_at)
            freed_at = None
        in_flight += step
    return gaps


def account_use(chat_calls: list[dict[str, Any]], limit: int) -> dict[str, Any]:
    """``busy`` share of the account's slot-time and the hand-off gaps, from the emulator's call log."""
    spans = _spans(chat_calls)
    if not spans:
        return {"busy": None, "handoff_ms": None}
    span = max(end for _, end in spans) - spans[0][0]
    busy = sum(end - start for start, end in spans) / (limit * span) if span > 0 else None
    gaps = _handoffs(spans, limit)
    quantiles = statistics.quantiles(gaps, n=10, method="inclusive") if len(gaps) > 1 else gaps * 9
    return {
        "busy": round(busy, 3) if busy is not None else None,
        "handoff_ms": {
            "count": len(gaps),
            "p50": round(1000 * statistics.median(gaps), 2) if gaps else None,
            "p90": round(1000 * quantiles[8], 2) if gaps else None,
        },
    }

"""The commit rule: per partition, only the contiguous prefix of finished offsets."""

from __future__ import annotations

from kafka.errors import KafkaTimeoutError

from llm_worker.delivery_fence import FENCE_RETRY_S, FenceReader
from llm_worker.inflight import InFlight
from llm_worker.offsets import OffsetTracker, PartitionOffsets


def test_commits_only_the_finished_prefix() -> None:
    offsets = PartitionOffsets()
    for offset in (10, 11, 12, 13):
        assert offsets.take(offset, 0.0)
    offsets.finish(12)
    offsets.finish(11)
    assert offsets.to_commit() is None  # 10 is still running: nothing may be committed
    offsets.finish(10)
    assert offsets.to_commit() == 13  # 10, 11, 12 done; 13 is the next to read
    offsets.committed(13)
    assert offsets.to_commit() is None
    offsets.finish(13)
    assert offsets.to_commit() == 14
    assert offsets.in_flight == 0


def test_gaps_in_offsets_do_not_block() -> None:
    offsets = PartitionOffsets()  # compaction or transaction markers leave holes
    for offset in (5, 7, 20):
        offsets.take(offset, 0.0)
    offsets.finish(7)
    offsets.finish(5)
    assert offsets.to_commit() == 8


def test_redelivered_or_unknown_offsets_are_ignored() -> None:
    offsets = PartitionOffsets()
    assert offsets.take(3, 0.0)
    assert not offsets.take(3, 0.0)
    assert not offsets.take(2, 0.0)
    assert not offsets.finish(99)
    assert offsets.finish(3)
    assert not offsets.finish(3)
    assert offsets.to_commit() == 4


def test_oldest_pending_time_follows_the_head() -> None:
    offsets = PartitionOffsets()
    offsets.take(1, 100.0)
    offsets.take(2, 200.0)
    assert offsets.oldest_taken_at() == 100.0
    offsets.finish(2)
    assert offsets.oldest_taken_at() == 100.0
    offsets.finish(1)
    assert offsets.oldest_taken_at() is None


def test_tracker_keeps_partitions_apart_and_epochs_fence_old_completions() -> None:
    tracker: OffsetTracker[str] = OffsetTracker()
    epoch_a = tracker.take("a", 0, 1.0)
    epoch_b = tracker.take("b", 0, 2.0)
    assert epoch_a is not None and epoch_b is not None and epoch_a != epoch_b
    assert tracker.finish("b", 0, epoch_b)
    assert tracker.to_commit() == {"b": 1}
    assert tracker.in_flight() == 1 and tracker.oldest_taken_at() == 1.0

    tracker.forget(["a"])  # revoked...
    again = tracker.take("a", 0, 3.0)  # ...and assigned again: the message is redelivered
    assert again is not None and again != epoch_a
    assert not tracker.finish("a", 0, epoch_a)  # the old ownership's completion moves nothing
    assert tracker.to_commit(["a"]) == {}
    assert tracker.finish("a", 0, again)
    assert tracker.to_commit(["a"]) == {"a": 1}
    tracker.committed({"a": 1, "b": 1})
    assert tracker.to_commit() == {}


def test_a_first_delivery_lies_at_or_above_the_fence_once_the_redeliveries_below_it_ended() -> None:
    offsets = PartitionOffsets()
    assert offsets.take(10, 0.0) and offsets.take(11, 0.0)
    assert not offsets.first_delivery(12), "no fence read yet: everything may be a redelivery"
    offsets.fence = 12  # the end offset after the assignment: 10 and 11 may have run elsewhere
    assert not offsets.first_delivery(11)
    assert offsets.take(12, 0.0)
    assert not offsets.first_delivery(12), "10 and 11 still run: one may be the same task, unmarked"
    offsets.finish(11)
    assert not offsets.first_delivery(12)
    offsets.finish(10)
    assert offsets.first_delivery(12) and offsets.first_delivery(500)


def test_an_ownership_with_nothing_below_its_fence_starts_with_first_deliveries() -> None:
    tracker: OffsetTracker[str] = OffsetTracker()
    tracker.assigned(["a"])
    [(partition, epoch)] = tracker.unfenced()
    tracker.fence(partition, epoch, 7)
    assert tracker.unfenced() == []
    assert tracker.take("a", 7, 0.0) == epoch
    assert tracker.first_delivery("a", 7, epoch)
    assert not tracker.first_delivery("a", 7, epoch + 1), "another ownership's message"

    tracker.forget(["a"])  # revoked: the next ownership reads its own fence
    assert not tracker.first_delivery("a", 8, epoch)
    again = tracker.take("a", 8, 0.0)
    assert again is not None and again != epoch and not tracker.first_delivery("a", 8, again)
    tracker.fence("a", epoch, 100)  # a late read for the old ownership is ignored
    assert tracker.unfenced() == [("a", again)]


def test_a_failed_fence_read_is_not_retried_on_every_loop_turn() -> None:
    """Each try blocks the consumer thread up to FENCE_READ_TIMEOUT_MS: after a failure, wait."""
    inflight: InFlight[str, object] = InFlight()
    inflight.assigned(["p"])
    now = [0.0]

    class NoLeader:
        calls = 0

        def end_offsets(self, partitions: list[str], timeout_ms: int) -> dict[str, int]:
            self.calls += 1
            if self.calls == 1:
                raise KafkaTimeoutError("no leader")
            return {"p": 42}

    consumer = NoLeader()
    reader = FenceReader(consumer=consumer, inflight=inflight, clock=lambda: now[0])  # type: ignore[arg-type]
    reader.read()
    reader.read()
    assert consumer.calls == 1 and inflight.unfenced() != []
    now[0] = FENCE_RETRY_S
    reader.read()
    assert consumer.calls == 2 and inflight.unfenced() == []

"""The guard against kafka-python leaving a finished rebalance unapplied (llm_worker/join_guard.py)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from kafka.future import Future
from kafka.structs import MemberState

from llm_worker.join_guard import JoinGuard


@dataclass
class FakeCoordinator:
    state: str = MemberState.STABLE
    rejoin_needed: bool = False
    _join_task: Future | None = None
    rejoin_requests: list[bool] = field(default_factory=list)
    group_instance_id: str | None = "llm-worker-h-0"
    _heartbeat_enabled: bool = True
    rejoining: bool = False
    _lock: threading.RLock = field(default_factory=threading.RLock)

    def need_rejoin(self) -> bool:
        return self.rejoin_needed

    def request_rejoin(self) -> None:
        self.rejoin_requests.append(True)
        self.rejoin_needed = True


@dataclass
class FakeConsumer:
    _coordinator: FakeCoordinator


def guard(coordinator: FakeCoordinator) -> JoinGuard:
    return JoinGuard(FakeConsumer(coordinator))


def test_a_finished_join_left_rebalancing_is_rejoined() -> None:
    # The bug: poll gave up waiting, the SyncGroup answer came, need_rejoin() turned false.
    coordinator = FakeCoordinator(state=MemberState.REBALANCING, _join_task=Future().success(b"assignment"))
    join_guard = guard(coordinator)
    assert join_guard.rebalancing()
    assert join_guard.after_poll()
    assert coordinator.rejoin_requests == [True]
    assert join_guard.rejoins == 1


def test_a_failed_join_left_rebalancing_is_rejoined_too() -> None:
    coordinator = FakeCoordinator(
        state=MemberState.REBALANCING, _join_task=Future().failure(Exception("sync failed"))
    )
    assert guard(coordinator).after_poll()
    assert coordinator.rejoin_requests == [True]


def test_a_join_still_in_flight_is_left_alone() -> None:
    coordinator = FakeCoordinator(state=MemberState.REBALANCING, rejoin_needed=True, _join_task=Future())
    join_guard = guard(coordinator)
    assert join_guard.rebalancing()
    assert not join_guard.after_poll()
    assert coordinator.rejoin_requests == []


def test_a_stable_member_is_left_alone() -> None:
    for task in (None, Future().success(b"")):
        coordinator = FakeCoordinator(_join_task=task)
        join_guard = guard(coordinator)
        assert not join_guard.rebalancing()
        assert not join_guard.after_poll()
        assert coordinator.rejoin_requests == []


def test_a_stable_member_that_must_rejoin_counts_as_rebalancing() -> None:
    assert guard(FakeCoordinator(rejoin_needed=True)).rebalancing()
    assert guard(FakeCoordinator(state=MemberState.UNJOINED)).rebalancing()


def test_a_consumer_without_a_coordinator_is_ignored() -> None:
    join_guard = JoinGuard(object())
    assert not join_guard.rebalancing()
    assert not join_guard.after_poll()


def test_a_stable_static_member_with_heartbeats_off_was_fenced() -> None:
    """kafka-python's heartbeat thread turns heartbeats off on FENCED_INSTANCE_ID and raises nothing."""
    coordinator = FakeCoordinator()
    join_guard = guard(coordinator)
    assert not join_guard.fenced()
    coordinator._heartbeat_enabled = False
    assert join_guard.fenced()
    coordinator.rejoining = True  # a rejoin turns heartbeats off while still STABLE: not a fence
    assert not join_guard.fenced()
    coordinator.rejoining, coordinator.rejoin_needed = False, True
    assert not join_guard.fenced()
    coordinator.rejoin_needed = False
    coordinator.state = MemberState.REBALANCING  # heartbeats are off during every join: not a fence
    assert not join_guard.fenced()
    coordinator.state, coordinator.group_instance_id = MemberState.STABLE, None
    assert not join_guard.fenced()  # a dynamic member cannot be fenced

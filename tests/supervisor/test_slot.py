from __future__ import annotations

import pytest

from supervisor.slot import TRANSITIONS, IllegalTransitionError, Slot, SlotState


def test_every_state_has_a_way_out_and_a_way_in() -> None:
    targets = {t for allowed in TRANSITIONS.values() for t in allowed}
    assert set(SlotState) == set(TRANSITIONS) == targets


def test_a_legal_path_through_a_life() -> None:
    slot = Slot(index=2, hostname="h")
    for state in (
        SlotState.STARTING,
        SlotState.RUNNING,
        SlotState.DRAINING,
        SlotState.STOPPING,
        SlotState.BACKOFF,
        SlotState.STARTING,
        SlotState.FATAL,
        SlotState.STARTING,
        SlotState.RUNNING,
        SlotState.STARTING,
        SlotState.STOPPED,
    ):
        slot.move(state, 1.0)
    assert slot.state is SlotState.STOPPED


@pytest.mark.parametrize(
    ("start", "target"),
    [
        (SlotState.STOPPED, SlotState.RUNNING),
        (SlotState.BACKOFF, SlotState.RUNNING),
        (SlotState.FATAL, SlotState.DRAINING),
        (SlotState.STOPPING, SlotState.RUNNING),
        (SlotState.DRAINING, SlotState.RUNNING),
    ],
)
def test_illegal_moves_raise(start: SlotState, target: SlotState) -> None:
    slot = Slot(index=0, hostname="h", state=start)
    with pytest.raises(IllegalTransitionError, match=f"{start.value} -> {target.value}"):
        slot.move(target, 1.0)
    assert slot.state is start


def test_identity_is_per_slot_not_per_process() -> None:
    slot = Slot(index=3, hostname="box", pid=42)
    assert slot.group_instance_id == "llm-worker-box-3"
    assert slot.worker_id == "box:3:42"
    slot.pid = 43
    assert slot.group_instance_id == "llm-worker-box-3"

from __future__ import annotations

from pathlib import Path

from llm_service.socket_protocol import Request
from llmctl.control import render_table
from tests.supervisor.test_arbiter import World


def test_table_has_a_row_per_worker_with_the_contract_columns(tmp_path: Path) -> None:
    world = World(tmp_path)
    try:
        world.arbiter.pool.fill()
        world.run_workers()
        world.step()
        world.table.writer(0).task_started("a-1")
        world.table.writer(0).task_took_place()
        text = render_table(world.arbiter.handle_request(Request(cmd="status")))
    finally:
        world.close()
    lines = text.splitlines()
    assert lines[0].startswith("health: ok   workers: 2/2")
    assert "(own share of the host)" in lines[0]  # which CPU/RAM the limits judge (no cgroup limit here)
    assert lines[1].startswith("tasks since start: done 0   failed 0   in flight 1   avg 0.0 ms")
    assert lines[2].split() == [
        "SLOT",
        "PID",
        "STATE",
        "RESTARTS",
        "IN_FLIGHT",
        "DONE",
        "FAILED",
        "TOKENS",
        "CPU%",
        "RSS_MB",
        "HEARTBEAT_S",
        "AVG_MS",
        "KAFKA",
        "S3",
        "GIGACHAT",
        "BREAKER",
    ]
    assert [line.split()[2] for line in lines[3:5]] == ["RUNNING", "RUNNING"]
    assert "a-1  RECEIVED" in lines[5]


def test_table_shows_todays_budgets_and_why_intake_waits() -> None:
    budget = {
        "day": "2026-12-01",
        "pool": {"budget": 1000, "spent": 1000, "remaining": 0},
        "tenants": {"ops": {"budget": 0, "spent": 7, "remaining": None}},
        "payment_required": None,
        "intake_paused_reason": "pool token budget spent",
    }
    text = render_table({"supervisor": {"budget": budget}, "workers": []})
    assert (
        "tokens today (2026-12-01): pool 1000/1000 (0 left)   ops 7 (no budget)"
        "   intake PAUSED: pool token budget spent"
    ) in text.splitlines()

"""The spend and payment files (llm_worker/spending.py) and the gate on them (llm_worker/budget_gate.py).

Real files, real flock; several processes add at once and no token is lost. Clocks are injected to
cross midnight in the budget's time zone.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from llm_service.config import load_settings
from llm_service.errors import ConfigError
from llm_worker.balance_watch import BalanceWatch
from llm_worker.budget_gate import Budgets, Hold, SpendGate, parse_tenant_budgets
from llm_worker.spending import Spend, SpendingFiles, _float, _read_json

MSK = ZoneInfo("Europe/Moscow")
# 2026-12-01 20:59:00 UTC = 23:59 in Moscow; a minute later the Moscow day is 2026-12-02.
BEFORE_MIDNIGHT = 1796158740.0


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def files(tmp_path: Path, clock: Clock | None = None) -> SpendingFiles:
    return SpendingFiles(directory=tmp_path, zone=MSK, wall_clock=clock or Clock(BEFORE_MIDNIGHT))


def _add_many(directory: str, n: int) -> None:
    spending = SpendingFiles(directory=Path(directory), zone=MSK)
    for _ in range(n):
        spending.add(tokens=3, tenant="sales")


def test_processes_adding_at_once_lose_no_token(tmp_path: Path) -> None:
    procs = [multiprocessing.Process(target=_add_many, args=(str(tmp_path), 50)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    spent = SpendingFiles(directory=tmp_path, zone=MSK).spent()
    assert (spent.pool, spent.tenants) == (600, {"sales": 600})
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_a_new_day_in_the_budget_zone_starts_from_zero(tmp_path: Path) -> None:
    clock = Clock(BEFORE_MIDNIGHT)
    spending = files(tmp_path, clock)
    spending.add(tokens=100, tenant=None)
    assert spending.spent().day == "2026-12-01" and spending.spent().pool == 100
    clock.now += 120  # 00:01 in Moscow, still 21:01 UTC
    assert spending.spent().day == "2026-12-02" and spending.spent().pool == 0
    spending.add(tokens=5, tenant="ops")
    assert spending.spent().pool == 5


def test_a_damaged_file_counts_from_zero(tmp_path: Path) -> None:
    spending = files(tmp_path)
    (tmp_path / f"spend-{spending.day()}.json").write_text("{not json")
    assert spending.spent().pool == 0
    spending.add(tokens=7, tenant=None)
    assert spending.spent().pool == 7


def test_payment_pause_admits_one_probe_per_interval(tmp_path: Path) -> None:
    clock = Clock(BEFORE_MIDNIGHT)
    spending = files(tmp_path, clock)
    assert spending.payment_refused(status=402, probe_s=10) is True
    assert spending.payment_refused(status=402, probe_s=10) is False  # already paused
    assert not spending.claim_probe(probe_s=10)
    clock.now += 10
    assert spending.claim_probe(probe_s=10)
    assert not spending.claim_probe(probe_s=10)  # the next one waits another interval
    assert spending.payment_ok() is True
    assert spending.payment() is None and spending.payment_ok() is False


def gate(tmp_path: Path, budgets: Budgets, clock: Clock) -> SpendGate:
    return SpendGate(
        files=files(tmp_path, clock), budgets=budgets, probe_s=5, refresh_s=0.0, clock=lambda: 0.0
    )


def test_gate_holds_the_pool_and_spent_tenants_only(tmp_path: Path) -> None:
    budgets = Budgets(pool=1000, tenants={"sales": 50}, tenant_field="metadata.team")
    g = gate(tmp_path, budgets, Clock(BEFORE_MIDNIGHT))
    assert g.task_hold("sales") is None and g.pool_hold() is None
    g.spent(tokens=60, tenant="sales")
    assert g.task_hold("sales") is Hold.TENANT_BUDGET
    assert g.task_hold("ops") is None and g.task_hold(None) is None
    assert g.pool_hold() is None  # a tenant's budget does not pause the pool
    g.spent(tokens=940, tenant="ops")
    assert g.pool_hold() is Hold.POOL_BUDGET and g.task_hold("ops") is Hold.POOL_BUDGET


def test_gate_sees_its_own_spending_at_once_without_reading_the_file_again(tmp_path: Path) -> None:
    clock = Clock(BEFORE_MIDNIGHT)
    budgets = Budgets(pool=1000, tenants={"sales": 50}, tenant_field="metadata.team")
    g = SpendGate(files=files(tmp_path, clock), budgets=budgets, probe_s=5, refresh_s=3600, clock=lambda: 0.0)
    assert g.pool_hold() is None  # the one read of the refresh interval
    files(tmp_path, clock).add(tokens=950, tenant="ops")  # another worker of the host, unseen so far
    assert g.pool_hold() is None
    reads = 0
    spent = g.files.spent

    def counted() -> Spend:
        nonlocal reads
        reads += 1
        return spent()

    g.files.spent = counted  # type: ignore[method-assign]
    g.spent(tokens=60, tenant="sales")  # the add reads the file once, under its lock
    assert reads == 1
    # What the add wrote (both workers' tokens) is the gate's view now, without another read.
    assert g.pool_hold() is Hold.POOL_BUDGET and g.task_hold("sales") is Hold.POOL_BUDGET
    assert reads == 1


def test_gate_pauses_on_402_and_a_success_resumes(tmp_path: Path) -> None:
    clock = Clock(BEFORE_MIDNIGHT)
    g = gate(tmp_path, Budgets(pool=0, tenants={}, tenant_field=""), clock)
    g.refused(402)
    assert g.pool_hold() is Hold.PAYMENT and g.task_hold(None) is Hold.PAYMENT
    clock.now += 5
    assert g.task_hold(None) is None  # this caller is the probe
    assert g.task_hold(None) is Hold.PAYMENT  # the others still wait
    g.spent(tokens=10, tenant=None)
    assert g.pool_hold() is None and g.task_hold(None) is None


def test_tenant_field_is_a_dotted_path() -> None:
    budgets = Budgets(pool=0, tenants={}, tenant_field="metadata.team")
    assert budgets.tenant_of({"metadata": {"team": "sales"}}) == "sales"
    assert budgets.tenant_of({"metadata": None}) is None
    assert budgets.tenant_of({"metadata": {"team": 5}}) is None
    assert Budgets(pool=0, tenants={}, tenant_field="").tenant_of({"metadata": {"team": "x"}}) is None


def test_tenant_budgets_setting() -> None:
    assert parse_tenant_budgets("sales=200000, ops=50000") == {"sales": 200000, "ops": 50000}
    settings = load_settings({"GIGACHAT_TENANT_BUDGETS": "sales=200000,ops=50000"}, env_file=None)
    assert Budgets.from_settings(settings).tenants == {"sales": 200000, "ops": 50000}
    with pytest.raises(ConfigError, match="GIGACHAT_TENANT_BUDGETS"):
        load_settings({"GIGACHAT_TENANT_BUDGETS": "sales=lots"}, env_file=None)
    with pytest.raises(ConfigError, match="GIGACHAT_BUDGET_TIMEZONE"):
        load_settings({"GIGACHAT_BUDGET_TIMEZONE": "Mars/Olympus"}, env_file=None)


def test_one_balance_reader_per_interval_and_403_means_no_packages(tmp_path: Path) -> None:
    clock = Clock(BEFORE_MIDNIGHT)
    reads: list[str] = []
    stop = threading.Event()

    def watch(name: str, answer: dict[str, float] | None) -> BalanceWatch:
        def read() -> dict[str, float] | None:
            reads.append(name)
            return answer

        return BalanceWatch(files=files(tmp_path, clock), read=read, interval_s=60, stop=stop)

    first, second = watch("a", {"GigaChat": 900.0}), watch("b", None)
    first.poll_once()
    second.poll_once()  # same interval: not its turn
    assert reads == ["a"]
    reading = files(tmp_path, clock).balance()
    assert reading is not None and reading.prepaid and reading.packages == {"GigaChat": 900.0}
    clock.now += 60
    second.poll_once()
    reading = files(tmp_path, clock).balance()
    assert reads == ["a", "b"] and reading is not None and not reading.prepaid


def test_with_no_budget_tokens_reach_the_file_at_the_refresh_not_per_call(tmp_path: Path) -> None:
    """No budget set: the spend file only reports, so calls add up in memory and the consumer loop's
    refresh writes them in one update (tenants' too); flush() writes the rest on the way out."""
    wall = Clock(BEFORE_MIDNIGHT)
    now = Clock(0.0)
    budgets = Budgets(pool=0, tenants={}, tenant_field="metadata.team")
    g = SpendGate(files=files(tmp_path, wall), budgets=budgets, probe_s=5, refresh_s=1.0, clock=now)
    g.pool_hold()  # the refresh of this interval
    g.spent(tokens=10, tenant="sales")
    g.spent(tokens=5, tenant=None)
    assert files(tmp_path, wall).spent().pool == 0  # nothing written per call
    assert g.pool_hold() is None  # within the interval: still nothing written
    assert files(tmp_path, wall).spent().pool == 0
    now.now += 1.0
    assert g.pool_hold() is None
    assert files(tmp_path, wall).spent() == Spend(day="2026-12-01", pool=15, tenants={"sales": 10})
    g.spent(tokens=7, tenant="ops")
    g.flush()
    assert files(tmp_path, wall).spent() == Spend(day="2026-12-01", pool=22, tenants={"sales": 10, "ops": 7})
    g.flush()  # nothing pending: nothing added twice
    assert files(tmp_path, wall).spent().pool == 22


def test_with_a_budget_every_call_is_written_at_once(tmp_path: Path) -> None:
    wall = Clock(BEFORE_MIDNIGHT)
    for budgets in (
        Budgets(pool=1000, tenants={}, tenant_field=""),
        Budgets(pool=0, tenants={"sales": 50}, tenant_field="metadata.team"),
    ):
        directory = tmp_path / str(budgets.pool)
        directory.mkdir()
        g = SpendGate(
            files=files(directory, wall), budgets=budgets, probe_s=5, refresh_s=3600, clock=lambda: 0.0
        )
        g.spent(tokens=10, tenant="sales")
        assert files(directory, wall).spent().pool == 10


def test_the_consumer_thread_never_waits_for_a_task_writing_the_spend_file(tmp_path: Path) -> None:
    """With a budget, a task thread writes the spend file under the host's flock while holding the
    gate; the consumer loop's per-turn check must not queue behind it (a slow disk, another worker
    holding the flock): it answers from the last figures."""
    wall = Clock(BEFORE_MIDNIGHT)
    writing, release = threading.Event(), threading.Event()

    class SlowFiles(SpendingFiles):
        def add_many(self, *, pool: int, tenants: Mapping[str, int]) -> Spend | None:
            writing.set()
            release.wait(300)  # held until the test has its answer (or gave up on it)
            return super().add_many(pool=pool, tenants=tenants)

    slow = SlowFiles(directory=tmp_path, zone=MSK, wall_clock=wall)
    g = SpendGate(files=slow, budgets=Budgets(pool=1000, tenants={}, tenant_field=""), probe_s=5, refresh_s=0)
    task = threading.Thread(target=lambda: g.spent(tokens=10, tenant=None))
    task.start()
    assert writing.wait(60)
    answers: list[Hold | None] = []
    loop = threading.Thread(target=lambda: answers.append(g.pool_hold()))
    loop.start()
    # The writer stays blocked until released below: a pool_hold that waited for it could not answer
    # within any deadline, so a generous one only costs time when the code is wrong.
    loop.join(60)
    blocked = loop.is_alive()
    release.set()
    task.join(60)
    loop.join(60)
    assert not blocked and answers == [None]
    assert g.pool_hold() is None and files(tmp_path, wall).spent().pool == 10


def test_a_spend_file_that_cannot_be_written_keeps_the_tokens_for_the_next_refresh(tmp_path: Path) -> None:
    wall = Clock(BEFORE_MIDNIGHT)
    now = Clock(0.0)
    g = SpendGate(
        files=files(tmp_path, wall),
        budgets=Budgets(pool=0, tenants={}, tenant_field=""),
        probe_s=5,
        clock=now,
    )
    g.spent(tokens=9, tenant=None)
    real_add = g.files.add_many

    def failing(**kwargs: object) -> Spend | None:
        raise OSError(28, "No space left on device")

    g.files.add_many = failing  # type: ignore[method-assign]
    assert g.pool_hold() is None  # the loop's refresh survives it
    g.files.add_many = real_add  # type: ignore[method-assign]
    now.now += 1.0
    g.pool_hold()
    assert files(tmp_path, wall).spent().pool == 9


def test_with_a_budget_an_unwritable_spend_file_keeps_the_tokens_and_the_answer(tmp_path: Path) -> None:
    """The model already answered (and billed): a full disk must not turn that into a failed task."""
    wall = Clock(BEFORE_MIDNIGHT)
    g = SpendGate(
        files=files(tmp_path, wall),
        budgets=Budgets(pool=1000, tenants={}, tenant_field=""),
        probe_s=5,
        refresh_s=3600,
        clock=lambda: 0.0,
    )
    real_add = g.files.add_many

    def failing(**kwargs: object) -> Spend | None:
        raise OSError(28, "No space left on device")

    g.files.add_many = failing  # type: ignore[method-assign]
    g.spent(tokens=7, tenant=None)  # must not raise
    g.files.add_many = real_add  # type: ignore[method-assign]
    g.spent(tokens=3, tenant=None)
    assert files(tmp_path, wall).spent().pool == 10


def test_a_hostile_spending_file_reads_as_nothing_and_never_raises(tmp_path: Path) -> None:
    """Deep nesting (RecursionError), huge integers (OverflowError) and NaN in the limiter directory,
    which the supervisor's loop and every worker read: counted as nothing, never an exception."""
    deep = tmp_path / "deep.json"
    deep.write_bytes(b"[" * 200_000 + b"]" * 200_000)
    assert _read_json(deep) == {}
    assert _float(10**400) == 0.0 and _float(float("nan")) == 0.0 and _float(True) == 0.0
    assert _float(2.5) == 2.5

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from supervisor.limits import (
    HostReading,
    LoadTracker,
    ProcReading,
    ProcStats,
    PsutilMeter,
    Shed,
    Window,
    WorkerAction,
    decide_pool,
    decide_worker,
    shed_cap,
)
from tests.supervisor.fakes import FakeMeter, settings
from tests.waiting import wait_until

S = settings(
    worker_max_concurrent_tasks=8, worker_rss_soft_mb=500, worker_rss_hard_mb=800, limit_disk_free_mb=1024
)


def host(cpu: float = 10, ram: float = 10, disk: float = 50_000) -> HostReading:
    return HostReading(cpu_percent=cpu, ram_percent=ram, disk_free_mb=disk)


def test_below_the_norm_nothing_is_shed() -> None:
    load = decide_pool(S, host(cpu=79, ram=79))
    assert load.shed is Shed.NONE and not load.intake_paused and shed_cap(S, load.shed) == 0


def test_above_the_norm_concurrency_is_halved() -> None:
    load = decide_pool(S, host(cpu=85))
    assert load.shed is Shed.CAP and not load.intake_paused and shed_cap(S, load.shed) == 4
    assert "CPU 85%" in load.reason


def test_above_the_alert_level_intake_pauses() -> None:
    load = decide_pool(S, host(ram=95))
    assert load.shed is Shed.PAUSE and load.intake_paused


def test_low_disk_pauses_intake() -> None:
    load = decide_pool(S, host(disk=500))
    assert load.disk_low and load.intake_paused and load.shed is Shed.NONE


def test_worker_rss_soft_recycles_hard_kills() -> None:
    assert (
        decide_worker(S, ProcReading(cpu_percent=1, rss_mb=400), tasks_done=0, max_tasks=0)[0]
        is WorkerAction.NONE
    )
    assert (
        decide_worker(S, ProcReading(cpu_percent=1, rss_mb=600), tasks_done=0, max_tasks=0)[0]
        is WorkerAction.RECYCLE
    )
    action, why = decide_worker(S, ProcReading(cpu_percent=1, rss_mb=900), tasks_done=0, max_tasks=0)
    assert action is WorkerAction.KILL and "WORKER_RSS_HARD_MB=800" in why


def test_max_tasks_recycles() -> None:
    assert decide_worker(S, None, tasks_done=99, max_tasks=100)[0] is WorkerAction.NONE
    assert decide_worker(S, None, tasks_done=100, max_tasks=100)[0] is WorkerAction.RECYCLE
    assert decide_worker(S, None, tasks_done=10**6, max_tasks=0)[0] is WorkerAction.NONE


def test_window_averages_only_its_span() -> None:
    w = Window(10)
    for t, v in [(0, 100.0), (5, 0.0), (11, 0.0)]:
        w.add(t, v)
    assert w.average() == 0.0 and w.covered() == 6


def test_a_spike_does_not_move_the_windowed_average_much() -> None:
    meter = FakeMeter()
    tracker = LoadTracker(meter=meter, window_s=30)
    for t in range(30):
        meter.host_reading = host(cpu=100 if t == 29 else 10)
        tracker.sample(float(t), [])
    assert tracker.warm()
    assert decide_pool(S, tracker.host()).shed is Shed.NONE


def test_a_sustained_load_sheds_and_falls_back() -> None:
    meter = FakeMeter()
    tracker = LoadTracker(meter=meter, window_s=10)
    meter.host_reading = host(cpu=88)
    for t in range(12):
        tracker.sample(float(t), [])
    assert decide_pool(S, tracker.host()).shed is Shed.CAP
    meter.host_reading = host(cpu=20)
    for t in range(12, 30):
        tracker.sample(float(t), [])
    assert decide_pool(S, tracker.host()).shed is Shed.NONE


def test_tracker_keeps_per_worker_readings_and_forgets_the_dead() -> None:
    meter = FakeMeter(procs={7: ProcReading(cpu_percent=50, rss_mb=300)})
    tracker = LoadTracker(meter=meter, window_s=10)
    tracker.sample(0.0, [7])
    assert tracker.process(7) == ProcReading(cpu_percent=50, rss_mb=300)
    tracker.sample(1.0, [])
    assert tracker.process(7) is None


def test_proc_stats_read_a_real_busy_process_and_forget_a_gone_one() -> None:
    """A real CPU burner read through psutil: about one core after the first read, its RSS, None once gone."""
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    stats = ProcStats()
    try:
        first = stats.read(burner.pid)
        assert first is not None and first.cpu_percent == 0.0  # nothing to compare with yet

        def busy() -> ProcReading | None:
            reading = stats.read(burner.pid)
            return reading if reading is not None and reading.cpu_percent > 50 else None

        # A shared machine may give the burner less than a core for a while: poll, generously.
        reading: ProcReading = wait_until(busy, timeout=60, step=0.5, what="the burner's CPU")
        assert reading.cpu_percent < 110  # of one core, as psutil's cpu_percent
        rss_mb = psutil.Process(burner.pid).memory_info().rss / 2**20  # the loop allocates nothing
        assert reading.rss_mb == pytest.approx(rss_mb, rel=0.1)
    finally:
        burner.kill()
        burner.wait(10)
    assert stats.read(burner.pid) is None


def test_the_meter_reads_each_worker_once_per_sample(tmp_path: Path) -> None:
    meter = PsutilMeter(paths=(str(tmp_path),))
    meter.host([os.getpid()])
    reading = meter.process(os.getpid())
    assert reading is not None and reading is not meter.process(os.getpid())  # handed out once, then read

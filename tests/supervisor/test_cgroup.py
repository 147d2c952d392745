"""cgroup v2 limits read from a fake cgroup folder, and the meter judging the service, not the host."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from supervisor import cgroup
from supervisor.limits import HostReading, PsutilMeter
from tests.waiting import wait_until


def fake_cgroup(root: Path, rel: str, **files: str) -> Path:
    path = root / rel
    path.mkdir(parents=True, exist_ok=True)
    (path / "cgroup.controllers").write_text("cpu memory\n")
    for name, text in files.items():
        (path / name.replace("_", ".", 1)).write_text(text)
    return path


def proc_file(tmp_path: Path, rel: str) -> Path:
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text(f"0::/{rel}\n")
    return proc


def test_a_container_limit_is_found_in_the_own_cgroup(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    fake_cgroup(root, "", cpu_max="max 100000\n", memory_max="max\n")
    fake_cgroup(root, "docker/abc", cpu_max="150000 100000\n", memory_max="536870912\n")
    limits = cgroup.find_limited(root, proc_file(tmp_path, "docker/abc"))
    assert limits is not None
    assert (limits.path, limits.cpu_cores, limits.memory_bytes) == (
        root / "docker/abc",
        1.5,
        512 * 1024 * 1024,
    )


def test_a_limit_set_on_a_parent_slice_is_found(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    fake_cgroup(root, "llm.slice", cpu_max="max 100000\n", memory_max="1073741824\n")
    fake_cgroup(root, "llm.slice/llm-service.service", cpu_max="max 100000\n", memory_max="max\n")
    limits = cgroup.find_limited(root, proc_file(tmp_path, "llm.slice/llm-service.service"))
    assert limits is not None and limits.path == root / "llm.slice"
    assert (limits.cpu_cores, limits.memory_bytes) == (None, 1024**3)


def test_no_limit_or_no_cgroup_v2_means_the_host(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    fake_cgroup(root, "user.slice", cpu_max="max 100000\n", memory_max="max\n")
    assert cgroup.find_limited(root, proc_file(tmp_path, "user.slice")) is None
    v1 = tmp_path / "v1"
    v1.write_text("4:memory:/x\n1:cpu:/\n")
    assert cgroup.find_limited(root, v1) is None
    assert cgroup.find_limited(root, tmp_path / "missing") is None


def test_usage_is_a_percentage_of_the_limits_like_docker_stats(tmp_path: Path) -> None:
    path = fake_cgroup(
        tmp_path / "cg",
        "c",
        cpu_max="200000 100000\n",
        memory_max="1000000\n",
        cpu_stat="usage_usec 5000000\nuser_usec 4000000\n",
        memory_current="600000\n",
        memory_stat="anon 400000\ninactive_file 100000\n",
    )
    usage = cgroup.CgroupUsage(limits=cgroup.read_limits(path), host_cores=8, host_ram_bytes=10**12)
    assert usage.read(100.0).cpu_percent == 0  # nothing to compare with yet
    (path / "cpu.stat").write_text("usage_usec 6000000\n")  # 1 CPU-second in 1 s of a 2-core quota
    reading = usage.read(101.0)
    assert reading.cpu_percent == pytest.approx(50.0)
    assert reading.ram_percent == pytest.approx(50.0)  # (600000 - 100000 inactive file) / 1000000


def test_a_memory_only_limit_judges_cpu_against_the_host_cores(tmp_path: Path) -> None:
    path = fake_cgroup(
        tmp_path / "cg", "c", cpu_max="max 100000\n", memory_max="1000\n", cpu_stat="usage_usec 0\n"
    )
    usage = cgroup.CgroupUsage(limits=cgroup.read_limits(path), host_cores=4, host_ram_bytes=10**9)
    usage.read(0.0)
    (path / "cpu.stat").write_text("usage_usec 2000000\n")
    assert usage.read(1.0).cpu_percent == pytest.approx(50.0)


def test_the_meter_reports_its_source(tmp_path: Path) -> None:
    path = fake_cgroup(
        tmp_path / "cg",
        "c",
        cpu_max="100000 100000\n",
        memory_max="2000000\n",
        cpu_stat="usage_usec 0\n",
        memory_current="500000\n",
    )
    meter = PsutilMeter(paths=(str(tmp_path),), limits=cgroup.read_limits(path))
    reading = meter.host([])
    assert (reading.source, reading.cpu_limit_cores, reading.ram_limit_bytes) == ("cgroup", 1.0, 2_000_000)
    assert reading.ram_percent == pytest.approx(25.0)
    assert PsutilMeter(paths=(str(tmp_path),)).host([]).source == "host"


def test_a_busy_neighbour_does_not_count_as_the_service(tmp_path: Path) -> None:
    """A real CPU burner outside the service: the host's CPU rises, the service's own share does not."""
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        meter = PsutilMeter(paths=(str(tmp_path),))
        one_core = 100 / cgroup.host_cores()

        def busy_host() -> HostReading | None:
            reading = meter.host([])
            return reading if reading.host_cpu_percent >= one_core - 10 else None

        busy: HostReading = wait_until(
            busy_host, timeout=60, step=0.5, what="the host's CPU to show the burner"
        )
        assert busy.source == "host"
        assert busy.cpu_percent < busy.host_cpu_percent / 2, busy
    finally:
        burner.kill()
        burner.wait(10)

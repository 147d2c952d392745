"""ConcurrencyLimiter: AIMD math, sharing between instances and processes, crash safety, overhead."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from llm_service.errors import TransientTaskError
from llm_worker.gigachat.limiter import ConcurrencyLimiter, default_directory, read_cap
from tests.gigachat_client.fakes import FakeClock, make_settings


def limiter(
    directory: Path, max_concurrency: int = 8, clock: FakeClock | None = None, *, cold: bool = False
) -> ConcurrencyLimiter:
    """A limiter in ``directory``; unless ``cold``, past slow start (its cap at ``max_concurrency``)."""
    clock = clock or FakeClock()
    lim = ConcurrencyLimiter(
        directory=directory,
        max_concurrency=max_concurrency,
        increase_after=3,
        probe_after_s=30.0,
        clock=clock,
        sleep=clock.sleep,
    )
    while not cold and lim.cap < max_concurrency:
        lim.on_success()
    return lim


def test_slow_start_from_one_grows_by_one_per_success_up_to_max(tmp_path: Path) -> None:
    lim = limiter(tmp_path, 4, cold=True)
    assert lim.cap == 1  # a new account: one call until it proves more are fine
    caps = []
    for _ in range(5):
        lim.on_success()
        caps.append(lim.cap)
    assert caps == [2, 3, 4, 4, 4]


def test_a_429_caps_one_below_the_calls_in_flight_and_each_refusal_of_the_burst_one_more(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    lim = limiter(tmp_path, 8, clock)
    for _ in range(7):
        lim.on_success()
    assert lim.cap == 8
    permits = [lim.acquire(deadline=clock() + 1) for _ in range(5)]  # the account allows 4

    lim.on_rate_limited(sent_at=permits[4].acquired_at)
    assert lim.cap == 4
    record = read_cap(tmp_path)
    assert record is not None and record.ceiling == 5
    lim.on_rate_limited(sent_at=permits[3].acquired_at)  # same burst: one more refused of the 5
    assert lim.cap == 3
    record = read_cap(tmp_path)
    assert record is not None and record.ceiling == 4
    for permit in permits:
        permit.release()
    clock.advance(0.1)
    late = [lim.acquire(deadline=clock() + 1) for _ in range(2)]
    lim.on_rate_limited(sent_at=late[1].acquired_at)  # sent under the new cap and still refused
    assert lim.cap == 1  # refused with 2 in flight: 1 fits
    for permit in late:
        permit.release()


def test_below_the_ceiling_it_grows_per_n_successes_and_retries_the_ceiling_rarely(tmp_path: Path) -> None:
    clock = FakeClock()
    lim = limiter(tmp_path, 8, clock)
    for _ in range(7):
        lim.on_success()
    permits = [lim.acquire(deadline=clock() + 1) for _ in range(6)]
    lim.on_rate_limited(sent_at=permits[-1].acquired_at)
    for permit in permits:
        permit.release()
    assert lim.cap == 5  # refused at 6
    lim.on_rate_limited()  # a second refusal of the same burst: 4 fit
    assert lim.cap == 4
    clock.advance(1.0)
    for _ in range(30):
        lim.on_success()
    assert lim.cap == 4  # the refused level is not tried again within GIGACHAT_CAP_PROBE_S
    clock.advance(30.0)
    for _ in range(3):
        lim.on_success()
    assert lim.cap == 5  # one probe of the refused level after the interval


def test_a_lower_refusal_lowers_the_ceiling_then_growth_resumes_after_the_interval(tmp_path: Path) -> None:
    clock = FakeClock()
    lim = limiter(tmp_path, 8, clock)
    for _ in range(7):
        lim.on_success()
    permits = [lim.acquire(deadline=clock() + 1) for _ in range(6)]
    lim.on_rate_limited(sent_at=permits[-1].acquired_at)  # ceiling 6, cap 5
    for permit in permits:
        permit.release()
    clock.advance(1.0)
    few = [lim.acquire(deadline=clock() + 1) for _ in range(2)]
    lim.on_rate_limited(sent_at=few[-1].acquired_at)  # e.g. another host on the account: cap 1
    for permit in few:
        permit.release()
    assert lim.cap == 1
    clock.advance(1.0)
    for _ in range(6):
        lim.on_success()
    assert lim.cap == 1  # refused at 2 a moment ago
    clock.advance(30.0)
    caps = []
    for _ in range(6):
        lim.on_success()
        caps.append(lim.cap)
    assert caps == [1, 1, 2, 2, 2, 3]  # then additive increase, one per 3 successes


def test_instances_share_the_cap_and_the_permits(tmp_path: Path) -> None:
    # flock conflicts between separate opens even within one process, so two instances stand in
    # for two worker processes here.
    first, second = limiter(tmp_path, 2), limiter(tmp_path, 2)

    a = first.acquire(deadline=time.monotonic() + 1)
    b = second.acquire(deadline=time.monotonic() + 1)
    assert {a.index, b.index} == {0, 1}
    with pytest.raises(TransientTaskError) as caught:
        first.acquire(deadline=time.monotonic() + 0.05)
    assert caught.value.code == "MODEL_BUSY"

    second.on_rate_limited()
    assert first.cap == 1
    a.release()
    b.release()
    with first.acquire(deadline=time.monotonic() + 1) as permit:
        assert permit.index == 0  # only indices below the cap are handed out


def test_threads_of_one_process_never_share_a_permit(tmp_path: Path) -> None:
    lim = limiter(tmp_path, 2)
    a = lim.acquire(deadline=time.monotonic() + 1)
    b = lim.acquire(deadline=time.monotonic() + 1)

    assert a.index != b.index
    with pytest.raises(TransientTaskError):
        lim.acquire(deadline=time.monotonic() + 0.05)
    a.release()
    a.release()  # idempotent
    assert lim.acquire(deadline=time.monotonic() + 1).index == a.index


_HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from llm_worker.gigachat.limiter import ConcurrencyLimiter
    lim = ConcurrencyLimiter(directory=Path(sys.argv[1]), max_concurrency=1)
    permit = lim.acquire(deadline=time.monotonic() + 5)
    print("held", permit.index, flush=True)
    time.sleep(60)
    """
)


def test_a_permit_held_by_a_killed_process_is_free_again(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True, cwd=Path.cwd()
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().split() == ["held", "0"]
        lim = ConcurrencyLimiter(directory=tmp_path, max_concurrency=1)
        with pytest.raises(TransientTaskError):
            lim.acquire(deadline=time.monotonic() + 0.1)

        os.kill(child.pid, signal.SIGKILL)
        child.wait(5)

        with lim.acquire(deadline=time.monotonic() + 5) as permit:  # polls until the kernel dropped the lock
            assert permit.index == 0
    finally:
        child.kill()
        child.wait(5)


def test_a_forked_child_cannot_take_the_parents_permit(tmp_path: Path) -> None:
    lim = ConcurrencyLimiter(directory=tmp_path, max_concurrency=1)
    held = lim.acquire(deadline=time.monotonic() + 1)
    pid = os.fork()
    if pid == 0:  # child: inherited descriptors must not count as holding the parent's lock
        try:
            lim.acquire(deadline=time.monotonic() + 0.1)
            os._exit(1)
        except TransientTaskError:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    held.release()
    assert os.waitstatus_to_exitcode(status) == 0


def test_directory_is_per_account_and_hides_the_key(tmp_path: Path) -> None:
    one = default_directory(make_settings(tmp_path, gigachat_auth_key="key-one"))
    two = default_directory(make_settings(tmp_path, gigachat_auth_key="key-two"))
    corp = default_directory(
        make_settings(tmp_path, gigachat_auth_key="key-one", gigachat_scope="GIGACHAT_API_CORP")
    )

    assert len({one, two, corp}) == 3
    assert one.parent == tmp_path / "limiter"
    assert "key-one" not in str(one)


def test_default_directory_is_under_the_runtime_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(tmp_path / "run"))

    path = default_directory(make_settings(tmp_path, gigachat_limiter_dir=""))

    assert path.parent == tmp_path / "run" / "llm-service-limiter"


def test_acquire_release_overhead(tmp_path: Path) -> None:
    lim = ConcurrencyLimiter(directory=tmp_path, max_concurrency=8)
    rounds = 5000
    start = time.perf_counter()
    for _ in range(rounds):
        lim.acquire(deadline=time.monotonic() + 1).release()
    per_pair_us = (time.perf_counter() - start) / rounds * 1e6
    start = time.perf_counter()
    for _ in range(rounds):
        lim.on_success()
    per_report_us = (time.perf_counter() - start) / rounds * 1e6

    print(f"\nlimiter: acquire+release {per_pair_us:.1f} us, on_success {per_report_us:.1f} us")
    assert per_pair_us < 500  # generous bound for loaded CI machines; typically ~10 us


def test_after_a_decrease_new_calls_wait_for_the_calls_above_the_cap(tmp_path: Path) -> None:
    clock = FakeClock()
    first, second = limiter(tmp_path, 4, clock), limiter(tmp_path, 4, clock)
    held = [second.acquire(deadline=clock() + 1) for _ in range(3)]  # permits 0, 1, 2
    first.on_rate_limited(sent_at=clock() + 1)  # refused with 3 in flight: cap 2
    assert first.cap == 2
    held[0].release()  # permit 0 is free, but permit 2 (above the cap) is still busy
    with pytest.raises(TransientTaskError):
        first.acquire(deadline=clock() + 0.05)  # sending now would only be refused again
    held[2].release()
    with first.acquire(deadline=clock() + 1) as permit:
        assert permit.index == 0
    held[1].release()

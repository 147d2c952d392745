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
from llm_worker.gigachat.cap import NEVER, CapRecord
from llm_worker.gigachat.limiter import ConcurrencyLimiter, default_directory, read_cap
from tests.gigachat_client.fakes import FakeClock, make_settings


def limiter(
    directory: Path, max_concurrency: int = 8, clock: FakeClock | None = None, *, cold: bool = False
) -> ConcurrencyLimiter:
    """A limiter in ``directory``; unless ``cold``, past slow start (its cap at ``max_concurrency``)."""
    clock = clock or FakeClock()
    if not cold and not (directory / "cap").exists():
        (directory / "cap").write_bytes(CapRecord(max_concurrency, NEVER, 0, clock()).encode())
    return ConcurrencyLimiter(
        directory=directory,
        max_concurrency=max_concurrency,
        increase_after=3,
        probe_after_s=30.0,
        clock=clock,
        sleep=clock.sleep,
    )


def test_slow_start_begins_at_one_and_successes_alone_do_not_grow_it(tmp_path: Path) -> None:
    # Calls that end together would each add one at once, overshooting the account by as many
    # (TCP's slow start): growth in slow start comes from waiting, one step per ADMIT_S.
    lim = limiter(tmp_path, 4, cold=True)
    assert lim.cap == 1  # a new account: one call until it proves more are fine
    for _ in range(5):
        lim.on_success()
    assert lim.cap == 1


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
    clock = FakeClock()  # the limiters' own clock: their deadlines are on it
    first, second = limiter(tmp_path, 2, clock), limiter(tmp_path, 2, clock)

    a = first.acquire(deadline=clock() + 1)
    b = second.acquire(deadline=clock() + 1)
    assert {a.index, b.index} == {0, 1}
    with pytest.raises(TransientTaskError) as caught:
        first.acquire(deadline=clock() + 0.05)
    assert caught.value.code == "MODEL_BUSY"

    second.on_rate_limited()
    assert first.cap == 1
    a.release()
    b.release()
    with first.acquire(deadline=clock() + 1) as permit:
        assert permit.index == 0  # only indices below the cap are handed out


def test_threads_of_one_process_never_share_a_permit(tmp_path: Path) -> None:
    clock = FakeClock()
    lim = limiter(tmp_path, 2, clock)
    a = lim.acquire(deadline=clock() + 1)
    b = lim.acquire(deadline=clock() + 1)

    assert a.index != b.index
    with pytest.raises(TransientTaskError):
        lim.acquire(deadline=clock() + 0.05)
    a.release()
    a.release()  # idempotent
    assert lim.acquire(deadline=clock() + 1).index == a.index


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


def test_systemds_state_directory_comes_before_its_runtime_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The spending books and the learnt cap live there: systemd removes the runtime dir on every stop."""
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(tmp_path / "run"))
    monkeypatch.setenv("STATE_DIRECTORY", f"{tmp_path / 'state'}:{tmp_path / 'other'}")

    path = default_directory(make_settings(tmp_path, gigachat_limiter_dir=""))

    assert path.parent == tmp_path / "state" / "llm-service-limiter"


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


def test_slow_start_opens_up_while_every_place_is_taken_without_any_call_ending(tmp_path: Path) -> None:
    # Long calls: no success for seconds. Waiting with every place taken, the cap grows each
    # ADMIT_S without a 429 (a refusal would have come back by then): by one, then a quarter.
    clock = FakeClock()
    lim = limiter(tmp_path, 64, clock, cold=True)
    held = []
    caps = []
    for _ in range(20):
        held.append(lim.acquire(deadline=clock() + 5))  # the fake sleep moves the clock while it waits
        caps.append(lim.cap)
    assert caps == [1, 2, 3, 4, 5, 6, 7, 8, 10, 10, 12, 12, 15, 15, 15, 18, 18, 18, 22, 22]  # +1, then +1/4
    assert clock.now - 1000.0 < 2.0  # 20 calls in flight after ~1.3 s of the fake clock, no success
    while lim.cap < 64:
        lim.acquire(deadline=clock() + 5)
    assert lim.cap == 64
    record = read_cap(tmp_path)
    assert record is not None and record.ceiling == 0  # still slow start: nothing was refused


def test_no_growth_by_waiting_once_a_429_taught_the_ceiling(tmp_path: Path) -> None:
    clock = FakeClock()
    lim = limiter(tmp_path, 8, clock, cold=True)
    first = lim.acquire(deadline=clock() + 1)
    second = lim.acquire(deadline=clock() + 1)  # waited: the cap grew to 2
    lim.on_rate_limited(sent_at=second.acquired_at)  # refused with 2 in flight
    second.release()
    assert lim.cap == 1
    with pytest.raises(TransientTaskError):
        lim.acquire(deadline=clock() + 60)  # a minute of waiting grows nothing: the limit is known
    assert lim.cap == 1
    first.release()


def test_the_burst_lowering_the_cap_again_waits_again_for_the_calls_above_it(tmp_path: Path) -> None:
    clock = FakeClock()
    first, second = limiter(tmp_path, 8, clock), limiter(tmp_path, 8, clock)
    held = [second.acquire(deadline=clock() + 1) for _ in range(6)]  # permits 0..5
    first.on_rate_limited(sent_at=clock() + 1)  # refused with 6 in flight: cap 5
    held[0].release()
    held[5].release()
    with first.acquire(deadline=clock() + 1) as permit:  # nothing at or above 5 is held any more
        assert permit.index == 0
    first.on_rate_limited()  # one more refusal of the same burst: cap 4, and permit 4 is still busy
    assert first.cap == 4
    with pytest.raises(TransientTaskError):
        first.acquire(deadline=clock() + 0.05)
    held[4].release()
    with first.acquire(deadline=clock() + 1) as permit:
        assert permit.index == 0
    for permit in held[1:4]:
        permit.release()


def test_a_record_from_before_a_reboot_does_not_stop_the_cap_growing(tmp_path: Path) -> None:
    # CLOCK_MONOTONIC restarts at boot: a record kept in a persistent directory has times far ahead.
    clock = FakeClock(start=50.0)
    (tmp_path / "cap").write_bytes(CapRecord(3, 90000.0, 5, 90000.0).encode())
    lim = limiter(tmp_path, 8, clock, cold=True)
    record = read_cap(tmp_path)
    assert record is not None and (record.cap, record.ceiling) == (3, 5)  # what it learnt is kept
    assert record.decreased_at < 50.0 and record.changed_at <= 50.0
    for _ in range(3):
        lim.on_success()
    assert lim.cap == 4  # grows below the ceiling at once (it waited 90000 s of the old clock before)


def test_the_record_of_an_earlier_version_is_read(tmp_path: Path) -> None:
    (tmp_path / "cap").write_bytes(b"4 12.500000 5 4".ljust(63) + b"\n")
    lim = limiter(tmp_path, 8, FakeClock(), cold=True)
    record = read_cap(tmp_path)
    assert lim.cap == 4 and record is not None and record.ceiling == 5


@pytest.mark.parametrize(
    "raw",
    [
        b"4 nan 0 nan 4",  # a NaN time would make every wait test false: growth without limit
        b"4 inf 0 inf 4",
        b"99999999999999999999 1.0 0 1.0 99999999999999999999",  # would not fit the record again
    ],
)
def test_a_damaged_cap_record_never_reads_as_a_time_or_level_to_act_on(raw: bytes) -> None:
    record = CapRecord.parse(raw)
    assert record is None or (record.decreased_at == NEVER and record.changed_at == NEVER)

"""The host-wide call cap alone against an account limit: no Kafka, no S3, only model calls. Prints JSON.

bench/account_limit.py measures the whole service, whose throughput on a busy 2-core machine is often
bounded by the pipeline's CPU rather than by the cap. Here two processes with 16 threads each make
chat calls through GigaChatClient (limiter, breaker, retries: the worker's own call path) against the
emulator admitting ``limit`` concurrent calls with latency L; so what it measures is the cap's own
cost: the ramp up, the hand-off of a freed place, the 429s. Throughput runs from the first call's
start to the last call's end on the emulator::

    python -m bench.account_direct [--limits 1,4,10] [--calls 200] [--latency 0.3] [--plot caps.png]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests

from bench.account_calls import account_use
from bench.account_limit import CHAT, MAX_CONCURRENCY, SLOTS, WORKERS, CapSampler
from bench.account_plot import plot_caps
from devstack.emulator import AUTH_KEY, Emulator
from devstack.procs import free_port
from llm_service.config import Settings
from llm_worker.gigachat import BreakerSet, ConcurrencyLimiter, GigaChatClient


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limits", default="1,4,10", help="emulator concurrency limits to measure")
    parser.add_argument("--calls", type=int, default=200, help="chat calls per limit, all processes")
    parser.add_argument("--latency", type=float, default=0.3, help="emulator latency per call, seconds")
    parser.add_argument("--plot", type=Path, help="write the cap over time of each limit to this PNG")
    parser.add_argument("--child", nargs=3, metavar=("URL", "LIMITER_DIR", "CALLS"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _child(url: str, limiter_dir: str, calls: int) -> int:
    """One "worker process": SLOTS threads sharing one client make ``calls`` chat calls in all."""
    settings = Settings(
        gigachat_auth_url=f"{url}/api/v2/oauth",
        gigachat_api_url=f"{url}/api/v1",
        gigachat_auth_key=AUTH_KEY,
        gigachat_max_concurrency=MAX_CONCURRENCY,
        gigachat_limiter_dir=limiter_dir,
        gigachat_call_attempts=20,
    )
    limiter = ConcurrencyLimiter.from_settings(settings)
    client = GigaChatClient(settings=settings, limiter=limiter, breakers=BreakerSet.from_settings(settings))
    numbers, lock = itertools.count(), threading.Lock()

    def loop() -> None:
        while True:
            with lock:
                n = next(numbers)
            if n >= calls:
                return
            client.chat(
                task_id=f"direct-{os.getpid()}-{n}",
                messages=[{"role": "user", "content": f"Item {n}"}],
                model="GigaChat",
                params={"max_tokens": 16},
                deadline=time.monotonic() + 600,
            )

    threads = [threading.Thread(target=loop) for _ in range(SLOTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    client.close()
    limiter.close()
    return 0


def _measure(url: str, workdir: Path, args: argparse.Namespace, limit: int) -> dict[str, Any]:
    requests.post(f"{url}/_emulator/reset", timeout=10).raise_for_status()
    config = {"latency": args.latency, "latency_per_token": 0, "error_rate": 0, "max_concurrency": limit}
    requests.post(f"{url}/_emulator/config", json=config, timeout=10).raise_for_status()
    limiter_dir = workdir / f"limiter-{limit}"
    sampler = CapSampler(limiter_dir)
    sampler.start()
    argv = [sys.executable, "-m", "bench.account_direct", "--child", url, str(limiter_dir)]
    children = [subprocess.Popen([*argv, str(args.calls // WORKERS)]) for _ in range(WORKERS)]
    codes = [child.wait(timeout=600) for child in children]
    sampler.stop.set()
    calls = requests.get(f"{url}/_emulator/calls", timeout=60).json()["calls"]
    chat = [c for c in calls if c["endpoint"] == CHAT]
    answered = [c for c in chat if c["status"] == 200]
    span = max(c["ts"] for c in answered) - min(c["ts"] - c["duration_ms"] / 1000 for c in answered)
    refused = sum(1 for c in chat if c["status"] == 429)
    return {
        "limit": limit,
        "children_exit": codes,
        "answered": len(answered),
        "elapsed_s": round(span, 2),
        "ratio_to_account_rate": round(len(answered) / span / (limit / args.latency), 3),
        "chat_calls": len(chat),
        "answered_429": refused,
        "share_429": round(refused / max(1, len(chat)), 4),
        **account_use(chat, limit),
        "cap_over_time": [{"t_s": t, "cap": cap, "ceiling": ceiling} for t, cap, ceiling in sampler.samples],
    }


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.child:
        url, limiter_dir, calls = args.child
        return _child(url, limiter_dir, int(calls))
    with tempfile.TemporaryDirectory(prefix="llm-bench-direct-") as tmp:
        quiet = ("--log-level", "WARNING")
        emulator = Emulator(run_dir=Path(tmp) / "emulator", port=free_port(), extra_args=quiet)
        emulator.start()
        try:
            runs = [_measure(emulator.url, Path(tmp), args, int(x)) for x in args.limits.split(",")]
        finally:
            emulator.stop()
    print(json.dumps({"goal": {"ratio": 0.9, "share_429": 0.02}, "runs": runs}, indent=2))
    if args.plot:
        plot_caps(runs, args.plot, "The host-wide call cap alone (2 processes x 16 threads of model calls)")
    return 0 if all(r["answered"] == args.calls and r["children_exit"] == [0] * WORKERS for r in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark: does the GigaChat emulator hold 256 concurrent slow calls without adding latency?

Starts ``python -m gigachat_emulator --latency 1`` on a free loopback port, fetches one token, measures a
concurrency-1 baseline, then fires 256 chat calls at once (one thread and one ``requests.Session`` each,
connections opened before the start barrier) and prints one JSON object:

    {"concurrency": 256, "fixed_latency_s": 1.0, "p50_s": .., "p95_s": .., "max_s": ..,
     "mean_added_pct": .., "p95_added_pct": .., "baseline": {...}}

``*_added_pct`` is the latency above the configured fixed latency, in percent of it. ``server_side`` is the
same computed from the emulator's call log (request line in -> answer out); ``raw_socket_client`` repeats
the burst with bare sockets. Together they show how much of the added latency is the emulator's and how
much is the ``requests`` client's own CPU (both share this machine's cores and one GIL per process).
Bounded: every wait has a deadline and the emulator, started by the local stack's own launcher
(devstack.emulator), is always stopped (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from devstack.emulator import AUTH_KEY, Emulator
from devstack.procs import free_port

BODY: dict[str, Any] = {
    "model": "GigaChat",
    "messages": [{"role": "user", "content": "Summarise the benchmark notes"}],
}
CALL_TIMEOUT_S = 60.0


def fetch_token(base: str) -> str:
    headers = {"Authorization": f"Basic {AUTH_KEY}", "RqUID": str(uuid.uuid4())}
    response = requests.post(
        f"{base}/api/v2/oauth", headers=headers, data={"scope": "GIGACHAT_API_PERS"}, timeout=10
    )
    response.raise_for_status()
    token: str = response.json()["access_token"]
    return token


def chat_request(base: str, token: str) -> requests.PreparedRequest:
    """Build the request up front, so the timed part is sending it and reading the answer."""
    headers = {"Authorization": f"Bearer {token}"}
    return requests.Request("POST", f"{base}/api/v1/chat/completions", headers=headers, json=BODY).prepare()


def timed_call(session: requests.Session, prepared: requests.PreparedRequest) -> float:
    started = time.perf_counter()
    response = session.send(prepared, timeout=CALL_TIMEOUT_S)
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    return elapsed


def concurrent_round(base: str, token: str, concurrency: int) -> list[float]:
    """Run ``concurrency`` calls at once; each thread opens its connection before the barrier."""
    barrier = threading.Barrier(concurrency + 1, timeout=CALL_TIMEOUT_S)
    results: list[float] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker() -> None:
        with requests.Session() as session:
            try:
                session.get(f"{base}/_emulator/health", timeout=CALL_TIMEOUT_S).raise_for_status()
                prepared = chat_request(base, token)
                barrier.wait()
                elapsed = timed_call(session, prepared)
            except (requests.RequestException, threading.BrokenBarrierError) as exc:
                with lock:
                    errors.append(exc)
                return
            with lock:
                results.append(elapsed)

    _burst(worker, concurrency, barrier)
    if errors or len(results) != concurrency:
        raise RuntimeError(f"{len(errors)} of {concurrency} calls failed: {errors[:3]!r}")
    return results


def _burst(worker: Callable[[], None], concurrency: int, barrier: threading.Barrier) -> None:
    """Run ``worker`` in ``concurrency`` threads that ``barrier`` releases together; wait for them."""
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    barrier.wait()
    for thread in threads:
        thread.join(timeout=CALL_TIMEOUT_S)


def raw_socket_round(port: int, token: str, concurrency: int) -> list[float]:
    """The same burst from minimal socket clients: separates the emulator's cost from ``requests``'."""
    body = json.dumps(BODY).encode()
    head = f"POST /api/v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
    payload = f"{head}Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
    barrier = threading.Barrier(concurrency + 1, timeout=CALL_TIMEOUT_S)
    results: list[float] = []

    def worker() -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=CALL_TIMEOUT_S) as sock:
            barrier.wait()
            started = time.perf_counter()
            sock.sendall(payload)
            received = b""
            while not received.endswith(b"}"):  # the JSON answer is the last thing on the connection
                chunk = sock.recv(65536)
                if not chunk:
                    return
                received += chunk
            results.append(time.perf_counter() - started)

    _burst(worker, concurrency, barrier)
    if len(results) != concurrency:
        raise RuntimeError(f"{concurrency - len(results)} raw calls failed")
    return results


def server_durations(base: str) -> list[float]:
    """The emulator's own view (call log ``duration_ms``: request line in -> last byte out) of chat calls."""
    calls = requests.get(f"{base}/_emulator/calls", timeout=10).json()["calls"]
    return [c["duration_ms"] / 1000 for c in calls if c["endpoint"] == "/api/v1/chat/completions"]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[index]


def summary(latencies: list[float], fixed: float) -> dict[str, float]:
    mean = statistics.fmean(latencies)
    p95 = percentile(latencies, 0.95)
    return {
        "p50_s": round(statistics.median(latencies), 4),
        "p95_s": round(p95, 4),
        "max_s": round(max(latencies), 4),
        "mean_s": round(mean, 4),
        "mean_added_pct": round((mean - fixed) / fixed * 100, 2),
        "p95_added_pct": round((p95 - fixed) / fixed * 100, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--baseline-calls", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="emulator-bench-") as workdir:
        port = free_port()
        emulator = Emulator(
            run_dir=Path(workdir),
            port=port,
            extra_args=("--latency", str(args.latency), "--log-level", "WARNING"),
        )
        emulator.start()
        try:
            base = emulator.url
            token = fetch_token(base)
            with requests.Session() as session:
                baseline = [
                    timed_call(session, chat_request(base, token)) for _ in range(args.baseline_calls)
                ]
            requests.post(f"{base}/_emulator/reset", timeout=10).raise_for_status()
            token = fetch_token(base)
            loaded = concurrent_round(base, token, args.concurrency)
            server_side = server_durations(base)
            raw = raw_socket_round(port, token, args.concurrency)
        finally:
            emulator.stop()
    report = {
        "concurrency": args.concurrency,
        "fixed_latency_s": args.latency,
        **summary(loaded, args.latency),
        "baseline": {"concurrency": 1, "calls": args.baseline_calls, **summary(baseline, args.latency)},
        "server_side": summary(server_side, args.latency),
        "raw_socket_client": summary(raw, args.latency),
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The benchmark's output: the goals checked against the figures, the JSON, the plots and the page
``performance.md`` (generated, never edited by hand: ``make bench`` writes it again).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on a server or in CI
import matplotlib.pyplot as plt

from bench import page

SERVICE_1 = "llm-service, 1 worker"
SERVICE_2 = "llm-service, 2 workers"
THREAD_POOL = "thread-pool loop"
ONE_AT_A_TIME = "one-at-a-time loop"
Draw = Callable[[Any, float, dict[str, list[dict[str, Any]]]], None]  # (axes, L, runs by system)
KINDS = ("supervisor", "worker", "peer", "broker", "s3", "emulator")

GOAL_RATIO = 0.95
GOAL_SUPERVISOR_PCT = 1.0
GOAL_SERVICE_MS = 6.0
# 1 % of one core is 10 ms of CPU per second; at the goal's 64 tasks/s that is 0.156 ms per task.
GOAL_SUPERVISOR_MS = 10 * GOAL_SUPERVISOR_PCT / 64


def headline_rows(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The rows at the headline point (L = 1 s, C = 64), or at the only point of a quick run."""
    latency, c = document["settings"]["headline"]
    runs = document["runs"]
    if not any(r["latency_s"] == latency and r["concurrency"] == c for r in runs):
        latency, c = runs[0]["latency_s"], runs[0]["concurrency"]
    return {r["system"]: r for r in runs if r["latency_s"] == latency and r["concurrency"] == c}


def _goal(name: str, value: float, goal: float, *, at_most: bool) -> dict[str, Any]:
    met = value <= goal if at_most else value >= goal
    return {"name": name, "value": round(value, 4), "goal": goal, "at_most": at_most, "met": met}


def goals(document: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's goals at the headline point, each with the measured value and whether it is met."""
    rows = headline_rows(document)
    two = rows[SERVICE_2]
    sup_pct = 100 * two["processes"]["supervisor"]["cpu_s"] / max(two["elapsed_s"], 1e-9)
    found = [
        _goal(
            "supervisor CPU, % of one core (2 workers, status polled every second)",
            sup_pct,
            GOAL_SUPERVISOR_PCT,
            at_most=True,
        ),
        _goal(
            "supervisor CPU per task, ms (2 workers)",
            two["cpu_ms_per_task"]["supervisor"],
            GOAL_SUPERVISOR_MS,
            at_most=True,
        ),
    ]
    for system in (SERVICE_1, SERVICE_2):
        row = rows[system]
        found.append(
            _goal(
                f"whole service CPU per task, ms ({system})",
                row["own_cpu_ms_per_task"],
                GOAL_SERVICE_MS,
                at_most=True,
            )
        )
        found.append(
            _goal(f"throughput / (C/L) ({system})", row["ratio_to_limit"], GOAL_RATIO, at_most=False)
        )
        found.append(
            _goal(
                f"throughput ahead of the thread-pool loop, tasks/s ({system})",
                row["throughput_tasks_per_s"] - rows[THREAD_POOL]["throughput_tasks_per_s"],
                0.0,
                at_most=False,
            )
        )
    return found


def write(document: dict[str, Any], out: Path) -> Path:
    """Write ``out/performance/results.json``, the plots and ``out/performance.md``; returns the page."""
    folder = out / "performance"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(document, indent=2) + "\n")
    plots = {
        "throughput": _plot_throughput(document, folder / "throughput.png"),
        "cpu": _plot_cpu(document, folder / "cpu.png"),
        "latency": _plot_latency(document, folder / "latency.png"),
        "rolling": _plot_rolling(document, folder / "rolling.png"),
    }
    path = out / "performance.md"
    path.write_text(page.render(document, {k: f"performance/{v.name}" for k, v in plots.items()}))
    return path


def _by_latency(document: dict[str, Any]) -> list[float]:
    return sorted({r["latency_s"] for r in document["runs"]})


def _plot_throughput(document: dict[str, Any], path: Path) -> Path:
    def draw(ax: Any, latency: float, curves: dict[str, list[dict[str, Any]]]) -> None:
        for system, rows in curves.items():
            ax.plot(
                [r["concurrency"] for r in rows],
                [r["ratio_to_limit"] for r in rows],
                marker="o",
                label=system,
            )
        ax.axhline(GOAL_RATIO, color="grey", linestyle="--", linewidth=1, label="goal 0.95")
        ax.set_ylim(0, 1.1)
        ax.set_title(f"L = {latency:g} s")
        ax.set_ylabel("throughput / (C / L)")

    return _per_latency(document, path, draw, legend_size=8)


def _per_latency(document: dict[str, Any], path: Path, draw: Draw, *, legend_size: int) -> Path:
    """One panel per latency L, C on the x axis; ``draw`` adds the curves of the systems that scale."""
    latencies = _by_latency(document)
    fig, axes = plt.subplots(1, len(latencies), figsize=(4.5 * len(latencies), 3.6), squeeze=False)
    for ax, latency in zip(axes[0], latencies, strict=True):
        curves = {
            system: sorted(
                (r for r in document["runs"] if r["system"] == system and r["latency_s"] == latency),
                key=lambda r: r["concurrency"],
            )
            for system in (SERVICE_1, SERVICE_2, THREAD_POOL)
        }
        draw(ax, latency, curves)
        _concurrency_axis(ax, document)
        ax.set_xlabel("C, tasks in flight")
    axes[0][0].legend(fontsize=legend_size)
    return _save(fig, path)


def _plot_cpu(document: dict[str, Any], path: Path) -> Path:
    rows = headline_rows(document)
    systems = [s for s in (SERVICE_1, SERVICE_2, THREAD_POOL, ONE_AT_A_TIME) if s in rows]
    fig, ax = plt.subplots(figsize=(7, 3.8))
    bottoms = [0.0] * len(systems)
    for kind in KINDS:
        values = [rows[s]["cpu_ms_per_task"].get(kind, 0.0) for s in systems]
        ax.bar(systems, values, bottom=bottoms, label=kind)
        bottoms = [b + v for b, v in zip(bottoms, values, strict=True)]
    ax.axhline(GOAL_SERVICE_MS, color="grey", linestyle="--", linewidth=1, label="service goal 6 ms")
    row = next(iter(rows.values()))
    ax.set_title(f"CPU per task by process, L = {row['latency_s']:g} s, C = {row['concurrency']}")
    ax.set_ylabel("ms of CPU per task")
    ax.tick_params(axis="x", labelsize=8)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _plot_latency(document: dict[str, Any], path: Path) -> Path:
    def draw(ax: Any, latency: float, curves: dict[str, list[dict[str, Any]]]) -> None:
        for system, rows in curves.items():
            cs = [r["concurrency"] for r in rows]
            line = ax.plot(cs, [r["latency_p50_s"] for r in rows], marker="o", label=f"{system} p50")
            ax.plot(
                cs, [r["latency_p99_s"] for r in rows], marker="^", linestyle=":", color=line[0].get_color()
            )
        ax.axhline(latency, color="grey", linestyle="--", linewidth=1, label="L")
        ax.set_title(f"task latency (p50 solid, p99 dotted), L = {latency:g} s")
        ax.set_ylabel("RECEIVED -> final, s")

    return _per_latency(document, path, draw, legend_size=7)


def _plot_rolling(document: dict[str, Any], path: Path) -> Path:
    roll = document["rolling"]
    fig, ax = plt.subplots(figsize=(7, 3.4))
    timeline = roll["timeline_tasks_per_s"]
    ax.step(range(len(timeline)), timeline, where="post", label="COMPLETED per second")
    ax.axvline(roll["hup_at_s"], color="red", linestyle="--", label="SIGHUP")
    ax.axvline(roll["replaced_at_s"], color="green", linestyle="--", label="both workers replaced")
    ax.axhline(roll["limit_tasks_per_s"], color="grey", linewidth=1, label="C / L")
    ax.set_title(f"rolling replace, 2 workers, L = {roll['latency_s']:g} s, C = {roll['concurrency']}")
    ax.set_xlabel("s")
    ax.set_ylabel("tasks/s")
    ax.legend(fontsize=8)
    return _save(fig, path)


def _concurrency_axis(ax: Any, document: dict[str, Any]) -> None:
    """C on a log scale, ticked at the values measured (8, 64, 256) rather than at powers of two."""
    values = sorted({r["concurrency"] for r in document["runs"] if r["system"] != ONE_AT_A_TIME})
    ax.set_xscale("log", base=2)
    ax.set_xticks(values, [str(v) for v in values])
    ax.minorticks_off()


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.report [docs]``: draw the plots and the page again from the saved JSON."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("out", type=Path, nargs="?", default=Path("docs"))
    args = parser.parse_args(argv)
    document = json.loads((args.out / "performance" / "results.json").read_text())
    document["goals"] = goals(document)
    print(write(document, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The cap over time of bench/account_limit.py and bench/account_direct.py runs, one panel per limit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on a server or in CI
import matplotlib.pyplot as plt


def plot_caps(runs: list[dict[str, Any]], path: Path, title: str) -> Path:
    """A step plot of ``cap_over_time`` (cap and learnt ceiling) against each run's account limit."""
    figure, axes = plt.subplots(1, len(runs), figsize=(4.5 * len(runs), 3.4), squeeze=False)
    for ax, run in zip(axes[0], runs, strict=True):
        samples = run["cap_over_time"]
        times = [s["t_s"] for s in samples]
        ax.step(times, [s["cap"] for s in samples], where="post", label="cap")
        ceilings = [float(s["ceiling"]) if s["ceiling"] else float("nan") for s in samples]
        ax.step(times, ceilings, where="post", linestyle=":", label="ceiling (refused level)")
        ax.axhline(run["limit"], color="grey", linewidth=0.8, label="account limit")
        ax.set_title(
            f"limit {run['limit']}: {run['ratio_to_account_rate']} of the rate, {run['share_429']:.1%} 429"
        )
        ax.set_xlim(left=0)
        ax.set_ylim(bottom=0)
        ax.set_xlabel("seconds")
        ax.set_ylabel("calls")
        ax.legend(fontsize="small")
    figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path

"""PNG plots of the backfill scaling curves from ``bench/results/backfill_scale.json``.

Writes ``backfill_seconds.png`` (input rows vs seconds, log-log, with the linear reference through
the smallest size) and ``backfill_cost_per_row.png`` (microseconds per input row, and the peak
driver RSS) next to the JSON. The pandas predecessor is drawn where it finished and marked "did
not finish" where it hit its cap.

    .venv/bin/python bench/plot.py [--json bench/results/backfill_scale.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after matplotlib.use: the backend is chosen first

RESULTS = Path(__file__).resolve().parent / "results"


def series(sizes: list[dict[str, Any]], who: str) -> tuple[list[int], list[float], list[float]]:
    """Rows, seconds and peak RSS (MB) of the runs of ``who`` that finished."""
    done = [s for s in sizes if who in s and s[who]["status"] == "ok"]
    return (
        [s["rows"] for s in done],
        [s[who]["result"]["seconds"] for s in done],
        [s[who]["peaks"]["total_mb"] for s in done],
    )


def unfinished(sizes: list[dict[str, Any]], who: str) -> list[int]:
    return [s["rows"] for s in sizes if who in s and s[who]["status"] != "ok"]


def plot_seconds(report: dict[str, Any], out: Path) -> None:
    sizes = report["sizes"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for who, label, style in (("ours", "spark_features (Spark, chunked)", "o-"), ("seed", "pandas predecessor", "s--")):
        rows, seconds, _ = series(sizes, who)
        if rows:
            ax.plot(rows, seconds, style, label=label)
        for x in unfinished(sizes, who):
            ax.axvline(x, color="grey", linestyle=":")
            ax.annotate(f"{label}:\ndid not finish", (x, ax.get_ylim()[1]), fontsize=8, ha="right", va="top")
    rows, seconds, _ = series(sizes, "ours")
    if rows:
        ax.plot(rows, [seconds[0] * r / rows[0] for r in rows], ":", color="black", label="linear from smallest")
    ax.set(xscale="log", yscale="log", xlabel="input 1-minute bar rows", ylabel="backfill seconds")
    ax.set_title(f"Backfill time, {report['symbols']} symbols, {report['chunk']} chunks, 2 cores")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def plot_cost(report: dict[str, Any], out: Path) -> None:
    sizes = report["sizes"]
    fig, (cost_ax, rss_ax) = plt.subplots(1, 2, figsize=(11, 4.5))
    for who, label, style in (("ours", "spark_features", "o-"), ("seed", "pandas predecessor", "s--")):
        rows, seconds, rss = series(sizes, who)
        if rows:
            cost_ax.plot(rows, [s / r * 1e6 for s, r in zip(seconds, rows, strict=True)], style, label=label)
            rss_ax.plot(rows, rss, style, label=label)
    cost_ax.set(xscale="log", xlabel="input bar rows", ylabel="microseconds per input row", ylim=(0, None))
    cost_ax.set_title("Cost per row (flat = linear scaling)")
    rss_ax.set(xscale="log", xlabel="input bar rows", ylabel="peak RSS, MB (driver Python + JVM)", ylim=(0, None))
    rss_ax.set_title("Peak driver memory")
    for ax in (cost_ax, rss_ax):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=RESULTS / "backfill_scale.json")
    args = parser.parse_args()
    report = json.loads(args.json.read_text())
    seconds, cost = args.json.parent / "backfill_seconds.png", args.json.parent / "backfill_cost_per_row.png"
    plot_seconds(report, seconds)
    plot_cost(report, cost)
    print(f"wrote {seconds} and {cost}")


if __name__ == "__main__":
    main()

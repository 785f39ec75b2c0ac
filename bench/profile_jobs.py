"""Where a Spark application spent its time: job wall time summed by label, from its event log.

A job's label is its description (the engine labels validation, duplicate checks and writes with
``session.job_description``), else its call site; view names and Delta versions are replaced by
``VIEW`` and ``N``, so the table sums each step over views and chunks. Run the application with
``spark.eventLog.enabled=true``, ``spark.eventLog.dir=file:///DIR`` and
``spark.eventLog.compress=false``, then:

    .venv/bin/python bench/profile_jobs.py DIR [--since EPOCH_MS] [--top 20]
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path

VIEW_VERSION = re.compile(r"\b[a-z][a-z0-9_]* v\d+\.\d+\.\d+\b")
DELTA_VERSION = re.compile(r"(version:?) \d+")


def step(label: str) -> str:
    return DELTA_VERSION.sub(r"\1 N", VIEW_VERSION.sub("VIEW", label))


def job_seconds(event_dir: Path, since_ms: int = 0) -> list[tuple[str, int, float]]:
    """(label, jobs, seconds) of the jobs submitted at or after ``since_ms``, largest first."""
    started: dict[int, tuple[int, str]] = {}
    totals: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    for path in sorted(p for p in event_dir.rglob("*") if p.is_file() and not p.name.startswith(".")):
        for line in path.open():
            event = json.loads(line)
            if event["Event"] == "SparkListenerJobStart":
                props = event.get("Properties") or {}
                label = step(props.get("spark.job.description") or props.get("callSite.short") or "?")
                started[event["Job ID"]] = (event["Submission Time"], label)
            elif event["Event"] == "SparkListenerJobEnd" and event["Job ID"] in started:
                submitted, label = started[event["Job ID"]]
                if submitted >= since_ms:
                    totals[label][0] += 1
                    totals[label][1] += (event["Completion Time"] - submitted) / 1000
    return sorted(((label, int(n), s) for label, (n, s) in totals.items()), key=lambda row: -row[2])


def table(rows: list[tuple[str, int, float]], top: int = 20) -> str:
    total = sum(s for _, _, s in rows) or 1.0
    lines = ["| job label | jobs | seconds | share |", "|---|---|---|---|"]
    lines += [f"| {label} | {n} | {s:.1f} | {s / total:.0%} |" for label, n, s in rows[:top]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("event_dir", type=Path)
    parser.add_argument("--since", type=int, default=0, help="only jobs submitted at or after this epoch ms")
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args()
    print(table(job_seconds(args.event_dir, args.since), args.top))


if __name__ == "__main__":
    main()

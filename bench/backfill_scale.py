"""Backfill scaling: rows per second and peak driver memory from 1M to 50M bar rows.

The product's own path: ``generate_sample_bars`` writes ``--symbols`` symbols x N days of 1-minute
bars once (the largest size; smaller sizes backfill a prefix of it), then for each size a fresh
process runs ``spark_features.pipelines.run_backfill`` (what the ``backfill`` job calls) over
``[start, start + N days)``: all 4 example views (7 features) on 1m/5m/1h, ``--chunk`` chunks, Delta
tables in a fresh offline root, ``local[2]``. A small warm-up backfill runs first in each process
(untimed). A sampler thread in this process reads the RSS of the worker (the Python driver) and of
its children (the local-mode JVM) with psutil every 0.2 s.

Side by side, the pandas predecessor's technique (``bench/seed_pandas.py``: pandas in the driver,
per-day Parquet files) runs on the same bars, in its own process, under a memory cap and a time cap;
beyond them it is reported as "did not finish". At the smallest size both outputs are compared row
for row. Raw results go to ``--json`` (read by ``bench/plot.py``). Last line:
``RESULT backfill_cost_ratio_<largest>_<smallest>=<cost per row ratio> peak_driver_rss_mb=<n>``.

    .venv/bin/python bench/backfill_scale.py [--sizes 1m,10m,50m] [--quick] [--chunk 7d] [--profile]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psutil

BENCH = Path(__file__).resolve().parent
D0 = datetime(2024, 1, 1, tzinfo=UTC)
MINUTES_PER_DAY = 1440
VIEW_VERSION = "1.0.0"


@dataclass(frozen=True)
class Size:
    label: str
    days: int
    rows: int


def parse_sizes(text: str, symbols: int) -> list[Size]:
    """``1m,10m,50m`` -> sizes of whole days of 1-minute bars, at least the asked number of rows."""
    sizes = []
    for label in text.split(","):
        scale = {"k": 1_000, "m": 1_000_000}[label[-1].lower()]
        days = math.ceil(float(label[:-1]) * scale / (symbols * MINUTES_PER_DAY))
        sizes.append(Size(label, days, days * symbols * MINUTES_PER_DAY))
    return sorted(sizes, key=lambda s: s.rows)


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# ---------------------------------------------------------------- memory sampling (parent side)


@dataclass
class Peaks:
    driver_mb: float = 0.0  # the worker's own Python process
    jvm_mb: float = 0.0  # java child processes (the local-mode driver JVM)
    total_mb: float = 0.0  # driver + JVM + Python workers at one instant
    cpu_seconds: float = 0.0  # user + system CPU of the tree (load-independent; /2 ~ idle 2-core wall time)
    samples: int = 0


class RssSampler(threading.Thread):
    """Samples the RSS of a process tree every ``interval`` s; kills it above ``cap_mb``."""

    def __init__(self, pid: int, cap_mb: float | None, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.root, self.cap_mb, self.interval = psutil.Process(pid), cap_mb, interval
        self.peaks, self.capped = Peaks(), False
        self._done = threading.Event()

    def sample(self) -> None:
        try:
            driver = self.root.memory_info().rss / 2**20
            cpu = sum(self.root.cpu_times()[:2])
            children = self.root.children(recursive=True)
        except psutil.Error:
            return
        jvm = other = 0.0
        names = {}
        for child in children:
            try:
                names[child.pid] = (child.name(), child.ppid(), child.memory_info().rss / 2**20, child.cpu_times())
            except psutil.Error:
                continue
        for name, parent, rss, times in names.values():
            # a helper the JVM forks (Hadoop's chmod, ...) briefly shows the JVM's pages: skip it
            forked = names.get(parent, ("",))[0] == "java"
            if name == "java" and not forked:
                jvm += rss
                cpu += times.user + times.system
            elif name.startswith("python"):  # PySpark workers, if any
                other += rss
        p = self.peaks
        p.driver_mb, p.jvm_mb = max(p.driver_mb, driver), max(p.jvm_mb, jvm)
        p.total_mb, p.samples = max(p.total_mb, driver + jvm + other), p.samples + 1
        p.cpu_seconds = max(p.cpu_seconds, cpu)
        if self.cap_mb is not None and driver + jvm + other > self.cap_mb and not self.capped:
            self.capped = True
            for proc in [*children, self.root]:
                try:
                    proc.kill()
                except psutil.Error:
                    continue

    def run(self) -> None:
        while not self._done.is_set():
            self.sample()
            self._done.wait(self.interval)

    def stop(self) -> Peaks:
        self._done.set()
        self.join()
        return self.peaks


@dataclass
class Outcome:
    status: str  # "ok", "memory cap", "time cap" or "failed"
    result: dict[str, Any] = field(default_factory=dict)
    peaks: Peaks = field(default_factory=Peaks)
    wall_seconds: float = 0.0
    load_before: str = ""
    load_after: str = ""


def run_worker(command: list[str], cap_mb: float | None, timeout: float | None) -> Outcome:
    """Run ``command`` (which prints a JSON result as its last stdout line) under the sampler."""
    before, began = load(), time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, start_new_session=True)
    sampler = RssSampler(proc.pid, cap_mb)
    sampler.start()
    try:
        stdout, _ = proc.communicate(timeout=timeout)
        status = "memory cap" if sampler.capped else "ok" if proc.returncode == 0 else "failed"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        stdout, _ = proc.communicate()
        status = "time cap"
    peaks = sampler.stop()
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    result = json.loads(lines[-1]) if status == "ok" and lines else {}
    return Outcome(status, result, peaks, round(time.perf_counter() - began, 1), before, load())


# ---------------------------------------------------------------- Spark worker (child side)


def spark_config(workdir: Path, root: str, args: argparse.Namespace) -> Any:
    from spark_features.config import Config, OfflineConfig, SourcesConfig, SparkConfig

    extra = {"spark.driver.memory": args.driver_memory} if args.driver_memory else {}
    if args.profile:  # a Spark event log, for the job-time table (bench/profile_jobs.py)
        events = Path(root).parent / "events"
        events.mkdir(parents=True, exist_ok=True)
        extra |= {"spark.eventLog.enabled": "true", "spark.eventLog.dir": events.as_uri(),
                  "spark.eventLog.compress": "false"}  # fmt: skip
    return Config(
        spark=SparkConfig(master="local[2]", shuffle_partitions=args.shuffle_partitions, extra=extra),
        offline=OfflineConfig(root=root),
        sources=SourcesConfig(bars=str(workdir / "bars")),
        project_root=workdir,
    )


def worker_generate(args: argparse.Namespace) -> dict[str, Any]:
    from spark_features.pipelines import generate_sample_bars
    from spark_features.session import build_session

    config = spark_config(args.workdir, str(args.workdir / "unused"), args)
    spark = build_session(config)
    began = time.perf_counter()
    generate_sample_bars(spark, config, args.symbols, D0, D0 + timedelta(days=args.days))
    return {"seconds": round(time.perf_counter() - began, 2)}


def tree_cpu_seconds() -> float:
    """User + system CPU of this process and its JVM so far."""
    me = psutil.Process()
    jvms = [c for c in me.children(recursive=True) if c.name() == "java"]
    return sum(sum(p.cpu_times()[:2]) for p in [me, *jvms])


def job_count(spark: Any) -> int:
    tracker = spark.sparkContext.statusTracker()
    return len(tracker.getJobIdsForGroup(None))


def worker_backfill(args: argparse.Namespace) -> dict[str, Any]:
    import cProfile
    import pstats

    from spark_features.pipelines import run_backfill
    from spark_features.session import build_session

    config = spark_config(args.workdir, args.root, args)
    spark = build_session(config)
    warm = spark_config(args.workdir, str(Path(args.root) / "_warmup"), args)
    run_backfill(spark, warm, D0, D0 + timedelta(days=1), chunk="1d")  # JIT and Python imports, untimed
    jobs_before = job_count(spark)
    profiler = cProfile.Profile() if args.profile else None
    since_ms = int(time.time() * 1000)
    began, cpu_began = time.perf_counter(), tree_cpu_seconds()
    if profiler:
        profiler.enable()
    summary = run_backfill(spark, config, D0, D0 + timedelta(days=args.days), chunk=args.chunk)
    if profiler:
        profiler.disable()
    seconds, cpu_seconds = time.perf_counter() - began, tree_cpu_seconds() - cpu_began
    jobs = job_count(spark) - jobs_before
    if profiler:
        profiler.dump_stats(str(Path(args.root).parent / f"profile_{args.days}d.pstats"))
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(r"spark_features|delta", 40)
        spark.stop()  # flushes the event log
        from profile_jobs import job_seconds, table

        print(table(job_seconds(Path(args.root).parent / "events", since_ms)), file=sys.stderr)
    return {
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu_seconds, 1),
        "chunk_seconds": summary["seconds"],
        "chunks": summary["chunks"],
        "rows_written": summary["rows_written"],
        "spark_jobs": jobs,
    }


# ---------------------------------------------------------------- comparison (parent side)


def compare_outputs(ours_root: Path, seed_root: Path) -> dict[str, float]:
    """Max absolute difference per view between the engine's Delta tables and the seed's files;
    raises when rows differ or a value differs beyond float noise."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from seed_pandas import IDENTITY, VIEWS, active_files, read_views

    seed = read_views(seed_root)
    diffs = {}
    for view, columns in VIEWS.items():
        table = ours_root / view / f"v{VIEW_VERSION}"
        parts = [pq.read_table(table / f, columns=[*IDENTITY, *columns]) for f in active_files(table)]
        ours = pa.concat_tables(parts).to_pandas().sort_values(IDENTITY, ignore_index=True)
        theirs = seed[view]
        if len(ours) != len(theirs) or not ours[IDENTITY].equals(theirs[IDENTITY]):
            raise SystemExit(f"{view}: rows differ (ours {len(ours)}, seed {len(theirs)})")
        a, b = ours[columns].to_numpy(dtype=float), theirs[columns].to_numpy(dtype=float)
        if not np.allclose(a, b, rtol=1e-6, atol=1e-9, equal_nan=True):
            raise SystemExit(f"{view}: values differ; max abs diff {np.nanmax(np.abs(a - b))}")
        diffs[view] = float(np.nanmax(np.abs(a - b))) if len(a) else 0.0
    return diffs


# ---------------------------------------------------------------- orchestration (parent side)


def worker_command(args: argparse.Namespace, mode: str, days: int, root: Path | None = None) -> list[str]:
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", mode, "--days", str(days),
               "--workdir", str(args.workdir), "--symbols", str(args.symbols), "--chunk", args.chunk,
               "--shuffle-partitions", str(args.shuffle_partitions)]  # fmt: skip
    if args.driver_memory:
        command += ["--driver-memory", args.driver_memory]
    if root is not None:
        command += ["--root", str(root)]
    if args.profile:
        command.append("--profile")
    return command


def seed_command(args: argparse.Namespace, size: Size, out: Path) -> list[str]:
    end = D0 + timedelta(days=size.days)
    return [sys.executable, str(BENCH / "seed_pandas.py"), "--bars", str(args.workdir / "bars"), "--out", str(out),
            "--start", D0.date().isoformat(), "--end", end.date().isoformat()]  # fmt: skip


def describe(outcome: Outcome) -> dict[str, Any]:
    return {**asdict(outcome), "peaks": asdict(outcome.peaks)}


def run_size(args: argparse.Namespace, size: Size, check: bool) -> dict[str, Any]:
    ours_root, seed_root = args.workdir / f"offline_{size.label}", args.workdir / f"seed_{size.label}"
    ours = run_worker(worker_command(args, "backfill", size.days, ours_root), None, None)
    if ours.status != "ok":
        raise SystemExit(f"backfill of {size.label} failed ({ours.status}); see the worker's output above")
    row: dict[str, Any] = {**asdict(size), "ours": describe(ours)}
    secs = ours.result["seconds"]
    print(f"{size.label}: ours {secs:.1f}s ({size.rows / secs:,.0f} rows/s, {secs / size.rows * 1e6:.2f} us/row), "
          f"cpu {ours.result['cpu_seconds']:.0f}s, peak driver {ours.peaks.total_mb:.0f} MB "
          f"(python {ours.peaks.driver_mb:.0f} + jvm {ours.peaks.jvm_mb:.0f}), load {ours.load_before} -> "
          f"{ours.load_after}", flush=True)  # fmt: skip
    if not args.no_seed:
        seed = run_worker(seed_command(args, size, seed_root), args.seed_cap_mb, args.seed_timeout)
        row["seed"] = describe(seed)
        if seed.status == "ok":
            s = seed.result["seconds"]
            print(f"{size.label}: seed {s:.1f}s ({size.rows / s:,.0f} rows/s), peak {seed.peaks.total_mb:.0f} MB, "
                  f"load {seed.load_before} -> {seed.load_after}", flush=True)  # fmt: skip
            if check:
                row["max_abs_diff"] = compare_outputs(ours_root, seed_root)
                print(f"{size.label}: outputs equal (max abs diff per view {row['max_abs_diff']})", flush=True)
        else:
            print(f"{size.label}: seed did not finish ({seed.status}, cap {args.seed_cap_mb:.0f} MB / "
                  f"{args.seed_timeout:.0f} s) after {seed.wall_seconds:.0f}s", flush=True)  # fmt: skip
    if not args.keep_data:
        shutil.rmtree(ours_root, ignore_errors=True)
        shutil.rmtree(seed_root, ignore_errors=True)
    return row


def print_table(rows: list[dict[str, Any]]) -> None:
    print("| input rows | days | ours s | ours rows/s | ours us/row | ours cpu s | ours MB | seed s | seed MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        o, s = r["ours"], r.get("seed")
        secs = o["result"]["seconds"]
        if s is None:
            seed_s, seed_mb = "-", "-"
        elif s["status"] == "ok":
            seed_s, seed_mb = f"{s['result']['seconds']:.1f}", f"{s['peaks']['total_mb']:.0f}"
        else:
            seed_s, seed_mb = f"did not finish ({s['status']})", f">{s['peaks']['total_mb']:.0f}"
        cpu, mb = o["result"]["cpu_seconds"], o["peaks"]["total_mb"]
        print(f"| {r['rows']:,} | {r['days']} | {secs:.1f} | {r['rows'] / secs:,.0f} | {secs / r['rows'] * 1e6:.2f} "
              f"| {cpu:.0f} | {mb:.0f} | {seed_s} | {seed_mb} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1m,10m,50m", help="input bar rows, e.g. 1m,10m,50m")
    parser.add_argument("--quick", action="store_true", help="sizes 0.3m,1m (a smoke run)")
    parser.add_argument("--symbols", type=int, default=100)
    parser.add_argument("--chunk", default="7d", choices=["1d", "7d", "30d"])
    parser.add_argument("--shuffle-partitions", type=int, default=8)
    parser.add_argument("--driver-memory", default="", help="spark.driver.memory (default: Spark's 1g)")
    parser.add_argument("--seed-cap-mb", type=float, default=6144.0, help="memory cap of the pandas predecessor")
    parser.add_argument("--seed-timeout", type=float, default=900.0, help="time cap of the pandas predecessor")
    parser.add_argument("--no-seed", action="store_true", help="skip the pandas predecessor")
    parser.add_argument("--profile", action="store_true", help="cProfile the driver side of each backfill")
    parser.add_argument("--keep-data", action="store_true")
    parser.add_argument("--largest-first", action="store_true", help="run the largest size first")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=BENCH / "results" / "backfill_scale.json")
    parser.add_argument("--worker", choices=["generate", "backfill"], help=argparse.SUPPRESS)
    parser.add_argument("--days", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        result = worker_generate(args) if args.worker == "generate" else worker_backfill(args)
        print(json.dumps(result), flush=True)
        return
    sizes = parse_sizes("0.3m,1m" if args.quick else args.sizes, args.symbols)
    own_workdir = args.workdir is None
    args.workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_backfill_"))
    print(f"sizes {[(s.label, s.days, s.rows) for s in sizes]}, {args.symbols} symbols, chunk {args.chunk}, "
          f"load {load()}, {psutil.cpu_count()} cpus", flush=True)  # fmt: skip
    try:
        gen = run_worker(worker_command(args, "generate", sizes[-1].days), None, None)
        if gen.status != "ok":
            raise SystemExit(f"generating bars failed ({gen.status})")
        print(f"generated {sizes[-1].rows:,} bars in {gen.result['seconds']:.1f}s", flush=True)
        order = sizes[::-1] if args.largest_first else sizes
        rows = sorted((run_size(args, size, check=size == sizes[0]) for size in order), key=lambda r: r["rows"])
    finally:
        if own_workdir and not args.keep_data:
            shutil.rmtree(args.workdir, ignore_errors=True)
    print_table(rows)
    small, large = rows[0], rows[-1]
    cost = [r["ours"]["result"]["seconds"] / r["rows"] for r in (small, large)]
    cpu_cost = [r["ours"]["result"]["cpu_seconds"] / r["rows"] for r in (small, large)]
    peak = max(r["ours"]["peaks"]["total_mb"] for r in rows)
    report = {
        "command": " ".join(sys.argv),
        "machine": {"cpus": psutil.cpu_count(), "memory_mb": round(psutil.virtual_memory().total / 2**20)},
        "symbols": args.symbols,
        "chunk": args.chunk,
        "generate": describe(gen),
        "sizes": rows,
        "cost_ratio": cost[1] / cost[0],
        "cpu_cost_ratio": cpu_cost[1] / cpu_cost[0],
        "finished_at": datetime.now(UTC).isoformat(),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1))
    print(f"RESULT backfill_cost_ratio_{large['label']}_{small['label']}={cost[1] / cost[0]:.2f} "
          f"peak_driver_rss_mb={peak:.0f} cpu_cost_ratio={cpu_cost[1] / cpu_cost[0]:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()

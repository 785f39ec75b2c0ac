"""Build and run the ``spark-submit`` command for ``jobs/JOB.py`` (used by ``./spark-submit.sh``).

``./spark-submit.sh [--master M] [--deploy-mode D] [--conf KEY=VALUE ...] [--conf FILE.yaml]
[--dry-run] JOB [JOB ARGS]``: ``--conf`` with ``=`` is a Spark setting passed through; without one it
selects the conf file (as does ``SPARK_FEATURES_CONF``). The package is zipped and shipped to the
executors with ``--py-files``; the jars come from ``--packages`` (resolved from Maven Central).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path

import pyspark

from spark_features.config import PROJECT_ROOT, conf_path, load_config
from spark_features.errors import ConfigError
from spark_features.session import spark_conf

PACKAGE_DIR = Path(__file__).resolve().parent


def package_zip(target: Path) -> Path:
    """Zip ``spark_features`` for ``--py-files`` (rebuilt on every submit: it takes milliseconds)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(PACKAGE_DIR.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                archive.write(path, path.relative_to(PACKAGE_DIR.parent))
    return target


def spark_submit_binary() -> str:
    return str(Path(pyspark.__file__).parent / "bin" / "spark-submit")


def build_command(argv: Sequence[str]) -> tuple[list[str], bool]:
    """The spark-submit command line for ``argv``, and whether this is a dry run."""
    args = list(argv)
    master = deploy_mode = conf_file = None
    spark_pairs: list[str] = []
    dry_run = False
    while args and args[0].startswith("--"):
        flag = args.pop(0)
        if flag == "--dry-run":
            dry_run = True
            continue
        if not args:
            raise ConfigError(f"spark-submit.sh: {flag} needs a value")
        value = args.pop(0)
        if flag == "--master":
            master = value
        elif flag == "--deploy-mode":
            deploy_mode = value
        elif flag == "--conf" and "=" in value:
            spark_pairs.append(value)
        elif flag == "--conf":
            conf_file = value
        else:
            raise ConfigError(f"spark-submit.sh: unknown option {flag}")
    if not args:
        raise ConfigError("spark-submit.sh: which job? one of " + ", ".join(sorted(available_jobs())))
    job, job_args = args[0], args[1:]
    script = PROJECT_ROOT / "jobs" / f"{job.replace('-', '_')}.py"
    if not script.is_file():
        raise ConfigError(f"spark-submit.sh: no job {job!r}; available: {', '.join(sorted(available_jobs()))}")
    config_file = conf_path(conf_file)
    config = load_config(config_file)
    conf = spark_conf(config)
    packages = conf.pop("spark.jars.packages")
    conf.pop("spark.app.name")
    if master and not master.startswith("local"):
        conf.pop("spark.driver.bindAddress", None)
    command = [
        spark_submit_binary(),
        "--master",
        master or config.spark.master,
        "--name",
        f"spark_features:{job}",
        "--packages",
        packages,
        "--py-files",
        str(package_zip(PROJECT_ROOT / "build" / "spark_features.zip")),
    ]
    if deploy_mode:
        command += ["--deploy-mode", deploy_mode]
    for key, value in conf.items():
        command += ["--conf", f"{key}={value}"]
    for pair in spark_pairs:
        command += ["--conf", pair]
    command += [str(script), "--conf", str(config_file), *job_args]
    return command, dry_run


def available_jobs() -> list[str]:
    return [p.stem.replace("_", "-") for p in (PROJECT_ROOT / "jobs").glob("*.py")]


def main(argv: Sequence[str] | None = None) -> int:
    try:
        command, dry_run = build_command(sys.argv[1:] if argv is None else argv)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("+ " + shlex.join(command), file=sys.stderr)
    if dry_run:
        return 0
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1"}
    return subprocess.run(command, env=env, check=False).returncode


if __name__ == "__main__":
    raise SystemExit(main())

"""`shopstream bench dbt`: what an incremental dbt run costs on top of a large Bronze.

For each Bronze size (1M and 5M rows by default) the benchmark fills a database of its own
with simulator events through the stream's writer on its bulk path (one large COPY per
chunk, :func:`streaming.bronze_load.bulk_load_valid_messages`), builds Silver and Gold once,
then adds 10,000 more events from the same simulator (continuing its sessions, with some
late, duplicate and broken messages) through the same writer message by message
(:func:`streaming.bronze_load.write_messages`) and times the incremental ``dbt run``, the
sensor's refresh. The targets: the run on 5M rows costs at most 1.5x the run on 1M, and under
10 s on 1M; on 50M (``--sizes 5000000,50000000``) at most 1.3x the run on 5M. Each size's
database size is printed, so the disk a larger size needs can be judged before running it.

The helpers here (the dbt environment, running dbt) are also what the dbt tests use, so
the benchmark and the tests load Bronze and run dbt the same way.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from shopstream import database
from shopstream.command import finite
from streaming.migrations import migrate

if TYPE_CHECKING:
    from streaming.bronze_load import KafkaPositions

REPO_ROOT = Path(__file__).resolve().parents[2]
DBT_PROJECT_DIR = REPO_ROOT / "dbt_project"
BENCH_TOPIC = "bench-clickstream"

# ---------------------------------------------------------------------------------------
# Running dbt


def dbt_environment(database_url: str, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment dbt_project/profiles.yml reads, for ``database_url``."""
    parts = database.url_parts(database_url)
    env = dict(os.environ if base is None else base)
    env.update(
        {
            "SHOPSTREAM_DATABASE_URL": database_url,
            "SHOPSTREAM_DB_HOST": parts.host,
            "SHOPSTREAM_DB_PORT": str(parts.port),
            "SHOPSTREAM_DB_USER": parts.user,
            "SHOPSTREAM_DB_PASSWORD": parts.password,
            "SHOPSTREAM_DB_NAME": parts.database,
            **database.ssl_environment(database_url),
            "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        }
    )
    return env


def dbt_executable() -> str:
    beside_python = Path(sys.executable).parent / "dbt"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("dbt")
    if found is None:
        raise RuntimeError("dbt is not installed: pip install dbt-core dbt-postgres")
    return found


@dataclass(frozen=True)
class DbtResult:
    """One dbt invocation: wall time, exit code, output, and seconds per node."""

    command: tuple[str, ...]
    seconds: float
    returncode: int
    output: str
    node_seconds: dict[str, float]
    node_status: dict[str, str]

    def check(self) -> DbtResult:
        if self.returncode != 0:
            tail = "\n".join(self.output.splitlines()[-60:])
            raise RuntimeError(f"dbt {' '.join(self.command)} failed ({self.returncode}):\n{tail}")
        return self


def run_dbt(
    args: Sequence[str],
    env: Mapping[str, str],
    *,
    target_path: Path,
    project_dir: Path = DBT_PROJECT_DIR,
) -> DbtResult:
    """``dbt <args> --project-dir dbt_project --profiles-dir dbt_project`` in a subprocess.

    ``target_path`` keeps each caller's manifest and run results apart, so concurrent runs
    (tests, the benchmark, Dagster) do not overwrite each other's ``target/``.
    """
    command = (
        *args,
        "--project-dir", str(project_dir),
        "--profiles-dir", str(project_dir),
        "--target-path", str(target_path),
        "--log-path", str(target_path / "logs"),
    )  # fmt: skip
    started = time.perf_counter()
    completed = subprocess.run(
        [dbt_executable(), *command],
        env=dict(env),
        cwd=project_dir,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - started
    node_seconds: dict[str, float] = {}
    node_status: dict[str, str] = {}
    results_path = target_path / "run_results.json"
    if results_path.exists():
        for result in json.loads(results_path.read_text())["results"]:
            node_seconds[result["unique_id"]] = result["execution_time"]
            node_status[result["unique_id"]] = result["status"]
    return DbtResult(
        tuple(args), seconds, completed.returncode, completed.stdout + completed.stderr,
        node_seconds, node_status,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------
# The benchmark


@dataclass(frozen=True)
class SizeResult:
    bronze_rows: int
    load_seconds: float
    full_build_seconds: float
    incremental_run_seconds: float
    incremental_build_seconds: float
    increment_messages: int
    model_seconds: dict[str, float]
    database_bytes: int = 0
    incremental_run_samples: list[float] = field(default_factory=list)


def _say(message: str) -> None:
    typer.echo(message, err=True)


def _load_history(
    database_url: str, rows: int, *, seed: int, events_per_second: float, chunk: int
) -> tuple[Any, KafkaPositions, float]:
    from streaming.bronze_load import KafkaPositions, bulk_load_valid_messages  # pyarrow: only when a benchmark runs
    from streaming.simulator import Simulator

    span = timedelta(seconds=rows / events_per_second)
    start = datetime.now(UTC).replace(microsecond=0) - span
    simulator = Simulator(seed, start=start, events_per_second=events_per_second)
    positions = KafkaPositions(BENCH_TOPIC)
    started = time.perf_counter()
    loaded = 0
    with database.connect(database_url, autocommit=True) as conn:
        while loaded < rows:
            batch = simulator.take(min(chunk, rows - loaded))
            bulk_load_valid_messages(conn, batch.keys, batch.values, positions)
            loaded += len(batch)
            rate = loaded / (time.perf_counter() - started)
            _say(f"  bronze: {loaded:,}/{rows:,} rows ({rate:,.0f} rows/s)")
        # What autovacuum would have done by the time the next batch arrives.
        conn.execute("vacuum analyze bronze.clickstream_events")
        conn.execute("vacuum analyze bronze.ingest_batches")
    return simulator, positions, time.perf_counter() - started


def bench_size(
    admin_url: str,
    rows: int,
    *,
    increment: int,
    seed: int,
    events_per_second: float,
    bad_ratio: float,
    chunk: int,
    keep: bool,
    work_dir: Path,
    repeats: int = 3,
) -> SizeResult:
    from streaming.bronze_load import write_messages  # pyarrow: only when a benchmark runs

    name = f"shopstream_bench_{rows}"
    database.drop_database(admin_url, name)
    database.ensure_database(admin_url, name)
    url = database.with_database(admin_url, name)
    try:
        migrate(url)
        _say(f"{rows:,} Bronze rows into database {name}")
        simulator, positions, load_seconds = _load_history(
            url, rows, seed=seed, events_per_second=events_per_second, chunk=chunk
        )
        env = dbt_environment(url)
        target = work_dir / f"target_{rows}"
        _say("  dbt build (first, full)")
        full = run_dbt(["build"], env, target_path=target).check()
        with database.connect(url, autocommit=True) as conn:
            for relation in ("silver.stg_clickstream_events", "silver.int_user_sessions"):
                conn.execute(f"vacuum analyze {relation}")
        # The increment continues the history's sessions, with the stream's bad data. A run is
        # short and much of it is dbt's own start-up, so one sample is noisy: the median of
        # ``repeats`` runs, each after its own increment, is what is reported.
        simulator.bad_ratio = bad_ratio
        runs: list[DbtResult] = []
        for repeat in range(1, repeats + 1):
            with database.connect(url, autocommit=True) as conn:
                batch = simulator.take(increment)
                write_messages(conn, batch.keys, batch.values, positions)
            _say(f"  + {len(batch):,} messages; dbt run (incremental, {repeat}/{repeats})")
            runs.append(run_dbt(["run"], env, target_path=target).check())
        incremental = sorted(runs, key=lambda run: run.seconds)[len(runs) // 2]
        model_seconds = {
            unique_id.split(".")[-1]: statistics.median(run.node_seconds[unique_id] for run in runs)
            for unique_id in incremental.node_seconds
        }
        # The same again with the data tests, as the Dagster sensor's run would do it.
        with database.connect(url, autocommit=True) as conn:
            batch = simulator.take(increment)
            write_messages(conn, batch.keys, batch.values, positions)
        _say(f"  + {len(batch):,} messages; dbt build (incremental, with tests)")
        incremental_build = run_dbt(["build"], env, target_path=target).check()
        with database.connect(url, autocommit=True) as conn:
            (database_bytes,) = conn.execute("select pg_database_size(current_database())").fetchone()
        return SizeResult(
            bronze_rows=rows,
            load_seconds=load_seconds,
            full_build_seconds=full.seconds,
            incremental_run_seconds=incremental.seconds,
            incremental_run_samples=[run.seconds for run in runs],
            incremental_build_seconds=incremental_build.seconds,
            increment_messages=len(batch),
            model_seconds=model_seconds,
            database_bytes=database_bytes,
        )
    finally:
        if not keep:
            database.drop_database(admin_url, name)


def _table(results: Iterable[SizeResult]) -> str:
    results = list(results)
    models = sorted({model for result in results for model in result.model_seconds})
    lines = [
        "| Bronze rows | load (COPY) | first dbt build | incremental dbt run (median; runs) | incremental dbt build"
        " | database |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for result in results:
        samples = ", ".join(f"{seconds:.2f}" for seconds in result.incremental_run_samples)
        lines.append(
            f"| {result.bronze_rows:,} | {result.load_seconds:.1f} s | {result.full_build_seconds:.1f} s"
            f" | {result.incremental_run_seconds:.2f} s ({samples})"
            f" | {result.incremental_build_seconds:.2f} s | {result.database_bytes / 1e9:.1f} GB |"
        )
    lines += ["", "| model (incremental run) | " + " | ".join(f"{r.bronze_rows:,}" for r in results) + " |"]
    lines.append("|---|" + "---:|" * len(results))
    for model in models:
        cells = " | ".join(f"{r.model_seconds.get(model, float('nan')):.2f} s" for r in results)
        lines.append(f"| {model} | {cells} |")
    return "\n".join(lines)


def benchmark_admin_url(database_url: str | None) -> str:
    """--database-url, else the role that may create the benchmark's scratch databases: the embedded
    server's admin, or SHOPSTREAM_ADMIN_DATABASE_URL's on a server we do not run (never the pipeline's
    owner role `services start` exports, which may not create databases)."""
    if database_url:
        return database_url
    from shopstream.embedded import ServiceError
    from shopstream.services import admin_database_url
    from shopstream.settings import load_settings

    try:
        return admin_database_url(load_settings())
    except ServiceError as error:
        raise typer.BadParameter(f"{error}; or pass --database-url") from None


def dbt_benchmark_command(
    sizes: Annotated[
        str, typer.Option(help="Bronze sizes to compare, comma-separated (e.g. 20000,100000).")
    ] = "1000000,5000000",
    increment: Annotated[int, typer.Option(min=1, help="Events added before the timed run.")] = 10_000,
    events_per_second: Annotated[
        float,
        typer.Option(
            min=0.001, callback=finite, help="Simulated traffic of the history (sets how many days it spans)."
        ),
    ] = 100.0,
    bad_ratio: Annotated[
        float,
        typer.Option(
            min=0.0, max=1.0, callback=finite, help="Share of late, duplicate and broken messages in the increment."
        ),
    ] = 0.05,
    seed: Annotated[int, typer.Option(help="Simulator seed.")] = 20_260_103,
    chunk: Annotated[int, typer.Option(min=1, help="Rows per COPY batch while loading history.")] = 250_000,
    database_url: Annotated[
        str | None,
        typer.Option(help="Server to use (a role that may create databases); default: the services'."),
    ] = None,
    keep: Annotated[bool, typer.Option(help="Keep the benchmark databases.")] = False,
    repeats: Annotated[
        int, typer.Option(min=1, help="Incremental runs per size, each after its own increment; the median counts.")
    ] = 3,
) -> None:
    """Time an incremental dbt run adding 10,000 events on top of 1M and 5M Bronze rows."""
    try:
        row_counts = [int(size.replace("_", "")) for size in sizes.split(",") if size.strip()]
    except ValueError:
        raise typer.BadParameter(f"--sizes must be whole numbers separated by commas: got {sizes!r}") from None
    admin_url = benchmark_admin_url(database_url)
    results: list[SizeResult] = []
    with tempfile.TemporaryDirectory(prefix="shopstream-bench-dbt-") as work:
        for rows in row_counts:
            results.append(
                bench_size(
                    admin_url,
                    rows,
                    increment=increment,
                    seed=seed,
                    events_per_second=events_per_second,
                    bad_ratio=bad_ratio,
                    chunk=chunk,
                    keep=keep,
                    work_dir=Path(work),
                    repeats=repeats,
                )  # fmt: skip
            )
    typer.echo(_table(results))
    smallest, largest = results[0], results[-1]
    ratio = largest.incremental_run_seconds / smallest.incremental_run_seconds
    typer.echo(
        f"\nincremental run: {largest.bronze_rows:,} rows costs {ratio:.2f}x {smallest.bronze_rows:,}"
        f" (targets: 5M <= 1.5x 1M, 50M <= 1.3x 5M); {smallest.incremental_run_seconds:.2f} s on"
        f" {smallest.bronze_rows:,} (target < 10 s on 1M)"
    )

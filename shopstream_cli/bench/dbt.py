"""`shopstream bench dbt`: what an incremental dbt run costs on top of a large Bronze.

For each Bronze size (1M and 5M rows by default) the benchmark fills a database of its own
with simulator events by COPY (fast, not through the stream), builds Silver and Gold once,
then adds 10,000 more events from the same simulator (continuing its sessions, with some
late, duplicate and broken messages) through the stream's own writer
(:func:`streaming.bronze_sink.write_batch`) and times the incremental ``dbt run``. The
target: the run on 5M rows costs at most 1.5x the run on 1M, and under 10 s on 1M.

The helpers here (Bronze loading, the dbt environment, running dbt) are also what the dbt
tests use, so the benchmark and the tests load Bronze the same way.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import typer

from shopstream import database
from streaming.events import EVENT_FIELDS, Repair, parse_timestamp, validate_message
from streaming.ledger import json_offsets, lock_bronze
from streaming.migrations import migrate

REPO_ROOT = Path(__file__).resolve().parents[2]
DBT_PROJECT_DIR = REPO_ROOT / "dbt_project"
KAFKA_PARTITIONS = 6
BENCH_TOPIC = "bench-clickstream"

# Types of the columns streaming.bronze_sink.write_batch expects (transforms.VALIDATED_COLUMNS).
_ARROW_TYPES = {"string": pa.string(), "double": pa.float64(), "long": pa.int64()}
EVENT_SCHEMA = pa.schema(
    [
        pa.field(
            event_field.name,
            pa.timestamp("us", tz="UTC")
            if event_field.name == "event_timestamp"
            else _ARROW_TYPES[event_field.spark_type],
        )
        for event_field in EVENT_FIELDS
    ]
)
VALIDATED_SCHEMA = pa.schema(
    [
        *EVENT_SCHEMA,
        pa.field("repaired", pa.bool_()),
        pa.field("repair_reason", pa.string()),
        pa.field("kafka_topic", pa.string()),
        pa.field("kafka_partition", pa.int32()),
        pa.field("kafka_offset", pa.int64()),
        pa.field("sent_at", pa.timestamp("us", tz="UTC")),
        pa.field("raw_value", pa.binary()),
        pa.field("raw_text", pa.string()),
        pa.field("reject_reason", pa.string()),
        pa.field("reject_detail", pa.string()),
    ]
)


# ---------------------------------------------------------------------------------------
# Bronze loading


@dataclass
class KafkaPositions:
    """Where the next message of each partition goes, as a producer keyed by session would."""

    topic: str
    partitions: int = KAFKA_PARTITIONS
    next_offsets: dict[int, int] = field(default_factory=dict)

    def place(self, key: bytes) -> tuple[int, int]:
        partition = zlib.crc32(key) % self.partitions
        offset = self.next_offsets.get(partition, 0)
        self.next_offsets[partition] = offset + 1
        return partition, offset


def validated_table(keys: Sequence[bytes], values: Sequence[bytes], positions: KafkaPositions) -> pa.Table:
    """Messages validated by the pure-Python reference rules, shaped as the stream's output.

    Equivalent to ``streaming.transforms.parse_and_validate`` without Spark (the stream's
    tests hold the two equal), so the dbt tests need no JVM.
    """
    rows: list[dict[str, Any]] = []
    for key, value in zip(keys, values, strict=True):
        partition, offset = positions.place(key)
        row: dict[str, Any] = dict.fromkeys(VALIDATED_SCHEMA.names)
        row.update(kafka_topic=positions.topic, kafka_partition=partition, kafka_offset=offset, repaired=False)
        verdict = validate_message(value)
        if verdict.accepted:
            event = json.loads(value)
            row.update({name: event.get(name) for name in EVENT_SCHEMA.names})
            row["event_timestamp"] = parse_timestamp(event["event_timestamp"])
            row["product_price"] = float(event["product_price"])
            if verdict.repair is Repair.PURCHASE_NULL_QUANTITY:
                row.update(quantity=1, repaired=True, repair_reason=verdict.repair.value)
        else:
            row["raw_value"] = value
            try:
                row["raw_text"] = value.decode("utf-8")
            except UnicodeDecodeError:
                row["raw_text"] = None
            row["reject_reason"] = verdict.reason.value if verdict.reason else None
            row["reject_detail"] = verdict.detail
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=VALIDATED_SCHEMA)


def write_messages(
    conn: psycopg.Connection, keys: Sequence[bytes], values: Sequence[bytes], positions: KafkaPositions
) -> int | None:
    """One Bronze batch through the stream's transactional writer; returns its batch_id."""
    from streaming.bronze_sink import SOURCE_REPLAY, write_batch

    table = validated_table(keys, values, positions)
    return write_batch(conn, table, topic=positions.topic, source=SOURCE_REPLAY).batch_id


_EVENT_COPY_COLUMNS = (
    *EVENT_SCHEMA.names,
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
    "ingested_at",
    "batch_id",
)


def copy_valid_messages(
    conn: psycopg.Connection, keys: Sequence[bytes], values: Sequence[bytes], positions: KafkaPositions
) -> int:
    """COPY valid messages (simulator with bad_ratio=0) straight into Bronze as one batch.

    The bulk path for history: pyarrow parses the JSON and writes the CSV in C++. It takes
    the Bronze writers' lock and writes the ledger row (whose trigger advances
    bronze.ingest_offsets) in the same transaction, as the stream's sink does, so the
    ingestion cursor stays consistent.
    Returns the batch_id.
    """
    events = pajson.read_json(
        io.BytesIO(b"\n".join(values)),
        parse_options=pajson.ParseOptions(explicit_schema=EVENT_SCHEMA),
    )
    placed = [positions.place(key) for key in keys]
    partitions = pa.array([partition for partition, _ in placed], pa.int32())
    offsets = pa.array([offset for _, offset in placed], pa.int64())
    start_offsets: dict[int, int] = {}
    end_offsets: dict[int, int] = {}
    for partition, offset in placed:
        start_offsets.setdefault(partition, offset)
        end_offsets[partition] = offset + 1
    event_times = pc.min_max(events["event_timestamp"]).as_py()
    with conn.transaction():
        lock_bronze(conn)
        batch_id, ingested_at = conn.execute(
            "insert into bronze.ingest_batches (kafka_topic, source, start_offsets, end_offsets,"
            " messages_consumed, rows_written, rejects, duplicates, min_event_time,"
            " max_event_time, started_at)"
            " values (%s, 'replay', %s, %s, %s, %s, 0, 0, %s, %s, now())"
            " returning batch_id, statement_timestamp()",
            (
                positions.topic,
                json_offsets(start_offsets),
                json_offsets(end_offsets),
                len(values),
                len(values),
                event_times["min"],
                event_times["max"],
            ),
        ).fetchone()
        size = events.num_rows
        table = events.append_column("kafka_topic", pa.array([positions.topic] * size, pa.string()))
        table = table.append_column("kafka_partition", partitions)
        table = table.append_column("kafka_offset", offsets)
        table = table.append_column("ingested_at", pa.array([ingested_at] * size, pa.timestamp("us", tz="UTC")))
        table = table.append_column("batch_id", pa.array([batch_id] * size, pa.int64()))
        buffer = io.BytesIO()
        pacsv.write_csv(table, buffer, pacsv.WriteOptions(include_header=False, batch_size=65536))
        columns = ", ".join(_EVENT_COPY_COLUMNS)
        with conn.cursor().copy(f"copy bronze.clickstream_events ({columns}) from stdin (format csv)") as copy:
            copy.write(buffer.getbuffer())
    return batch_id


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
    incremental_run_samples: list[float] = field(default_factory=list)


def _say(message: str) -> None:
    typer.echo(message, err=True)


def _load_history(
    database_url: str, rows: int, *, seed: int, events_per_second: float, chunk: int
) -> tuple[Any, KafkaPositions, float]:
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
            copy_valid_messages(conn, batch.keys, batch.values, positions)
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
        # a few seconds of which ~2 are dbt's own start-up, so one sample is noisy: the median
        # of ``repeats`` runs, each after its own increment, is what is reported.
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
        return SizeResult(
            bronze_rows=rows,
            load_seconds=load_seconds,
            full_build_seconds=full.seconds,
            incremental_run_seconds=incremental.seconds,
            incremental_run_samples=[run.seconds for run in runs],
            incremental_build_seconds=incremental_build.seconds,
            increment_messages=len(batch),
            model_seconds=model_seconds,
        )
    finally:
        if not keep:
            database.drop_database(admin_url, name)


def _table(results: Iterable[SizeResult]) -> str:
    results = list(results)
    models = sorted({model for result in results for model in result.model_seconds})
    lines = [
        "| Bronze rows | load (COPY) | first dbt build | incremental dbt run (median; runs) | incremental dbt build |",
        "|---:|---:|---:|---:|---:|",
    ]
    for result in results:
        samples = ", ".join(f"{seconds:.2f}" for seconds in result.incremental_run_samples)
        lines.append(
            f"| {result.bronze_rows:,} | {result.load_seconds:.1f} s | {result.full_build_seconds:.1f} s"
            f" | {result.incremental_run_seconds:.2f} s ({samples})"
            f" | {result.incremental_build_seconds:.2f} s |"
        )
    lines += ["", "| model (incremental run) | " + " | ".join(f"{r.bronze_rows:,}" for r in results) + " |"]
    lines.append("|---|" + "---:|" * len(results))
    for model in models:
        cells = " | ".join(f"{r.model_seconds.get(model, float('nan')):.2f} s" for r in results)
        lines.append(f"| {model} | {cells} |")
    return "\n".join(lines)


def _admin_url(database_url: str | None) -> str:
    if database_url:
        return database_url
    from shopstream.services import endpoints
    from shopstream.settings import load_settings

    return endpoints(load_settings()).database_url


def dbt_benchmark_command(
    sizes: Annotated[
        str, typer.Option(help="Bronze sizes to compare, comma-separated (e.g. 20000,100000).")
    ] = "1000000,5000000",
    increment: Annotated[int, typer.Option(help="Events added before the timed run.")] = 10_000,
    events_per_second: Annotated[
        float, typer.Option(help="Simulated traffic of the history (sets how many days it spans).")
    ] = 100.0,
    bad_ratio: Annotated[
        float, typer.Option(help="Share of late, duplicate and broken messages in the increment.")
    ] = 0.05,
    seed: Annotated[int, typer.Option(help="Simulator seed.")] = 20_260_103,
    chunk: Annotated[int, typer.Option(help="Rows per COPY batch while loading history.")] = 250_000,
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
    admin_url = _admin_url(database_url)
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
        f" (target <= 1.5x); {smallest.incremental_run_seconds:.2f} s on {smallest.bronze_rows:,}"
        " (target < 10 s)"
    )

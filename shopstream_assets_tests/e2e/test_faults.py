"""Faults with real processes: PostgreSQL and Kafka restarted under a running stream, kill -9 mid-batch,
the dashboard's database stopped mid-session.

After each fault: Bronze equals what Kafka holds (no loss, no duplicates, exact accounting);
after the next real dbt build, Gold's daily counts equal counts taken straight from Bronze,
and every Silver and Gold relation equals both a full refresh built elsewhere from the same
Bronze and the independent pandas reference (``dbt/reference_checks.py``). These
tests stop and start servers, so they run on servers of their own (one PostgreSQL and one
Kafka for the module, in a SHOPSTREAM_HOME of their own), never the session's shared ones.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
import streamlit as st
from streamlit.logger import set_log_level
from streamlit.testing.v1 import AppTest

from shopstream import database
from shopstream.kafka_admin import ensure_topic
from shopstream.kafka_server import EmbeddedKafka
from shopstream.postgres_server import EmbeddedPostgres
from shopstream.services import Endpoints
from shopstream.settings import load_settings
from shopstream_assets_tests.conftest import TEST_PARTITIONS, make_test_home
from shopstream_assets_tests.e2e.helpers import (
    CLI,
    Report,
    check_bronze_equals_delivered,
    check_gold_consistent,
    check_silver_and_gold_match,
    fetch,
    kill_group,
    manifest_positions,
    read_topic,
    topic_message_count,
    wait_for,
)
from shopstream_assets_tests.streaming.conftest import produce_messages
from shopstream_cli.bench.dashboard import seed_shop
from streaming.migrations import migrate
from streaming.simulator import Simulator

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _quiet(message: str) -> None:
    pass


@dataclass(frozen=True)
class FaultStack:
    """The module's own servers, which the tests may stop and start."""

    home: Path
    postgres: EmbeddedPostgres
    kafka: EmbeddedKafka
    admin_url: str
    bootstrap: str

    def ensure_running(self) -> None:
        """Bring back whatever a failed test left stopped."""
        if self.postgres.pid() is None:
            self.postgres.start(progress=_quiet)
        if self.kafka.pid() is None:
            self.kafka.start(progress=_quiet)


def _processes_under(home: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if any(str(home) in part for part in (process.info["cmdline"] or [])) and process.pid != os.getpid():
            found.append(process)
    return found


@pytest.fixture(scope="module")
def fault_stack() -> Iterator[FaultStack]:
    # Outside pytest's basetemp, as the session's servers are (conftest.session_home).
    home = make_test_home(Path(tempfile.mkdtemp(prefix="shopstream-e2e-faults-")))
    settings = load_settings({"SHOPSTREAM_HOME": str(home)})
    postgres, kafka = EmbeddedPostgres(settings), EmbeddedKafka(settings)
    try:
        admin_url = postgres.start(progress=_quiet)
        bootstrap = kafka.start(progress=_quiet)
        yield FaultStack(home, postgres, kafka, admin_url, bootstrap)
    finally:
        kafka.stop(progress=_quiet)
        postgres.stop(progress=_quiet)
        for process in _processes_under(home):  # anything a failed stop left behind
            process.kill()
        shutil.rmtree(home, ignore_errors=True)


@dataclass(frozen=True)
class FaultCase:
    database_url: str
    reader_url: str
    topic: str
    env: dict[str, str]
    logs: Path
    dbt_target: Path


@pytest.fixture
def fault_case(fault_stack: FaultStack, tmp_path: Path) -> Iterator[FaultCase]:
    """A fresh database and topic on the module's servers, and the env a `shopstream` child needs."""
    fault_stack.ensure_running()
    name = f"t_fault_{uuid.uuid4().hex[:8]}"
    database.ensure_database(fault_stack.admin_url, name)
    database_url = database.with_database(fault_stack.admin_url, name)
    migrate(database_url)
    reader_url = database.with_database(fault_stack.postgres.reader_url(), name)
    topic = f"t-fault-{uuid.uuid4().hex[:8]}"
    ensure_topic(fault_stack.bootstrap, topic, TEST_PARTITIONS)
    env = {key: value for key, value in os.environ.items() if not key.startswith("SHOPSTREAM_")}
    env.update(Endpoints(database_url, reader_url, fault_stack.bootstrap).environment())
    env.update(
        {
            "SHOPSTREAM_HOME": str(make_test_home(tmp_path / "home")),
            "SHOPSTREAM_TOPIC": topic,
            "SHOPSTREAM_TOPIC_PARTITIONS": str(TEST_PARTITIONS),
            "SHOPSTREAM_SPARK_MASTER": "local[2]",
        }
    )
    yield FaultCase(database_url, reader_url, topic, env, tmp_path / "logs", tmp_path / "dbt-target")
    fault_stack.ensure_running()
    database.drop_database(fault_stack.admin_url, name)


def committed_batches(database_url: str) -> int:
    try:
        return fetch(database_url, "select count(*) from bronze.ingest_batches")[0][0]
    except Exception:  # noqa: BLE001 -- PostgreSQL may be the thing that is down
        return -1


def log_text(case: FaultCase, name: str) -> str:
    path = case.logs / f"{name}.log"
    return path.read_text(errors="replace") if path.exists() else ""


def check_manifest(report: Report, case: FaultCase, manifest: Path, delivered: list[tuple[int, int, Any]]) -> None:
    positions, failed = manifest_positions(manifest)
    report.held("the producer lost no message (every send acknowledged)", failed == 0, f"{failed} failed")
    report.held(
        "the topic holds exactly the producer's acknowledged messages",
        positions == {(partition, offset) for partition, offset, _ in delivered},
        f"{len(positions)} acknowledged vs {len(delivered)} in the topic",
    )


def run_producer(spawn_process: Any, case: FaultCase, manifest: Path, *, rate: int, seed: int) -> Any:
    """`shopstream produce` until SIGTERM, so it is still sending whenever the (slow to start) stream is ready."""
    command = [
        *CLI, "produce", "--rate", str(rate), "--seed", str(seed),
        "--bad-ratio", "0.05", "--manifest", str(manifest), "--quiet",
    ]  # fmt: skip
    return spawn_process(command, env=case.env, name="producer")


def stop_producer(report: Report, case: FaultCase, producer: Any) -> None:
    os.killpg(producer.pid, signal.SIGTERM)  # flushes what it queued, then exits
    report.held("the producer flushed and stopped cleanly", producer.wait(120) == 0, log_text(case, "producer")[-1500:])


def consumed_messages(database_url: str) -> int:
    return fetch(database_url, "select coalesce(sum(messages_consumed), 0) from bronze.ingest_batches")[0][0]


def finish_and_check(
    report: Report, case: FaultCase, fault_stack: FaultStack, stream: Any, producer: Any | None, manifest: Path | None
) -> None:
    if producer is not None:
        stop_producer(report, case, producer)
    in_topic = topic_message_count(fault_stack.bootstrap, case.topic)
    wait_for(
        lambda: consumed_messages(case.database_url) >= in_topic,
        timeout=420,
        what=f"Bronze to account for the topic's {in_topic:,} messages",
        alive=stream,
    )
    # A clean stop: the stream runs without --until-idle here, so it cannot leave early while the
    # producer starts slowly on a busy machine. SIGTERM to the driver only: signalling the whole
    # group also stops Spark's JVM under the driver, whose spark.stop() then ends in a py4j error.
    os.kill(stream.pid, signal.SIGTERM)
    stream.wait(120)
    report.held("the stream stopped cleanly", stream.returncode == 0, log_text(case, "stream")[-3000:])
    delivered = read_topic(fault_stack.bootstrap, case.topic)
    if manifest is not None:
        check_manifest(report, case, manifest, delivered)
    state = check_bronze_equals_delivered(report, case.database_url, case.topic, delivered)
    report.note(
        f"{state.consumed:,} messages -> {state.rows_written:,} rows + {state.ledger_rejects:,} rejects"
        f" + {state.duplicates:,} duplicates in {state.batches} batches"
    )
    report.tried("ran the real dbt build of every model")
    check_gold_consistent(report, case.database_url, case.dbt_target)
    check_silver_and_gold_match(report, case.database_url, case.dbt_target.parent)


def test_postgresql_restarted_during_streaming(fault_stack: FaultStack, fault_case: FaultCase, spawn_process) -> None:
    report = Report("fault: PostgreSQL stopped and started while the producer sends and the stream writes")
    case = fault_case
    stream = spawn_process([*CLI, "stream"], env=case.env, name="stream")
    manifest = case.logs.parent / "manifest.jsonl"
    producer = run_producer(spawn_process, case, manifest, rate=300, seed=501)
    report.tried("`shopstream stream` and `shopstream produce --rate 300` running")
    wait_for(lambda: committed_batches(case.database_url) >= 1, timeout=360, what="a committed batch", alive=stream)
    before = committed_batches(case.database_url)
    report.held("the producer was still sending when the fault hit", producer.poll() is None)
    fault_stack.postgres.stop(progress=_quiet)
    stopped_at = time.monotonic()
    report.tried(f"pg_ctl stop -m fast after {before} committed batches")
    # Down until the stream has felt it (a batch's write failed and backs off), at least 6 s.
    wait_for(
        lambda: "retry" in log_text(case, "stream"), timeout=240, what="the stream to notice and retry", alive=stream
    )
    time.sleep(max(0.0, 6 - (time.monotonic() - stopped_at)))
    fault_stack.postgres.start(progress=_quiet)
    report.tried(f"PostgreSQL started again after {time.monotonic() - stopped_at:.1f} s down")
    report.held("the stream process survived the outage", stream.poll() is None)
    report.held("the stream said so in its log", "retry" in log_text(case, "stream"))
    wait_for(
        lambda: committed_batches(case.database_url) > before, timeout=180, what="a batch committed after the restart"
    )
    after = committed_batches(case.database_url)
    report.held("batches commit again after the restart", after > before, f"{before} -> {after} batches")
    finish_and_check(report, case, fault_stack, stream, producer, manifest)
    report.finish()


def test_kafka_broker_restarted_while_producing_and_streaming(
    fault_stack: FaultStack, fault_case: FaultCase, spawn_process
) -> None:
    report = Report("fault: the Kafka broker stopped and started while producing and streaming")
    case = fault_case
    stream = spawn_process([*CLI, "stream"], env=case.env, name="stream")
    manifest = case.logs.parent / "manifest.jsonl"
    producer = run_producer(spawn_process, case, manifest, rate=300, seed=502)
    report.tried("`shopstream stream` and `shopstream produce --rate 300` running")
    wait_for(lambda: committed_batches(case.database_url) >= 1, timeout=360, what="a committed batch", alive=stream)
    before = committed_batches(case.database_url)
    report.held("the producer was still sending when the fault hit", producer.poll() is None)
    fault_stack.kafka.stop(progress=_quiet)
    stopped_at = time.monotonic()
    report.tried(f"stopped the broker (SIGTERM) after {before} committed batches")
    time.sleep(5)  # the outage itself; nothing is asserted on time
    fault_stack.kafka.start(progress=_quiet)
    report.tried(f"broker started again after {time.monotonic() - stopped_at:.1f} s down")
    report.held("the stream process survived the outage", stream.poll() is None)
    report.held("the producer survived the outage", producer.poll() in (None, 0))
    wait_for(
        lambda: committed_batches(case.database_url) > before, timeout=240, what="a batch committed after the restart"
    )
    finish_and_check(report, case, fault_stack, stream, producer, manifest)
    report.finish()


IN_TRANSACTION = """
select pid, left(query, 80)
from pg_stat_activity
where datname = current_database() and pid <> pg_backend_pid() and backend_xid is not null
"""


def test_kill_9_while_a_batch_is_in_its_postgresql_transaction(
    fault_stack: FaultStack, fault_case: FaultCase, spawn_process
) -> None:
    report = Report("fault: kill -9 of the stream while a batch is inside its PostgreSQL transaction")
    case = fault_case
    total = 60_000
    batch = Simulator(seed=503, bad_ratio=0.1).take(total)
    produce_messages(fault_stack.bootstrap, case.topic, batch.values, keys=batch.keys)
    report.tried(f"pre-filled the topic with {total:,} messages (10% bad, duplicates included)")
    command = [*CLI, "stream", "--max-offsets-per-trigger", "12000"]
    stream = spawn_process(command, env=case.env, name="stream-killed")
    wait_for(
        lambda: committed_batches(case.database_url) >= 1, timeout=240, what="a first committed batch", alive=stream
    )
    with database.connect(case.database_url, autocommit=True) as watcher:
        # backend_xid is set once the batch has written inside its transaction (the ledger row
        # comes first), so the kill lands between that and the commit.
        found = wait_for(
            lambda: watcher.execute(IN_TRANSACTION).fetchall(),
            timeout=240,
            interval=0.005,
            what="a batch inside its transaction",
            alive=stream,
        )
        kill_group(stream)
        (pid, query) = found[0]
        report.tried(f"kill -9 of the stream's process group while backend {pid} was in a write transaction: {query!r}")
        committed_at_kill = committed_batches(case.database_url)
        wait_for(
            lambda: not watcher.execute("select 1 from pg_stat_activity where pid = %s", (pid,)).fetchall(),
            timeout=60,
            what="PostgreSQL to end the dead client's session",
        )
    ((consumed,),) = fetch(case.database_url, "select coalesce(sum(messages_consumed), 0) from bronze.ingest_batches")
    report.held(
        "the interrupted batch left nothing (rolled back)", committed_batches(case.database_url) == committed_at_kill
    )
    report.held("the kill landed mid-stream", 0 < consumed < total, f"{consumed} of {total} consumed before the kill")
    restarted = spawn_process(command, env=case.env, name="stream")
    report.tried("restarted `shopstream stream` on the same checkpoint")
    finish_and_check(report, case, fault_stack, restarted, None, None)
    report.finish()


# ---------------------------------------------------------------------------------------
# The dashboard's database stopped mid-session

DASHBOARD_PAGES = Path(__file__).resolve().parents[2] / "dashboard" / "app_pages"


@pytest.fixture
def dashboard_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    set_log_level(logging.ERROR)
    for name in list(os.environ):
        if name.startswith("SHOPSTREAM_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SHOPSTREAM_HOME", str(tmp_path / "home"))
    st.cache_data.clear()
    yield
    st.cache_data.clear()
    from dashboard.db import get_pool

    get_pool.clear()  # closes the pools before their database goes


LIVE_FIGURES_INDEPENDENT_OF_THE_CLOCK = frozenset({"Ingest lag"})


def test_dashboard_database_stopped_mid_session_then_back(
    fault_stack: FaultStack, fault_case: FaultCase, dashboard_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both pages survive the outage and come back with every figure; the figures that do not move with the
    clock are as before. (Without the broker's address the Live page's lag read "unknown": checked to fail.)"""
    report = Report("fault: the dashboard's PostgreSQL stopped mid-session, then started again")
    case = fault_case
    seed_shop(case.database_url, topic=case.topic, history_rows=3_000, history_days=3, live_messages=300,
              live_rate=10.0, progress=_quiet)  # fmt: skip
    monkeypatch.setenv("SHOPSTREAM_DASHBOARD_DATABASE_URL", case.reader_url)
    monkeypatch.setenv("SHOPSTREAM_TOPIC", case.topic)
    monkeypatch.setenv("SHOPSTREAM_KAFKA_BOOTSTRAP", fault_stack.bootstrap)  # the Live page's lag is a real figure
    apps = {
        page: AppTest.from_file(str(DASHBOARD_PAGES / f"{page}.py"), default_timeout=90)
        for page in ("overview", "live_stream")
    }
    healthy: dict[str, dict[str, str]] = {}
    for page, app in apps.items():
        app.run()
        report.held(f"{page}: renders with data", not app.exception and not app.error, str(app.exception or app.error))
        healthy[page] = {metric.label: metric.value for metric in app.metric}
    report.tried("opened the Overview and Live Stream pages (one session each, pooled connections)")

    fault_stack.postgres.stop(progress=_quiet)
    report.tried("stopped PostgreSQL (pg_ctl stop -m fast) with the sessions open")
    st.cache_data.clear()  # as when the cached results' TTL runs out
    for page, app in apps.items():
        app.run()
        error = app.error[0].value if app.error else ""
        report.held(f"{page}: no exception while the database is down", not app.exception, str(app.exception))
        report.held(f"{page}: says 'Database unavailable'", "Database unavailable" in error, error or "no error shown")

    fault_stack.postgres.start(progress=_quiet)
    report.tried("started PostgreSQL again")
    for page, app in apps.items():

        def recovered(app: AppTest = app) -> bool:
            st.cache_data.clear()
            app.run()
            return not app.error and not app.exception

        wait_for(recovered, timeout=90, interval=1, what=f"{page} to recover")
        now = {metric.label: metric.value for metric in app.metric}
        report.held(
            f"{page}: the same session recovered without a restart, every figure back",
            set(now) == set(healthy[page]) and all(value not in ("", "unknown") for value in now.values()),
            f"{now}",
        )
        # Nothing was ingested meanwhile: the Overview's figures, and the Live page's lag, are as before
        # (the Live page's rate and ages move with the clock). A page with no figure to compare fails.
        stable = {
            label: value
            for label, value in healthy[page].items()
            if page == "overview" or label in LIVE_FIGURES_INDEPENDENT_OF_THE_CLOCK
        }
        report.held(
            f"{page}: shows the same figures as before",
            bool(stable) and all(now.get(label) == value for label, value in stable.items()),
            f"{now} vs {healthy[page]}",
        )
    report.finish()

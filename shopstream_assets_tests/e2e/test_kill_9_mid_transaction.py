"""Fault: kill -9 of the stream while a batch is inside its PostgreSQL transaction, then a restart on the same
checkpoint. After it: the checks of fault_stack.finish_and_check (Bronze = Kafka, Gold = Bronze)."""

from __future__ import annotations

import pytest

from shopstream import database
from shopstream_assets_tests.e2e.fault_stack import FaultCase, FaultStack, committed_batches, finish_and_check
from shopstream_assets_tests.e2e.helpers import CLI, Report, fetch, kill_group, wait_for
from shopstream_assets_tests.streaming.conftest import produce_messages
from streaming.simulator import Simulator

pytestmark = [pytest.mark.slow, pytest.mark.same_worker("fault_stack"), pytest.mark.timeout(900)]


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
    # Six batches, the kill in the second: the size is not what is checked, and every check after
    # it (the dbt builds, the pandas reference) costs in proportion.
    total = 30_000
    batch = Simulator(seed=503, bad_ratio=0.1).take(total)
    produce_messages(fault_stack.bootstrap, case.topic, batch.values, keys=batch.keys)
    report.tried(f"pre-filled the topic with {total:,} messages (10% bad, duplicates included)")
    command = [*CLI, "stream", "--max-offsets-per-trigger", "6000"]
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

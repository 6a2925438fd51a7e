"""streaming.job: the stream and the replay against a real broker, real Spark, real PostgreSQL."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import threading
from collections import Counter

import psycopg
import pytest

from shopstream import database
from shopstream.settings import Settings, load_settings
from shopstream_assets_tests.streaming.conftest import (
    assert_every_batch_accounted,
    bronze_snapshot,
    delete_batch_from_bronze,
    expected_bronze,
    fetch,
    produce_messages,
    produce_simulated,
)
from shopstream_assets_tests.waiting import wait_until
from streaming.bad_messages import BadKind
from streaming.checkpoint import checkpoint_dir, checkpoint_newest_batch
from streaming.job import replay_topic, run_stream
from streaming.job_errors import StreamJobError
from streaming.migrations import migrate
from streaming.simulator import Simulator


def stream_command_line(*options: str) -> list[str]:
    """`shopstream stream ...` as a user types it."""
    return [sys.executable, "-m", "shopstream_cli.cli", "stream", *options]


def settings_for(shopstream_env: dict[str, str]) -> Settings:
    return load_settings(shopstream_env)


def test_stream_lands_good_rows_rejects_duplicates_and_late_events(
    spark, shopstream_env: dict[str, str], database_url: str, kafka_bootstrap: str, topic: str
) -> None:
    batch = produce_simulated(kafka_bootstrap, topic, 4_000, seed=21, bad_ratio=0.3)
    settings = settings_for(shopstream_env)
    summary = run_stream(
        spark,
        settings,
        database_url=database_url,
        kafka_bootstrap=kafka_bootstrap,
        until_idle=2,
        max_offsets_per_trigger=1_500,
    )
    event_ids, rejects, duplicates = expected_bronze(batch.values)
    assert summary.batches >= 3 and summary.messages == 4_000
    assert {row[0] for row in fetch(database_url, "select event_id from bronze.clickstream_events")} == event_ids
    assert (
        Counter(dict(fetch(database_url, "select reason, count(*) from bronze.clickstream_rejects group by 1")))
        == rejects
    )
    assert assert_every_batch_accounted(database_url) == (4_000, len(event_ids), rejects.total(), duplicates)
    assert duplicates > 0 and rejects.total() > 0
    # Late events (event time minutes to hours before the send) land like any other.
    late_ids = {label.event_id for label in batch.labels if label is not None and label.kind is BadKind.LATE}
    assert late_ids and late_ids <= event_ids
    (late_lag,) = fetch(
        database_url,
        "select min(sent_at - event_timestamp) from bronze.clickstream_events where event_id = any(%s)".replace(
            "%s", "array[" + ",".join(f"'{event_id}'" for event_id in late_ids) + "]"
        ),
    )
    assert late_lag[0].total_seconds() >= 60


def test_deleted_checkpoint_restarts_from_the_stored_offsets(
    spark, shopstream_env: dict[str, str], database_url: str, kafka_bootstrap: str, topic: str
) -> None:
    settings = settings_for(shopstream_env)
    first = produce_simulated(kafka_bootstrap, topic, 1_500, seed=3, bad_ratio=0.1)
    options = {"database_url": database_url, "kafka_bootstrap": kafka_bootstrap, "until_idle": 1.5}
    run_stream(spark, settings, **options)
    shutil.rmtree(checkpoint_dir(settings))
    second = Simulator(seed=4, bad_ratio=0.1).take(1_000)
    produce_messages(kafka_bootstrap, topic, second.values, keys=second.keys)
    summary = run_stream(spark, settings, **options)
    # It read only the new messages: from `earliest` it would have met 1,500 already committed.
    assert (summary.messages, summary.already_committed) == (1_000, 0)
    event_ids, rejects, duplicates = expected_bronze(first.values + second.values)
    assert assert_every_batch_accounted(database_url) == (2_500, len(event_ids), rejects.total(), duplicates)


def test_a_checkpoint_ahead_of_bronze_stops_the_stream_until_set_aside(
    spark, shopstream_env: dict[str, str], database_url: str, admin_database_url: str, kafka_bootstrap: str, topic: str
) -> None:
    """A reset database under a surviving checkpoint: resuming would silently skip every message
    the checkpoint has passed. The stream refuses, naming the partitions; --restart-from-bronze sets
    the checkpoint aside (renamed, kept) and reads from Bronze's offsets, so nothing is lost.
    (Three batches: Bronze short of the newest batch alone is caught up instead, see below.)"""
    settings = settings_for(shopstream_env)
    first = produce_simulated(kafka_bootstrap, topic, 1_200, seed=31, bad_ratio=0.1)
    streamed = run_stream(
        spark,
        settings,
        database_url=database_url,
        kafka_bootstrap=kafka_bootstrap,
        until_idle=1.5,
        max_offsets_per_trigger=500,
    )
    assert streamed.batches == 3
    reset_name = f"{database.url_parts(database_url).database}_reset"
    database.ensure_database(admin_database_url, reset_name)
    reset_url = database.with_database(admin_database_url, reset_name)
    try:
        migrate(reset_url)
        options = {"database_url": reset_url, "kafka_bootstrap": kafka_bootstrap, "until_idle": 1.5}
        with pytest.raises(StreamJobError, match=r"checkpoint .* is ahead of bronze.ingest_batches \(partition 0"):
            run_stream(spark, settings, **options)
        assert fetch(reset_url, "select count(*) from bronze.ingest_batches") == [(0,)]

        summary = run_stream(spark, settings, restart_from_bronze=True, **options)
        assert summary.messages == 1_200
        event_ids, rejects, duplicates = expected_bronze(first.values)
        assert assert_every_batch_accounted(reset_url) == (1_200, len(event_ids), rejects.total(), duplicates)
        kept = list(checkpoint_dir(settings).parent.glob(f"{topic}.set-aside-*"))
        assert len(kept) == 1 and (kept[0] / "commits").is_dir()
        # The new checkpoint agrees with Bronze: a plain restart goes on without complaint.
        assert run_stream(spark, settings, **options).messages == 0
    finally:
        database.drop_database(admin_database_url, reset_name)


def test_a_batch_the_checkpoint_marks_done_but_bronze_lacks_is_written_first_on_restart(
    spark, shopstream_env: dict[str, str], database_url: str, kafka_bootstrap: str, topic: str
) -> None:
    """Spark marks a batch done once its rows are collected; its PostgreSQL commit runs behind,
    while Spark computes the next batch. A stop inside that commit leaves Bronze one batch short of
    the checkpoint: the restart writes that batch from Kafka before the query starts, under the
    same Spark batch id, and Bronze ends exactly as an uninterrupted run leaves it."""
    settings = settings_for(shopstream_env)
    produced = produce_simulated(kafka_bootstrap, topic, 2_000, seed=41, bad_ratio=0.2)
    options = {"database_url": database_url, "kafka_bootstrap": kafka_bootstrap, "until_idle": 1.5}
    assert run_stream(spark, settings, max_offsets_per_trigger=800, **options).batches == 3
    complete = bronze_snapshot(database_url)
    # Undo the newest batch's commit, as a kill -9 inside it leaves Bronze: its rows, rejects,
    # ledger row, and the per-partition positions it advanced.
    with psycopg.connect(database_url) as conn:
        newest, query_id, spark_batch, consumed = conn.execute(
            "select batch_id, spark_query_id, spark_batch_id, messages_consumed from bronze.ingest_batches"
            " order by batch_id desc limit 1"
        ).fetchone()
        delete_batch_from_bronze(conn, topic, newest)
    assert bronze_snapshot(database_url) != complete

    summary = run_stream(spark, settings, **options)
    assert (summary.batches, summary.messages) == (1, consumed)
    assert bronze_snapshot(database_url) == complete
    assert fetch(
        database_url, "select spark_query_id, spark_batch_id from bronze.ingest_batches order by batch_id desc limit 1"
    ) == [(query_id, spark_batch)]
    event_ids, rejects, duplicates = expected_bronze(produced.values)
    assert assert_every_batch_accounted(database_url) == (2_000, len(event_ids), rejects.total(), duplicates)
    assert not list(checkpoint_dir(settings).parent.glob(f"{topic}.set-aside-*"))


@pytest.mark.parametrize(
    ("failing_batch", "max_offsets"), [(1, 600), (0, 10_000)], ids=["a-middle-batch", "the-only-batch"]
)
def test_a_commit_that_fails_behind_the_stream_stops_later_batches_until_it_is_written(
    failing_batch: int,
    max_offsets: int,
    spark,
    shopstream_env: dict[str, str],
    database_url: str,
    kafka_bootstrap: str,
    topic: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Spark batch's commit fails once (as PostgreSQL gone for longer than the sink's retries).
    Spark has marked the batch done meanwhile; the next must not commit past it (Bronze's offsets
    would then pass messages it never wrote): the query restarts, writes the batch from Kafka, goes
    on, and (when it was the last batch) still sees the topic drained and exits when idle."""
    from streaming.bronze_sink import BronzeSink

    settings = settings_for(shopstream_env)
    produced = produce_simulated(kafka_bootstrap, topic, 3_000, seed=43, bad_ratio=0.2)
    write = BronzeSink.write
    failed: list[int] = []
    checkpoint = checkpoint_dir(settings, topic)

    def write_failing_batch_once(self, validated, **batch_info):
        if batch_info.get("spark_batch_id") == failing_batch and not failed:
            failed.append(failing_batch)
            for _ in validated:  # every row in, as when a commit fails at its end
                pass

            def marked_done() -> bool:  # and Spark marks the batch done meanwhile
                newest = checkpoint_newest_batch(checkpoint, topic)
                return newest is not None and newest.spark_batch_id >= failing_batch

            wait_until(marked_done, what=f"Spark's checkpoint marking batch {failing_batch} done")
            raise psycopg.OperationalError("injected: the connection was lost during the commit")
        return write(self, validated, **batch_info)

    monkeypatch.setattr(BronzeSink, "write", write_failing_batch_once)
    give_up = threading.Event()  # a stream that never sees itself idle is stopped, and fails below
    timer = threading.Timer(90, give_up.set)
    timer.start()
    try:
        summary = run_stream(
            spark,
            settings,
            database_url=database_url,
            kafka_bootstrap=kafka_bootstrap,
            until_idle=1.5,
            max_offsets_per_trigger=max_offsets,
            stop=give_up,
        )
    finally:
        timer.cancel()
    assert not give_up.is_set(), "the stream did not exit when idle"
    assert failed and summary.restarts == 1
    event_ids, rejects, duplicates = expected_bronze(produced.values)
    assert assert_every_batch_accounted(database_url) == (3_000, len(event_ids), rejects.total(), duplicates)
    assert {row[0] for row in fetch(database_url, "select event_id from bronze.clickstream_events")} == event_ids
    assert failing_batch in {row[0] for row in fetch(database_url, "select spark_batch_id from bronze.ingest_batches")}


def test_a_stop_while_the_last_commit_fails_ends_in_an_error_and_the_next_start_writes_that_batch(
    spark,
    shopstream_env: dict[str, str],
    database_url: str,
    kafka_bootstrap: str,
    topic: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stop (what SIGTERM/SIGINT set) arrives while the only batch's commit, behind Spark, fails.
    Spark's checkpoint marks the batch done and Bronze lacks it: the job must not exit as if it
    had finished, and the next start writes that batch from Kafka, once.
    The commit fails only once the query watch has acted on the stop (the query is gone from
    Spark's active ones), so the path tested is the stop's, whatever the machine's speed.
    A job that returned its summary on a stop without asking the writer fails here (tried)."""
    from streaming.bronze_sink import BronzeSink

    settings = settings_for(shopstream_env)
    produced = produce_simulated(kafka_bootstrap, topic, 2_000, seed=44, bad_ratio=0.2)
    write = BronzeSink.write
    stop = threading.Event()
    checkpoint = checkpoint_dir(settings, topic)

    def write_failing_as_the_stop_comes(self, validated, **batch_info):
        for _ in validated:  # every row in; Spark marks the batch done; the stop; the commit fails
            pass
        wait_until(lambda: checkpoint_newest_batch(checkpoint, topic), what="Spark's checkpoint marking the batch done")
        stop.set()
        # This test's query is the only one in this process's SparkSession.
        wait_until(lambda: not spark.streams.active, what="the query watch stopping the query on the stop")
        raise psycopg.OperationalError("injected: the connection was lost during the commit")

    monkeypatch.setattr(BronzeSink, "write", write_failing_as_the_stop_comes)
    options = {"database_url": database_url, "kafka_bootstrap": kafka_bootstrap, "max_offsets_per_trigger": 10_000}
    with pytest.raises(StreamJobError, match=r"stopped with the last batch's commit failed \(injected.*next start"):
        run_stream(spark, settings, until_idle=60, stop=stop, **options)
    assert fetch(database_url, "select count(*) from bronze.ingest_batches") == [(0,)]
    assert checkpoint_newest_batch(checkpoint, topic) is not None  # Spark marked it done

    monkeypatch.setattr(BronzeSink, "write", write)
    summary = run_stream(spark, settings, until_idle=1.5, **options)
    assert summary.messages == 2_000
    event_ids, rejects, duplicates = expected_bronze(produced.values)
    assert assert_every_batch_accounted(database_url) == (2_000, len(event_ids), rejects.total(), duplicates)
    assert {row[0] for row in fetch(database_url, "select event_id from bronze.clickstream_events")} == event_ids


def test_replay_into_empty_bronze_then_again_adds_nothing(
    spark, shopstream_env: dict[str, str], database_url: str, kafka_bootstrap: str, topic: str
) -> None:
    batch = produce_simulated(kafka_bootstrap, topic, 3_000, seed=8, bad_ratio=0.2)
    settings = settings_for(shopstream_env)
    first = replay_topic(
        spark, settings, database_url=database_url, kafka_bootstrap=kafka_bootstrap, max_offsets_per_chunk=1_200
    )
    event_ids, rejects, duplicates = expected_bronze(batch.values)
    assert (first.messages, first.rows_written, first.rejects, first.duplicates) == (
        3_000,
        len(event_ids),
        rejects.total(),
        duplicates,
    )
    assert first.chunks >= 3
    assert fetch(database_url, "select distinct source from bronze.ingest_batches") == [("replay",)]
    second = replay_topic(spark, settings, database_url=database_url, kafka_bootstrap=kafka_bootstrap)
    assert (second.chunks, second.messages) == (0, 0)
    assert assert_every_batch_accounted(database_url) == (3_000, len(event_ids), rejects.total(), duplicates)


@pytest.mark.slow
def test_kill_9_mid_stream_then_restart_equals_an_uninterrupted_run(
    spark,
    shopstream_env: dict[str, str],
    database_url: str,
    admin_database_url: str,
    kafka_bootstrap: str,
    topic: str,
    spawn_process,
) -> None:
    # Six batches, the kill after the second: the size is not what is checked.
    total = 15_000
    produce_simulated(kafka_bootstrap, topic, total, seed=99, bad_ratio=0.1)
    # The topic is full before either run starts, so idle means drained: a second is enough.
    command = stream_command_line("--max-offsets-per-trigger", "2500", "--until-idle", "1")

    stream = spawn_process(command, env=shopstream_env, name="stream-killed")
    wait_until(
        lambda: fetch(database_url, "select count(*) from bronze.ingest_batches")[0][0] >= 2,
        what="second committed batch of the stream to be killed",
        timeout=600,
        interval=0.2,
        alive=stream,
    )
    os.killpg(stream.pid, signal.SIGKILL)  # the Python driver and Spark's JVM, mid-batch
    stream.wait(10)
    (consumed_before_restart,) = fetch(
        database_url, "select coalesce(sum(messages_consumed), 0) from bronze.ingest_batches"
    )
    assert 0 < consumed_before_restart[0] < total

    restarted = spawn_process(command, env=shopstream_env, name="stream-restarted")
    assert restarted.wait(180) == 0
    assert_every_batch_accounted(database_url)
    (consumed,) = fetch(database_url, "select sum(messages_consumed) from bronze.ingest_batches")
    assert consumed[0] == total

    # The uninterrupted reference: the same topic through the same transforms and sink, at once.
    reference_name = database.url_parts(database_url).database + "_ref"
    database.ensure_database(admin_database_url, reference_name)
    reference_url = database.with_database(admin_database_url, reference_name)
    try:
        migrate(reference_url)
        replay_topic(spark, settings_for(shopstream_env), database_url=reference_url, kafka_bootstrap=kafka_bootstrap)
        assert bronze_snapshot(database_url) == bronze_snapshot(reference_url)
    finally:
        database.drop_database(admin_database_url, reference_name)

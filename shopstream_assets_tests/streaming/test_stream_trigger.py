"""When micro-batches start: `shopstream stream --trigger N` reads a backlog one micro-batch per N-second slot,
not back to back; a paced stream (the default) gathers a trickle into one batch per maximum wait.

The stream runs in process on the session's SparkSession (`shopstream stream --trigger` passes the
option to ``run_stream(trigger_seconds=...)``). When each batch started is read from Spark's own
checkpoint (``offsets/<n>``: the batch's ``batchTimestampMs``), not from a clock of the test's.
"""

from __future__ import annotations

import itertools
import json
import threading
import time

import pytest

from shopstream.settings import Settings, load_settings
from shopstream_assets_tests.conftest import produce_events
from streaming.batch_writer import StreamSummary
from streaming.checkpoint import checkpoint_dir
from streaming.job import run_stream
from streaming.kafka_source import BatchPacing

TRIGGER_S = 4.0
# Spark takes a batch's timestamp a moment after its trigger fired.
TIMESTAMP_SLACK_S = 0.5


def test_a_trigger_spaces_the_batches_of_a_backlog(
    spark, shopstream_env: dict[str, str], database_url: str, kafka_bootstrap: str, topic: str
) -> None:
    """180 messages at most 60 a batch: three batches, one per 4-second slot.

    Spark's processing-time trigger fires at most once per slot of the interval: a batch that
    overruns its slot lets the next one start at once, but never two in one slot, so two batches
    apart always start more than one interval apart. Broken on purpose (the stream run without the
    trigger), this test failed at a load of 13 on 2 cores: the batches started 0, 2.4, 3.4 and 4.4 s
    in, the third 3.4 s after the first. On a box so loaded that each batch takes two seconds or
    more it cannot tell the two apart, but it never fails a working trigger.
    """
    sent = produce_events(kafka_bootstrap, topic, 180, seed=5)
    settings = load_settings(shopstream_env)

    summary = run_stream(
        spark,
        settings,
        database_url=database_url,
        kafka_bootstrap=kafka_bootstrap,
        trigger_seconds=TRIGGER_S,
        until_idle=1,
        max_offsets_per_trigger=60,
    )

    assert summary.messages == sent and summary.batches >= 3
    started_s = _batch_start_seconds(settings, topic)
    assert len(started_s) == summary.batches
    for earlier, later in zip(started_s, started_s[2:], strict=False):
        assert later - earlier > TRIGGER_S - TIMESTAMP_SLACK_S, started_s
    spanned = started_s[-1] - started_s[0]
    assert spanned > (len(started_s) - 2) * TRIGGER_S - TIMESTAMP_SLACK_S, started_s


MAX_WAIT_S = 2.0


def test_a_paced_stream_gathers_a_trickle_into_one_batch_per_max_wait(
    spark, shopstream_env: dict[str, str], database_url: str, kafka_bootstrap: str, topic: str
) -> None:
    """Fewer messages than ``min_messages`` wait: a batch starts only ``max_wait_seconds`` after the last one.

    Bursts of 5 messages every 0.3 s, far fewer than the 10,000 a batch would wait for, until
    Spark has started three batches: its checks every 0.1 s find data each time, yet the
    batches start at least the maximum wait apart (each batch's start from Spark's own offset
    log), and every message arrives. Without the pacing (``pacing=None``) each check that finds
    data starts a batch, as often as the bursts come.
    """
    settings = load_settings(shopstream_env)
    stop = threading.Event()
    summaries: list[StreamSummary] = []
    runner = threading.Thread(
        target=lambda: summaries.append(
            run_stream(
                spark,
                settings,
                database_url=database_url,
                kafka_bootstrap=kafka_bootstrap,
                until_idle=MAX_WAIT_S * 3,
                pacing=BatchPacing(min_messages=10_000, max_wait_seconds=MAX_WAIT_S, check_seconds=0.1),
                stop=stop,
            )
        )
    )
    sent = produce_events(kafka_bootstrap, topic, 5, seed=1)
    runner.start()
    try:
        # However slow the machine, the bursts last until the third batch has started.
        deadline = time.monotonic() + 300
        seed = 2
        while len(_batch_start_seconds(settings, topic)) < 3 and time.monotonic() < deadline and runner.is_alive():
            sent += produce_events(kafka_bootstrap, topic, 5, seed=seed)
            seed += 1
            time.sleep(0.3)
    finally:
        runner.join(timeout=300)
        stop.set()
        runner.join()

    [summary] = summaries
    assert summary.messages == sent and summary.batches >= 3
    started_s = _batch_start_seconds(settings, topic)
    assert len(started_s) == summary.batches
    for earlier, later in itertools.pairwise(started_s):
        assert later - earlier > MAX_WAIT_S - TIMESTAMP_SLACK_S, started_s


def test_a_pacing_never_waits_for_more_messages_than_a_batch_may_hold() -> None:
    pacing = BatchPacing(min_messages=500, max_wait_seconds=1.5, check_seconds=0.1)

    assert pacing.source_options(60) == {"minOffsetsPerTrigger": "60", "maxTriggerDelay": "1500ms"}
    assert pacing.source_options(250_000)["minOffsetsPerTrigger"] == "500"
    for wrong in (
        {"min_messages": 0},
        {"max_wait_seconds": 0},
        {"check_seconds": 0},
        {"max_wait_seconds": 1.0, "check_seconds": 2.0},
    ):
        with pytest.raises(ValueError):
            BatchPacing(**wrong)  # type: ignore[arg-type]


def _batch_start_seconds(settings: Settings, topic: str) -> list[float]:
    """When Spark started each batch, from its offset log (``batchTimestampMs``)."""
    offsets = checkpoint_dir(settings, topic) / "offsets"
    if not offsets.is_dir():
        return []
    return [
        json.loads((offsets / name).read_text().splitlines()[1])["batchTimestampMs"] / 1000
        for name in sorted((entry.name for entry in offsets.iterdir() if entry.name.isdigit()), key=int)
    ]

"""`shopstream stream --trigger N`: a backlog is read one micro-batch per N-second slot, not back to back.

The stream runs in process on the session's SparkSession (`shopstream stream --trigger` passes the
option to ``run_stream(trigger_seconds=...)``). When each batch started is read from Spark's own
checkpoint (``offsets/<n>``: the batch's ``batchTimestampMs``), not from a clock of the test's.
"""

from __future__ import annotations

import json

from shopstream.settings import load_settings
from shopstream_assets_tests.conftest import produce_events
from streaming.checkpoint import checkpoint_dir
from streaming.job import run_stream

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
    offsets = checkpoint_dir(settings, topic) / "offsets"
    started_s = [
        json.loads((offsets / name).read_text().splitlines()[1])["batchTimestampMs"] / 1000
        for name in sorted((entry.name for entry in offsets.iterdir() if entry.name.isdigit()), key=int)
    ]
    assert len(started_s) == summary.batches
    for earlier, later in zip(started_s, started_s[2:], strict=False):
        assert later - earlier > TRIGGER_S - TIMESTAMP_SLACK_S, started_s
    spanned = started_s[-1] - started_s[0]
    assert spanned > (len(started_s) - 2) * TRIGGER_S - TIMESTAMP_SLACK_S, started_s

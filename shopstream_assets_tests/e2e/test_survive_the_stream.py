"""Issue 30, items 1 and 5, through a real topic, a real `shopstream stream` and the real dbt build.

1. No header stops the stream: the issue's scenario (good events, then the odd ``sent_at_ms``
   values on a good event and on the value ``x``, then good events) once left batch 0 planned
   and never committed; now every message is written or rejected and sent_at is null where the
   header is not a send time.
2. Accepted means Gold can hold it: one event at each accepted extreme (every string at its
   limit in 4-byte characters, event_timestamp at both edges of its window, the largest price
   and quantity) goes through the stream, and the dbt build of every model passes and equals
   the references. Before the limits, a 4,000-character country failed every dbt run.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shopstream_assets_tests.e2e.helpers import (
    CLI,
    Report,
    check_bronze_equals_delivered,
    check_gold_consistent,
    check_silver_and_gold_match,
    fetch,
    read_topic,
)
from shopstream_assets_tests.e2e.hostile_json import ISSUE_SENT_AT_VALUES
from shopstream_assets_tests.e2e.kafka_records import check_each_message, produce_records, read_records
from shopstream_assets_tests.streaming.conftest import good_event
from streaming.events import (
    EARLIEST_EVENT_TIME,
    LENGTH_LIMITS,
    MAX_AHEAD_OF_BROKER,
    MAX_PRICE,
    MAX_QUANTITY,
    SENT_AT_HEADER,
    encode_event,
    validate_message,
)
from streaming.simulator import Simulator

STREAM_TIMEOUT_S = 420


def run_stream_until_idle(report: Report, shopstream_env: dict[str, str], spawn_process: Any, name: str) -> None:
    # Every message is on the topic before the stream starts, so idle means drained: a second is enough.
    stream = spawn_process([*CLI, "stream", "--until-idle", "1"], env=shopstream_env, name=name)
    report.tried("ran `shopstream stream --until-idle 1`")
    exit_code = stream.wait(STREAM_TIMEOUT_S)
    report.held("the stream exited cleanly, every batch committed", exit_code == 0, f"exit {exit_code}")


def test_odd_sent_at_headers_on_good_and_broken_messages_never_stop_the_stream(
    shopstream_env: dict[str, str], database_url: str, kafka_bootstrap: str, topic: str, spawn_process: Any
) -> None:
    report = Report("issue 30: odd sent_at_ms headers between good events")
    batch = Simulator(seed=30, bad_ratio=0.0).take(4_000 + len(ISSUE_SENT_AT_VALUES))
    producer_header = [(SENT_AT_HEADER, str(int(time.time() * 1000)).encode())]
    before, odd_events, after = batch.values[:2_000], batch.values[2_000:2_005], batch.values[2_005:]
    values = [*before, *odd_events, *[b"x"] * len(ISSUE_SENT_AT_VALUES), *after]
    odd_headers = [[(SENT_AT_HEADER, value)] for value in ISSUE_SENT_AT_VALUES]
    headers = [*[producer_header] * 2_000, *odd_headers, *odd_headers, *[producer_header] * 2_000]
    keys = [*batch.keys[:2_005], *(b"odd-%d" % index for index in range(5)), *batch.keys[2_005:]]
    produce_records(kafka_bootstrap, topic, values, headers, keys=keys)
    report.tried(f"produced 2,000 good events, {2 * len(ISSUE_SENT_AT_VALUES)} with odd headers, 2,000 good")
    run_stream_until_idle(report, shopstream_env, spawn_process, "odd-headers-stream")

    state = check_bronze_equals_delivered(report, database_url, topic, read_topic(kafka_bootstrap, topic))
    report.held("all 4,010 messages consumed", state.consumed == len(values), f"{state.consumed}")
    report.held("4,005 events written", state.rows_written == 4_005, f"{state.rows_written}")
    report.held("the five x's rejected as malformed_json", dict(state.rejects) == {"malformed_json": 5})
    check_each_message(report, database_url, topic, read_records(kafka_bootstrap, topic))
    ((null_sent_at, with_sent_at),) = fetch(
        database_url,
        "select count(*) filter (where sent_at is null), count(sent_at) from bronze.clickstream_events"
        " where kafka_topic = %s",
        (topic,),
    )
    report.held("the five odd-header events are stored with a null sent_at", null_sent_at == len(odd_events))
    report.held("every other event has its send time", with_sent_at == 4_000, f"{with_sent_at}")
    ((reject_sent_at,),) = fetch(
        database_url, "select count(sent_at) from bronze.clickstream_rejects where kafka_topic = %s", (topic,)
    )
    report.held("the odd-header rejects have a null sent_at", reject_sent_at == 0, f"{reject_sent_at}")
    report.finish()


def wide_text(length: int, salt: int) -> str:
    """``length`` distinct-looking 4-byte UTF-8 characters (CJK Extension B): nothing a btree can compress."""
    return "".join(chr(0x20000 + (index * 7919 + salt * 104_729) % 0xA6D0) for index in range(length))


def extreme_events(record_time: datetime) -> list[dict[str, Any]]:
    """One event per accepted extreme, each on its own ids (and a purchase, so revenue counts)."""
    limits = dict(LENGTH_LIMITS)
    widest = {
        name: wide_text(limit, salt)
        for salt, (name, limit) in enumerate(limits.items())
        if name not in ("event_type", "event_timestamp")
    }
    moment = record_time.replace(microsecond=0)
    cases: list[dict[str, Any]] = [
        {**widest, "event_type": "purchase", "quantity": 1},
        {**widest, "event_type": "page_view", "quantity": None, "event_id": wide_text(256, 99)},
        {"event_timestamp": EARLIEST_EVENT_TIME.isoformat().replace("+00:00", "Z")},
        {"event_timestamp": (moment + MAX_AHEAD_OF_BROKER).isoformat().replace("+00:00", "Z")},
        {"product_price": MAX_PRICE, "quantity": MAX_QUANTITY},
        {"product_price": 0, "quantity": MAX_QUANTITY, "event_type": "add_to_cart"},
    ]
    events = []
    for index, case in enumerate(cases):
        fields = {"event_id": f"EVT_extreme_{index}", "session_id": f"SESSION_extreme_{index}", **case}
        events.append(good_event(**{"event_timestamp": moment.isoformat().replace("+00:00", "Z"), **fields}))
    return events


def test_an_event_at_each_accepted_extreme_reaches_gold_and_dbt_passes(
    shopstream_env: dict[str, str],
    database_url: str,
    kafka_bootstrap: str,
    topic: str,
    spawn_process: Any,
    tmp_path: Path,
) -> None:
    report = Report("issue 30: one event at each accepted extreme, through the stream and the dbt build")
    # The records carry this timestamp (CreateTime), so the newest event is exactly a day after it.
    record_time = datetime.now(UTC).replace(microsecond=0)
    record_ms = int(record_time.timestamp() * 1000)
    events = extreme_events(record_time)
    values = [encode_event(event) for event in events]
    header = [(SENT_AT_HEADER, str(record_ms).encode())]
    produce_records(
        kafka_bootstrap,
        topic,
        values,
        [header] * len(values),
        keys=[b"extreme"] * len(values),
        timestamp_ms=record_ms,
    )
    records = read_records(kafka_bootstrap, topic)
    report.held(
        "the reference accepts every extreme, given its record's timestamp",
        all(validate_message(record.value, record.timestamp).accepted for record in records),
        str([validate_message(record.value, record.timestamp) for record in records]),
    )
    report.tried(f"produced {len(values)} events at the extremes (strings of up to 4,000 bytes, 2000-01-01, +1 day)")
    run_stream_until_idle(report, shopstream_env, spawn_process, "extremes-stream")
    state = check_bronze_equals_delivered(report, database_url, topic, read_topic(kafka_bootstrap, topic))
    report.held("every extreme event is in Bronze", state.rows_written == len(values), f"{state.rows_written}")
    report.held(
        "the newest event is exactly at the window's end",
        {record.timestamp for record in records} == {record_time},
        str({record.timestamp for record in records}),
    )
    report.tried("ran the real dbt build of every model")
    check_gold_consistent(report, database_url, tmp_path / "dbt-target")
    check_silver_and_gold_match(report, database_url, tmp_path)
    ((longest_country,),) = fetch(database_url, "select max(octet_length(country)) from gold.mart_product_daily")
    report.held(
        "Gold holds the widest key (a country of 512 bytes)",
        longest_country == 4 * dict(LENGTH_LIMITS)["country"],
        str(longest_country),
    )
    report.finish()

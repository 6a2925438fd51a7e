"""Shared by the end-to-end tests: hostile JSON, expected Bronze, Bronze/Gold accounting, reports.

Expectations come from the pure-Python reference rules (``streaming.events.validate_message``)
applied to what Kafka really holds, never from the code under test.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from shopstream import database
from shopstream.kafka_admin import end_offsets
from shopstream_assets_tests.dbt.reference_checks import SilverGoldCheck, check_silver_and_gold
from shopstream_assets_tests.e2e.dbt_build import dbt_build
from streaming.events import RejectReason, decode_json, validate_message

VALID_REASONS = frozenset(reason.value for reason in RejectReason)
# PostgreSQL text cannot hold U+0000; the Bronze sink stores U+FFFD instead (bronze_sink._NUL).
NUL, NUL_REPLACEMENT = "\x00", "\ufffd"


def nul_replaced(text: str) -> str:
    return text.replace(NUL, NUL_REPLACEMENT)


# ---------------------------------------------------------------------------------------
# What Bronze should hold, by the reference rules


@dataclass
class Expected:
    """Bronze after ``messages`` (in Kafka order) went through the stream, by the Python rules."""

    messages: int = 0
    event_ids: set[str] = field(default_factory=set)
    rejects: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    accepted_by_position: dict[tuple[int, int], str] = field(default_factory=dict)
    rejected_positions: set[tuple[int, int]] = field(default_factory=set)

    def add(self, value: bytes | None, position: tuple[int, int] = (0, 0)) -> None:
        self.messages += 1
        verdict = validate_message(value)
        if verdict.reason is not None:
            self.rejects[verdict.reason.value] += 1
            self.rejected_positions.add(position)
            return
        assert value is not None
        event_id = nul_replaced(decode_json(value.decode())["event_id"])
        self.accepted_by_position[position] = event_id
        if event_id in self.event_ids:
            self.duplicates += 1
        self.event_ids.add(event_id)


def expected_bronze(messages: Iterable[tuple[int, int, bytes | None]]) -> Expected:
    """From (partition, offset, value) triples."""
    expected = Expected()
    for partition, offset, value in messages:
        expected.add(value, (partition, offset))
    return expected


def read_topic(bootstrap: str, topic: str, *, timeout: float = 120) -> list[tuple[int, int, bytes | None]]:
    """Every message of ``topic`` as (partition, offset, value), read back from the broker."""
    highs = end_offsets(bootstrap, topic, timeout=30)
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "e2e-read-back", "enable.auto.commit": False, "log_level": 0}
    )
    messages: list[tuple[int, int, bytes | None]] = []
    try:
        consumer.assign([TopicPartition(topic, partition, 0) for partition in highs])
        remaining = sum(highs.values())
        deadline = time.monotonic() + timeout
        while remaining > 0:
            assert time.monotonic() < deadline, f"read {len(messages)} of {sum(highs.values())} messages back"
            for message in consumer.consume(10_000, timeout=1):
                if message.error() is None and message.offset() < highs[message.partition()]:
                    messages.append((message.partition(), message.offset(), message.value()))
                    remaining -= 1
    finally:
        consumer.close()
    return sorted(messages, key=lambda item: (item[0], item[1]))


def topic_message_count(bootstrap: str, topic: str) -> int:
    # Fresh topics, nothing deleted by retention: the high watermarks are the counts.
    return sum(end_offsets(bootstrap, topic, timeout=30).values())


# ---------------------------------------------------------------------------------------
# What Bronze holds


def fetch(database_url: str, query: str, params: Sequence[Any] | None = None) -> list[tuple]:
    with database.connect(database_url) as conn:
        return conn.execute(query, params).fetchall()


@dataclass(frozen=True)
class BronzeState:
    event_ids: set[str]
    event_rows: int
    rejects: Counter[str]
    reject_rows: int
    rejected_positions: set[tuple[int, int]]
    accepted_positions: set[tuple[int, int]]
    batches: int
    unbalanced_batches: int
    consumed: int
    rows_written: int
    ledger_rejects: int
    duplicates: int


def bronze_state(database_url: str, topic: str) -> BronzeState:
    events = fetch(
        database_url,
        "select event_id, kafka_partition, kafka_offset from bronze.clickstream_events where kafka_topic = %s",
        (topic,),
    )
    rejects = fetch(
        database_url,
        "select reason, kafka_partition, kafka_offset from bronze.clickstream_rejects where kafka_topic = %s",
        (topic,),
    )
    ((batches, unbalanced, consumed, written, rejected, duplicates),) = fetch(
        database_url,
        "select count(*), count(*) filter (where messages_consumed <> rows_written + rejects + duplicates),"
        " coalesce(sum(messages_consumed), 0), coalesce(sum(rows_written), 0), coalesce(sum(rejects), 0),"
        " coalesce(sum(duplicates), 0) from bronze.ingest_batches where kafka_topic = %s",
        (topic,),
    )
    return BronzeState(
        event_ids={row[0] for row in events},
        event_rows=len(events),
        rejects=Counter(row[0] for row in rejects),
        reject_rows=len(rejects),
        rejected_positions={(row[1], row[2]) for row in rejects},
        accepted_positions={(row[1], row[2]) for row in events},
        batches=batches,
        unbalanced_batches=unbalanced,
        consumed=consumed,
        rows_written=written,
        ledger_rejects=rejected,
        duplicates=duplicates,
    )


def check_bronze_equals_delivered(
    report: Report, database_url: str, topic: str, delivered: Sequence[tuple[int, int, bytes | None]]
) -> BronzeState:
    """Bronze equals what Kafka holds: every message once, as a row, a reject (with reason) or a duplicate."""
    expected = expected_bronze(delivered)
    state = bronze_state(database_url, topic)
    report.held(
        "sum(messages_consumed) = messages in the topic",
        state.consumed == len(delivered),
        f"{state.consumed:,} vs {len(delivered):,}",
    )
    report.held("every batch: consumed = rows + rejects + duplicates", state.unbalanced_batches == 0)
    report.held(
        "ledger rows/rejects = table rows",
        (state.rows_written, state.ledger_rejects) == (state.event_rows, state.reject_rows),
        f"{state.rows_written:,}/{state.ledger_rejects:,} vs {state.event_rows:,}/{state.reject_rows:,}",
    )
    report.held(
        "Bronze event_ids = accepted event_ids delivered (no loss, no extra)",
        state.event_ids == expected.event_ids,
        f"{len(state.event_ids):,} vs {len(expected.event_ids):,}; missing {len(expected.event_ids - state.event_ids)},"
        f" extra {len(state.event_ids - expected.event_ids)}",
    )
    report.held("no duplicate event rows", state.event_rows == len(state.event_ids))
    report.held(
        "duplicates counted = duplicates delivered",
        state.duplicates == expected.duplicates,
        f"{state.duplicates} vs {expected.duplicates}",
    )
    report.held("every reject has a known reason", set(state.rejects) <= VALID_REASONS, str(sorted(state.rejects)))
    report.held(
        "rejects by reason = the reference rules'", state.rejects == expected.rejects, _counter_diff(state, expected)
    )
    report.held(
        "every message's Kafka position is in Bronze once (row, reject or a duplicate's id)",
        state.rejected_positions == expected.rejected_positions
        and state.accepted_positions <= set(expected.accepted_by_position),
    )
    return state


def _counter_diff(state: BronzeState, expected: Expected) -> str:
    keys = sorted(set(state.rejects) | set(expected.rejects))
    return ", ".join(
        f"{key} {state.rejects[key]}/{expected.rejects[key]}"
        for key in keys
        if state.rejects[key] != expected.rejects[key]
    )


# ---------------------------------------------------------------------------------------
# Gold against Bronze


# Per UTC day, straight from Bronze with the marts' definitions (stg_clickstream_events:
# line revenue = price x quantity on purchases, rounded per line to cents).
GOLD_FROM_BRONZE = """
select
    (event_timestamp at time zone 'UTC')::date as metric_date,
    count(*) as events,
    count(*) filter (where event_type = 'page_view') as page_views,
    count(*) filter (where event_type = 'add_to_cart') as add_to_carts,
    count(*) filter (where event_type = 'purchase') as purchases,
    coalesce(sum(quantity) filter (where event_type = 'purchase'), 0) as units_sold,
    coalesce(sum((product_price * quantity)::numeric(18, 2)) filter (where event_type = 'purchase'), 0)
        as revenue,
    count(distinct user_id) as unique_users
from bronze.clickstream_events
group by 1
order by 1
"""
GOLD_DAILY = """
select metric_date, events, page_views, add_to_carts, purchases, units_sold, revenue, unique_users
from gold.mart_daily_metrics
order by 1
"""


def check_gold_consistent(report: Report, database_url: str, target_path: Path) -> float:
    """Run the real dbt build of every model; gold.mart_daily_metrics' days must equal Bronze's counts."""
    result = dbt_build(database_url, target_path)
    report.held(f"dbt build succeeded ({result.seconds:.1f} s)", result.success, result.errors)
    check_gold_equals_bronze(report, database_url)
    return result.seconds


def check_silver_and_gold_match(report: Report, database_url: str, work_dir: Path, when: str = "") -> SilverGoldCheck:
    """Every Silver and Gold relation, as it stands (no dbt run on it here), equals a full refresh
    built elsewhere from the same Bronze and the independent pandas reference, row for row."""
    suffix = f" {when}" if when else ""
    check = check_silver_and_gold(database_url, work_dir)
    for relation in check.relations:
        for diff in (check.against_full_refresh[relation.name], check.against_pandas[relation.name]):
            report.held(f"{relation.name} = {diff.expected_label}{suffix}", not diff, diff.text())
    report.note(f"compared {len(check.relations)} Silver and Gold relations twice in {check.timing()}")
    return check


def check_gold_equals_bronze(report: Report, database_url: str, when: str = "") -> None:
    """gold.mart_daily_metrics as it stands (no dbt run here) against counts straight from Bronze."""
    suffix = f" {when}" if when else ""
    gold = fetch(database_url, GOLD_DAILY)
    bronze = fetch(database_url, GOLD_FROM_BRONZE)
    report.held(
        "gold.mart_daily_metrics = counts from Bronze, every day" + suffix,
        gold == bronze,
        f"{len(gold)} gold days vs {len(bronze)} bronze days; first gold {gold[:1]} bronze {bronze[:1]}",
    )
    ((sessions, distinct_sessions),) = fetch(
        database_url,
        "select (select coalesce(sum(sessions), 0) from gold.mart_daily_metrics),"
        " (select count(distinct session_id) from bronze.clickstream_events)",
    )
    report.held(
        "Gold sessions = distinct Bronze sessions" + suffix,
        sessions == distinct_sessions,
        f"{sessions} vs {distinct_sessions}",
    )


# ---------------------------------------------------------------------------------------
# Reports: what was tried, what held


class Report:
    """Collects what a test tried and what held, prints it (pytest -s) and fails on the first miss."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.lines: list[str] = []
        self.failures: list[str] = []
        self.began = time.monotonic()

    def tried(self, what: str) -> None:
        self.lines.append(f"  tried  [{time.monotonic() - self.began:6.1f} s] {what}")

    def held(self, claim: str, ok: bool, detail: str = "") -> bool:
        mark = "held " if ok else "FAILED"
        self.lines.append(f"  {mark} {claim}" + (f" ({detail})" if detail and not ok else ""))
        if not ok:
            self.failures.append(f"{claim}: {detail}")
        return ok

    def note(self, what: str) -> None:
        self.lines.append(f"  note   {what}")

    def finish(self) -> None:
        print(f"\n== {self.title} ({time.monotonic() - self.began:.0f} s)", *self.lines, sep="\n")
        assert not self.failures, "\n".join(self.failures)


# ---------------------------------------------------------------------------------------
# Processes and polling


CLI = [sys.executable, "-m", "shopstream_cli.cli"]


def wait_for(
    condition: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.25, alive: Any = None
) -> Any:
    """Poll ``condition`` until truthy; fail after ``timeout`` s, or early if process ``alive`` exited."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if alive is not None and alive.poll() is not None:
            raise AssertionError(f"process exited ({alive.returncode}) while waiting for {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def kill_group(process: Any) -> None:
    """kill -9 the process and everything in its group (the Python driver and Spark's JVM)."""
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(30)


def manifest_positions(path: Path) -> tuple[set[tuple[int, int]], int]:
    """({(partition, offset)} delivered, number failed) from `shopstream produce --manifest`."""
    delivered: set[tuple[int, int]] = set()
    failed = 0
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if record["error"] is None:
            delivered.add((record["partition"], record["offset"]))
        else:
            failed += 1
    return delivered, failed

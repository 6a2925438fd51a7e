"""dbt_project against real PostgreSQL and real dbt: Gold = pandas, incremental = full refresh.

Bronze is filled with simulator messages (late, duplicate and broken ones included) through
the stream's transactional writer, validated by the pure-Python reference rules, so no
Kafka or Spark is needed. dbt starts in seconds, so one test shares its builds across
many assertions.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from shopstream import database
from shopstream_assets_tests.dbt.reference_checks import assert_silver_and_gold_match, diff_snapshots, snapshot
from shopstream_cli.bench.dbt import dbt_benchmark_command, dbt_environment, run_dbt
from streaming.bronze_load import KafkaPositions, write_messages
from streaming.events import encode_event, format_timestamp
from streaming.simulator import Simulator

pytestmark = pytest.mark.timeout(600)

# Starts 20 min before midnight at 2 events/s, so sessions straddle two UTC days.
SIMULATION_START = datetime(2026, 3, 1, 23, 40, tzinfo=UTC)
# The names the dashboard and the Dagster asset keys rely on (the comparisons themselves take
# every relation from dbt's manifest: reference_checks.model_relations).
SILVER_AND_GOLD = (
    "silver.stg_clickstream_events",
    "silver.int_user_sessions",
    "gold.mart_daily_metrics",
    "gold.mart_daily_segment_metrics",
    "gold.mart_daily_segment_sessions",
    "gold.mart_conversion_funnel",
    "gold.mart_product_performance",
    "gold.mart_product_daily",
    "gold.mart_user_behavior",
    "gold.mart_hot_leads",
)
# A log of runs, not a function of the data: compared on its own, not by full refresh.
REFRESH_LOG = "gold.refresh_log"


class Bronze:
    """Writes simulator batches and hand-made late events into one test database."""

    def __init__(self, database_url: str) -> None:
        self.conn = database.connect(database_url, autocommit=True)
        self.positions = KafkaPositions("t-dbt")

    def write(self, keys: Sequence[bytes], values: Sequence[bytes]) -> int | None:
        return write_messages(self.conn, keys, values, self.positions)

    def write_events(self, events: Sequence[dict[str, Any]]) -> int | None:
        keys = [event["session_id"].encode() for event in events]
        return self.write(keys, [encode_event(event) for event in events])

    def query(self, statement: str) -> list[tuple[Any, ...]]:
        return self.conn.execute(statement).fetchall()

    def close(self) -> None:
        self.conn.close()


def _bronze_event(row: tuple[Any, ...], **changes: Any) -> dict[str, Any]:
    """A copy of a stored Bronze event (as the producer would send it) with ``changes``."""
    (event_id, moment, user_id, session_id, event_type, product_id, name, category, price,
     quantity, device, country) = row  # fmt: skip
    event = {
        "event_id": event_id,
        "event_timestamp": format_timestamp(moment),
        "user_id": user_id,
        "session_id": session_id,
        "event_type": event_type,
        "product_id": product_id,
        "product_name": name,
        "product_category": category,
        "product_price": float(price),
        "quantity": quantity,
        "device_type": device,
        "country": country,
        "schema_version": 1,
    }
    event.update(changes)
    return event


_EVENT_COLUMNS = (
    "event_id, event_timestamp, user_id, session_id, event_type, product_id, product_name,"
    " product_category, product_price, quantity, device_type, country"
)


def late_events(bronze: Bronze, tag: str) -> list[dict[str, Any]]:
    """Events that change the past: a session's start moved back across midnight, an
    abandoned cart bought an hour later, and a user-day's first event moved to another
    device and category."""
    made: list[dict[str, Any]] = []
    # The first event of a session that started after midnight, re-dated to 23:59:59.
    after_midnight = bronze.query(
        f"select {_EVENT_COLUMNS} from bronze.clickstream_events as e"
        " where event_timestamp >= date_trunc('day', (select max(event_timestamp)"
        "   from bronze.clickstream_events)) and event_type = 'page_view'"
        "   and not exists (select 1 from bronze.clickstream_events as earlier"
        "     where earlier.session_id = e.session_id and earlier.event_timestamp < e.event_timestamp)"
        " order by event_timestamp limit 1"
    )
    for row in after_midnight:
        midnight = row[1].astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        made.append(
            _bronze_event(
                row, event_id=f"EVT_late_start_{tag}", event_timestamp=format_timestamp(midnight - timedelta(seconds=1))
            )  # fmt: skip
        )
    # A purchase for the cart of a session that has a cart and no purchase yet.
    abandoned_cart = bronze.query(
        f"select {_EVENT_COLUMNS} from bronze.clickstream_events as e"
        " where event_type = 'add_to_cart' and not exists (select 1 from bronze.clickstream_events"
        "   as bought where bought.session_id = e.session_id and bought.event_type = 'purchase')"
        " order by event_timestamp, event_id limit 1"
    )
    for row in abandoned_cart:
        made.append(
            _bronze_event(
                row,
                event_id=f"EVT_late_purchase_{tag}",
                event_type="purchase",
                event_timestamp=format_timestamp(row[1] + timedelta(hours=1)),
            )  # fmt: skip
        )
    # A user's first event of a day, copied one second earlier on another device and for a
    # product of another category: the user-day and its session move to another segment.
    first_of_day = bronze.query(
        f"select {_EVENT_COLUMNS} from bronze.clickstream_events as e"
        " where event_type = 'page_view'"
        "   and event_timestamp - interval '1 second' >= date_trunc('day', event_timestamp at time zone 'UTC')"
        "     at time zone 'UTC'"
        "   and not exists (select 1 from bronze.clickstream_events as earlier"
        "     where earlier.user_id = e.user_id and earlier.event_timestamp < e.event_timestamp"
        "       and earlier.event_timestamp >= date_trunc('day', e.event_timestamp at time zone 'UTC')"
        "         at time zone 'UTC')"
        " order by event_timestamp desc, event_id limit 1"
    )
    for row in first_of_day:
        category, device = row[7], row[10]
        other_product = bronze.conn.execute(
            "select product_id, product_name, product_category, product_price from bronze.clickstream_events"
            " where product_category <> %s order by product_id limit 1",
            (category,),
        ).fetchone()
        made.append(
            _bronze_event(
                row,
                event_id=f"EVT_late_first_{tag}",
                event_timestamp=format_timestamp(row[1] - timedelta(seconds=1)),
                product_id=other_product[0],
                product_name=other_product[1],
                product_category=other_product[2],
                product_price=float(other_product[3]),
                device_type="Tablet" if device != "Tablet" else "Desktop",
            )
        )
    return made


def build_and_check_refresh_log(bronze: Bronze, env: dict[str, str], tmp_path: Path, *extra: str) -> None:
    """`dbt build`, then gold.refresh_log's newest row is this run: its start time and Gold's cursor."""
    runs_before = bronze.query(f"select count(*) from {REFRESH_LOG}")[0][0] if _has_refresh_log(bronze) else 0
    before = datetime.now(UTC)
    run_dbt(["build", *extra], env, target_path=tmp_path / "target").check()
    after = datetime.now(UTC)
    runs, refreshed_at, gold_batch_id = bronze.query(
        f"select (select count(*) from {REFRESH_LOG}), refreshed_at, gold_batch_id"
        f" from {REFRESH_LOG} order by refreshed_at desc limit 1"
    )[0]
    assert runs == runs_before + 1
    # dbt's run_started_at is taken when dbt starts, a moment after the subprocess launches.
    assert before - timedelta(seconds=1) <= refreshed_at <= after
    assert gold_batch_id == bronze.query("select max(batch_id) from silver.stg_clickstream_events")[0][0]


def _has_refresh_log(bronze: Bronze) -> bool:
    return bronze.query(f"select to_regclass('{REFRESH_LOG}') is not null")[0][0]


def test_gold_equals_pandas_and_incremental_equals_full_refresh(database_url: str, tmp_path: Path) -> None:
    env = dbt_environment(database_url)
    simulator = Simulator(1403, start=SIMULATION_START, events_per_second=2.0, bad_ratio=0.15)
    bronze = Bronze(database_url)
    try:
        # Batch 1, then build from nothing (the first run creates every table).
        batch = simulator.take(3_000)
        bronze.write(batch.keys, batch.values)
        build_and_check_refresh_log(bronze, env, tmp_path)

        # Batches 2-4: simulator messages (late, duplicates, rejects), hand-made late events
        # that move a session across midnight and turn an abandoned cart into a purchase,
        # and an exact re-send of stored messages; incremental builds in between.
        for step in range(3):
            batch = simulator.take(1_500)
            bronze.write(batch.keys, batch.values)
            bronze.write_events(late_events(bronze, tag=str(step)))
            bronze.write(batch.keys[:50], batch.values[:50])  # a producer retry: duplicates
            build_and_check_refresh_log(bronze, env, tmp_path)

        duplicates, late_starts, late_firsts = bronze.query(
            "select (select sum(duplicates) from bronze.ingest_batches),"
            " (select count(*) from bronze.clickstream_events where event_id like 'EVT_late_start_%'),"
            " (select count(*) from bronze.clickstream_events where event_id like 'EVT_late_first_%')"
        )[0]
        assert duplicates >= 150 and late_starts >= 1 and late_firsts == 3, "the scenario lacks late events"
        days = bronze.query("select count(*) from gold.mart_daily_metrics")[0][0]
        assert days == 2

        # Every relation the manifest lists = pandas = a full refresh built elsewhere from this Bronze.
        check = assert_silver_and_gold_match(database_url, tmp_path)
        print(f"full refresh elsewhere + pandas: {check.timing()}")
        relations = check.relations
        assert {relation.name for relation in relations} == set(SILVER_AND_GOLD)
        incremental = snapshot(bronze.conn, relations)

        # And in place: --full-refresh over the incremental tables changes nothing.
        build_and_check_refresh_log(bronze, env, tmp_path, "--full-refresh")
        full_refresh = snapshot(bronze.conn, relations)
        differences = diff_snapshots(incremental, full_refresh, relations, "after --full-refresh in place")
        assert not any(differences.values()), "\n".join(diff.text() for diff in differences.values() if diff)
        # The run log survives --full-refresh: one row per build.
        assert bronze.query(f"select count(distinct invocation_id) from {REFRESH_LOG}")[0][0] == 5
    finally:
        bronze.close()


def test_build_on_empty_bronze(database_url: str, tmp_path: Path) -> None:
    """No events: every model builds, unit tests and data tests pass, Gold is empty."""
    env = dbt_environment(database_url)
    result = run_dbt(["build"], env, target_path=tmp_path / "target").check()
    assert all(status in ("pass", "success") for status in result.node_status.values()), result.node_status
    with database.connect(database_url) as conn:
        for relation in SILVER_AND_GOLD:
            assert conn.execute(f"select count(*) from {relation}").fetchone() == (0,)
        # The run is logged; Gold holds no batch yet.
        assert conn.execute(f"select count(*), max(gold_batch_id) from {REFRESH_LOG}").fetchone() == (1, None)
    # And an incremental run on empty tables is a no-op, not an error.
    run_dbt(["run"], env, target_path=tmp_path / "target").check()


def test_relations_and_dagster_lineage(database_url: str, tmp_path: Path) -> None:
    """Relations are exactly silver.* / gold.*; the Bronze source maps onto the Bronze asset."""
    env = dbt_environment(database_url)
    run_dbt(["parse"], env, target_path=tmp_path / "target").check()
    manifest = json.loads((tmp_path / "target" / "manifest.json").read_text())
    models = {node["name"]: node["schema"] for node in manifest["nodes"].values() if node["resource_type"] == "model"}
    expected = {relation.split(".")[1]: relation.split(".")[0] for relation in [*SILVER_AND_GOLD, REFRESH_LOG]}
    assert models == expected
    source = manifest["sources"]["source.shopstream.bronze.clickstream_events"]
    assert source["meta"]["dagster"]["asset_key"] == ["bronze", "clickstream_events"]
    assert source["loaded_at_field"] == "ingested_at"
    undocumented = [
        f"{node['name']}.{column}"
        for node in manifest["nodes"].values()
        if node["resource_type"] == "model"
        for column, spec in node["columns"].items()
        if not spec.get("description")
    ]
    assert not undocumented
    assert all(node["description"] for node in manifest["nodes"].values() if node["resource_type"] == "model")


@pytest.mark.slow
def test_benchmark_small(admin_database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`shopstream bench dbt` end to end on small sizes; prints a table and the ratio."""
    dbt_benchmark_command(
        sizes="4000,8000", increment=500, events_per_second=100.0, bad_ratio=0.05,
        seed=7, chunk=2_000, database_url=admin_database_url, keep=False, repeats=2,
    )  # fmt: skip
    output = capsys.readouterr().out
    assert "| 4,000 |" in output and "| 8,000 |" in output
    # The median of two incremental runs, both shown.
    assert re.search(r"\| 4,000 \| [^|]+\| [^|]+\| \d+\.\d\d s \(\d+\.\d\d, \d+\.\d\d\) \|", output), output
    assert "incremental run: 8,000 rows costs" in output

"""dbt_project against real PostgreSQL and real dbt: Silver and Gold = pandas, incremental = full refresh.

Bronze is filled through the stream's transactional writer, validated by the pure-Python
reference rules, so no Kafka or Spark is needed: seventy days of returning shoppers
(``history.py``: gaps of 7, 14 and 30+ days, users on each lifecycle threshold), then two
days of simulator messages (late, duplicate and broken ones included) and hand-made late
events (``scenario.py``). dbt starts in seconds, so one test shares its builds across many
assertions.

Shown to fail (issue 29), then reverted: with mart_user_behavior's Dormant rule moved from
``recency_days > 14`` to ``>= 14`` the pandas comparison fails on the users 14 days away (the
dbt unit tests pass); with mart_product_daily left out of incremental updates, the second
``dbt build`` already fails on the data test assert_revenue_reconciles.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from shopstream import database
from shopstream_assets_tests.dbt.dbt_runs import prepared_parse, run_dbt_in_process
from shopstream_assets_tests.dbt.history import HISTORY_DAYS, history_events, weekly_batches
from shopstream_assets_tests.dbt.reference_checks import assert_silver_and_gold_match, diff_snapshots, snapshot
from shopstream_assets_tests.dbt.scenario import Bronze, late_events
from shopstream_cli.bench.dbt import dbt_benchmark_command
from streaming.simulator import Simulator

pytestmark = pytest.mark.timeout(600)

# Starts 20 min before midnight at 2 events/s, so sessions straddle two UTC days.
SIMULATION_START = datetime(2026, 3, 1, 23, 40, tzinfo=UTC)
# The history ends on the simulator's second day, the data's as-of day.
AS_OF = date(2026, 3, 2)
HISTORY_SEED = 2911
LATE_WEEK = 4  # of the history's weeks (oldest first), written with batch 3: weeks late
MARTS_YML = Path(__file__).resolve().parents[2] / "dbt_project" / "models" / "marts" / "_marts.yml"
# The names the dashboard and the Dagster asset keys rely on (the comparisons themselves take
# every relation from dbt's manifest: reference_checks.model_relations).
SILVER_AND_GOLD = (
    "silver.stg_clickstream_events",
    "silver.int_user_sessions",
    "silver.int_user_activity",
    "silver.int_rfm_boundaries",
    "silver.int_hot_lead_components",
    "gold.mart_daily_metrics",
    "gold.mart_daily_segment_metrics",
    "gold.mart_daily_segment_sessions",
    "gold.mart_hourly_segment_metrics",
    "gold.mart_hourly_segment_sessions",
    "gold.mart_conversion_funnel",
    "gold.mart_product_performance",
    "gold.mart_product_daily",
    "gold.mart_user_behavior",
    "gold.mart_hot_leads",
)
# A log of runs, not a function of the data: compared on its own, not by full refresh.
REFRESH_LOG = "gold.refresh_log"
# dbt's unit tests run each model's SQL on the fixed rows of its _*.yml, whatever Bronze holds:
# the first build runs them, the builds after it (same SQL, same rows) leave them out.
UNIT_TESTS_RAN = ("--exclude-resource-type", "unit_test")


def build_and_check_refresh_log(bronze: Bronze, database_url: str, tmp_path: Path, *extra: str) -> None:
    """`dbt build`, then gold.refresh_log's newest row is this run: its start time and Gold's cursor."""
    runs_before = bronze.query(f"select count(*) from {REFRESH_LOG}")[0][0] if _has_refresh_log(bronze) else 0
    before = datetime.now(UTC)
    run_dbt_in_process(["build", *extra], database_url, tmp_path / "target")
    after = datetime.now(UTC)
    runs, refreshed_at, gold_batch_id = bronze.query(
        f"select (select count(*) from {REFRESH_LOG}), refreshed_at, gold_batch_id"
        f" from {REFRESH_LOG} order by refreshed_at desc limit 1"
    )[0]
    assert runs == runs_before + 1
    # dbt's run_started_at is taken when dbt starts, a moment after it is invoked.
    assert before - timedelta(seconds=1) <= refreshed_at <= after
    assert gold_batch_id == bronze.query("select max(batch_id) from silver.stg_clickstream_events")[0][0]


def _has_refresh_log(bronze: Bronze) -> bool:
    return bronze.query(f"select to_regclass('{REFRESH_LOG}') is not null")[0][0]


@pytest.mark.slow
def test_gold_equals_pandas_and_incremental_equals_full_refresh(database_url: str, tmp_path: Path) -> None:
    simulator = Simulator(1403, start=SIMULATION_START, events_per_second=2.0, bad_ratio=0.15)
    bronze = Bronze(database_url)
    try:
        # Seventy days of history, a week per batch (one week held back), and simulator batch 1;
        # then build from nothing (the first run creates every table).
        weeks = weekly_batches(history_events(HISTORY_SEED, AS_OF), AS_OF)
        late_week = weeks.pop(LATE_WEEK)
        for week in weeks:
            bronze.write_events(week)
        batch = simulator.take(3_000)
        bronze.write(batch.keys, batch.values)
        build_and_check_refresh_log(bronze, database_url, tmp_path)

        # Batches after: simulator messages (late, duplicates, rejects), hand-made late events
        # that move a session across midnight and turn an abandoned cart (weeks old) into a
        # purchase, an exact re-send of stored messages, and once a week of history weeks late;
        # incremental builds in between.
        for step in range(3):
            batch = simulator.take(1_500)
            bronze.write(batch.keys, batch.values)
            bronze.write_events(late_events(bronze, tag=str(step)))
            bronze.write(batch.keys[:50], batch.values[:50])  # a producer retry: duplicates
            if step == 1:
                bronze.write_events(late_week)
            build_and_check_refresh_log(bronze, database_url, tmp_path, *UNIT_TESTS_RAN)

        duplicates, late_starts, late_firsts = bronze.query(
            "select (select sum(duplicates) from bronze.ingest_batches),"
            " (select count(*) from bronze.clickstream_events where event_id like 'EVT_late_start_%'),"
            " (select count(*) from bronze.clickstream_events where event_id like 'EVT_late_first_%')"
        )[0]
        assert duplicates >= 150 and late_starts >= 1 and late_firsts == 3, "the scenario lacks late events"
        days = bronze.query("select count(*) from gold.mart_daily_metrics")[0][0]
        assert days == HISTORY_DAYS
        assert_history_means_something(bronze)

        # Every relation the manifest lists = pandas = a full refresh built elsewhere from this Bronze.
        check = assert_silver_and_gold_match(database_url, tmp_path)
        print(f"full refresh elsewhere + pandas: {check.timing()}")
        relations = check.relations
        assert {relation.name for relation in relations} == set(SILVER_AND_GOLD)
        incremental = snapshot(bronze.conn, relations)

        # And in place: --full-refresh over the incremental tables changes nothing.
        build_and_check_refresh_log(bronze, database_url, tmp_path, "--full-refresh", *UNIT_TESTS_RAN)
        full_refresh = snapshot(bronze.conn, relations)
        differences = diff_snapshots(incremental, full_refresh, relations, "after --full-refresh in place")
        assert not any(differences.values()), "\n".join(diff.text() for diff in differences.values() if diff)
        # The run log survives --full-refresh: one row per build.
        assert bronze.query(f"select count(distinct invocation_id) from {REFRESH_LOG}")[0][0] == 5
    finally:
        bronze.close()


def accepted_values(column: str) -> set[str]:
    """The values _marts.yml accepts for a column of mart_user_behavior (the names, from the models)."""
    marts = yaml.safe_load(MARTS_YML.read_text())["models"]
    (model,) = [model for model in marts if model["name"] == "mart_user_behavior"]
    (spec,) = [spec for spec in model["columns"] if spec["name"] == column]
    (test,) = [test for test in spec["data_tests"] if isinstance(test, dict) and "accepted_values" in test]
    return set(test["accepted_values"]["arguments"]["values"])


def assert_history_means_something(bronze: Bronze) -> None:
    """What the scenario must produce for the comparisons to be about time: every lifecycle stage and
    RFM tier, hot leads whose cart is days old, returns after 7, 14 and 30+ days, purchases and
    abandoned carts on most days of the period."""
    stages = {row[0] for row in bronze.query("select distinct lifecycle_stage from gold.mart_user_behavior")}
    assert stages == accepted_values("lifecycle_stage") == {
        "Churned", "Dormant", "New", "Repeat Buyer", "Buyer", "Browser"
    }, stages  # fmt: skip
    tiers = {row[0] for row in bronze.query("select distinct rfm_tier from gold.mart_user_behavior")}
    assert tiers == accepted_values("rfm_tier") == {"Champion", "Loyal", "Potential", "At Risk", "Lost"}, tiers
    ((old_leads, oldest_lead),) = bronze.query(
        "select count(*) filter (where days_since_abandoned > 1), max(days_since_abandoned) from gold.mart_hot_leads"
    )
    assert old_leads >= 20 and oldest_lead > 30, (old_leads, oldest_lead)
    gaps = {
        row[0]
        for row in bronze.query(
            "select session_date - lag(session_date) over (partition by user_id order by session_start, session_id)"
            " from silver.int_user_sessions"
        )
        if row[0] is not None
    }
    assert {7, 14} <= gaps and max(gaps) >= 30, sorted(gaps)
    ((first_day, last_day, buying_days, abandoning_days),) = bronze.query(
        "select min(session_date), max(session_date), count(distinct session_date) filter (where purchased),"
        " count(distinct session_date) filter (where abandoned_cart) from silver.int_user_sessions"
    )
    assert (last_day - first_day).days >= 60 and last_day == AS_OF, (first_day, last_day)
    assert buying_days >= 60 and abandoning_days >= 60, (buying_days, abandoning_days)


def test_build_on_empty_bronze(database_url: str, tmp_path: Path) -> None:
    """No events: every model builds, unit tests and data tests pass, Gold is empty."""
    result = run_dbt_in_process(["build"], database_url, tmp_path / "target")
    assert all(status in ("pass", "success") for status in result.node_status.values()), result.node_status
    with database.connect(database_url) as conn:
        for relation in SILVER_AND_GOLD:
            assert conn.execute(f"select count(*) from {relation}").fetchone() == (0,)
        # The run is logged; Gold holds no batch yet.
        assert conn.execute(f"select count(*), max(gold_batch_id) from {REFRESH_LOG}").fetchone() == (1, None)
    # And an incremental run on empty tables is a no-op, not an error.
    run_dbt_in_process(["run"], database_url, tmp_path / "target")


def test_relations_and_dagster_lineage(database_url: str) -> None:
    """Relations are exactly silver.* / gold.*; the Bronze source maps onto the Bronze asset."""
    # `dbt parse`, as `shopstream up` runs it before Dagster starts (once per process and database).
    manifest = json.loads((prepared_parse(database_url) / "manifest.json").read_text())
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

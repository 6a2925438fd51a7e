"""The user marts' incremental runs against real dbt and PostgreSQL: a run rewrites the users its
batches touched and the users a moved quintile boundary rescores, no others, and gives what a
full refresh gives even when the batch moves every boundary. The hot leads' own components
likewise: a run re-decides the users it touched and the leads a moved boundary rescores, and
a lead who buys leaves.

Bronze: the seventy days of returning shoppers of ``history.py`` and an hour of simulator
traffic (as in ``test_dbt_project.py``), built once per module (a template database each test
gets a fresh copy of: ``history``); then small batches of hand-made sessions
of existing or new users, all on the as-of day before its newest session (a run that moves the
as-of day rewrites every user by design, so these keep it).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from psycopg import sql

from shopstream import database
from shopstream_assets_tests.dbt.conftest import dbt_database_name
from shopstream_assets_tests.dbt.dbt_runs import DbtRun, run_dbt_in_process
from shopstream_assets_tests.dbt.history import history_events, weekly_batches
from shopstream_assets_tests.dbt.reference_checks import assert_silver_and_gold_match
from shopstream_assets_tests.dbt.scenario import Bronze
from streaming.events import SCHEMA_VERSION, format_timestamp
from streaming.migrations import migrate
from streaming.shop import CATALOG
from streaming.simulator import Simulator

pytestmark = pytest.mark.timeout(900)

SIMULATION_START = datetime(2026, 3, 1, 23, 40, tzinfo=UTC)
AS_OF = date(2026, 3, 2)
# Before the history's own as-of-day visits (12:00-21:00) and after the simulator's hour.
BATCH_TIME = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
FALLBACK = "int_rfm_boundaries: counting all users again"
MEASURES = ("recency", "frequency", "monetary")


def build_history(database_url: str, target: Path) -> dict[int, int]:
    """Bronze's history and a first `dbt build`; returns where the next message of each partition goes."""
    bronze = Bronze(database_url)
    try:
        for week in weekly_batches(history_events(3011, AS_OF), AS_OF):
            bronze.write_events(week)
        batch = Simulator(1403, start=SIMULATION_START, events_per_second=2.0, population=600).take(4_000)
        bronze.write(batch.keys, batch.values)
    finally:
        bronze.close()
    run_dbt_in_process(["build"], database_url, target)
    return dict(bronze.positions.next_offsets)


@dataclass(frozen=True)
class History:
    """A test's own copy of the built history."""

    url: str
    next_offsets: dict[int, int]

    def bronze(self) -> Bronze:
        """A writer that goes on where the history's left off: its messages are new ones, not a replay
        of offsets Bronze already holds."""
        bronze = Bronze(self.url)
        bronze.positions.next_offsets = dict(self.next_offsets)
        return bronze


def copy_database(admin_url: str, source: str, copy: str) -> None:
    """``copy`` made afresh from ``source`` (PostgreSQL copies its files: no row is written again)."""
    database.drop_database(admin_url, copy)
    with database.autocommit(admin_url) as conn:
        # dbt's in-process connections may still be open; a template must have none.
        conn.execute(
            "select pg_terminate_backend(pid) from pg_stat_activity where datname = %s and pid <> pg_backend_pid()",
            (source,),
        )
        conn.execute(sql.SQL("create database {} template {}").format(sql.Identifier(copy), sql.Identifier(source)))


@pytest.fixture(scope="module")
def history_template(admin_database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[History]:
    """The history and its first `dbt build`, made once for the module, kept as a template database.

    Built under the name the tests' databases have (``dbt_database_name``), so dbt's parse for
    it serves every test of the process."""
    name = dbt_database_name()
    template = f"{name}_history"
    database.drop_database(admin_database_url, name)
    database.ensure_database(admin_database_url, name)
    url = database.with_database(admin_database_url, name)
    try:
        migrate(url)
        next_offsets = build_history(url, tmp_path_factory.mktemp("history") / "target")
        copy_database(admin_database_url, name, template)
    finally:
        database.drop_database(admin_database_url, name)
    yield History(database.with_database(admin_database_url, template), next_offsets)
    database.drop_database(admin_database_url, template)


@pytest.fixture
def history(admin_database_url: str, history_template: History) -> Iterator[History]:
    """A fresh copy of the built history, this test's own."""
    name = dbt_database_name()
    copy_database(admin_database_url, database.url_parts(history_template.url).database, name)
    yield History(database.with_database(admin_database_url, name), history_template.next_offsets)
    database.drop_database(admin_database_url, name)


def sessions_of(user_ids: Sequence[str], tag: str, *, purchases: int, sessions: int = 1) -> list[dict[str, Any]]:
    """``sessions`` sessions per user on the as-of day: a page view, then ``purchases`` bought products."""
    events = []
    for number, user_id in enumerate(user_ids):
        for session in range(sessions):
            session_id = f"SESSION_{tag}_{number:04d}_{session}"
            moment = BATCH_TIME + timedelta(minutes=session * 30, seconds=number)
            steps = [("page_view", None)] + [("purchase", 1 + (number + step) % 3) for step in range(purchases)]
            for position, (event_type, quantity) in enumerate(steps):
                product = CATALOG[(number * 7 + position) % len(CATALOG)]
                events.append(
                    {
                        "event_id": f"EVT_{session_id}_{position}",
                        "event_timestamp": format_timestamp(moment + timedelta(seconds=position)),
                        "user_id": user_id,
                        "session_id": session_id,
                        "event_type": event_type,
                        "product_id": product.product_id,
                        "product_name": product.name,
                        "product_category": product.category,
                        "product_price": product.price,
                        "quantity": quantity,
                        "device_type": "Mobile",
                        "country": "Nigeria",
                        "schema_version": SCHEMA_VERSION,
                    }
                )
    return events


def rows_by_user(bronze: Bronze) -> dict[str, tuple[Any, ...]]:
    return {row[0]: row for row in bronze.query("select * from gold.mart_user_behavior")}


def boundaries(bronze: Bronze) -> list[tuple[Any, ...]]:
    columns = ", ".join(f"{measure}_boundary" for measure in MEASURES)
    return bronze.query(f"select score, {columns} from silver.int_rfm_boundaries order by score")


def rows_written(target: Path, model: str) -> int:
    results = json.loads((target / "run_results.json").read_text())["results"]
    (result,) = [result for result in results if result["unique_id"] == f"model.shopstream.{model}"]
    return result["adapter_response"]["rows_affected"]


def components_by_user(bronze: Bronze) -> dict[str, tuple[Any, ...]]:
    return {row[0]: row for row in bronze.query("select * from silver.int_hot_lead_components")}


def scores_by_user(bronze: Bronze) -> dict[str, tuple[int, int, int]]:
    return {
        row[0]: row[1:]
        for row in bronze.query("select user_id, r_score, f_score, m_score from gold.mart_user_behavior")
    }


def incremental_run(database_url: str, target: Path) -> DbtRun:
    run = run_dbt_in_process(["run"], database_url, target)
    assert "silver.int_rfm_boundaries" in run.output, "not this run's log"
    assert FALLBACK not in run.output, "the boundaries were counted from all users, not from the changes"
    return run


def test_a_run_rewrites_only_touched_and_rescored_users(history: History, tmp_path: Path) -> None:
    target = tmp_path / "target"
    bronze = history.bronze()
    try:
        before = rows_by_user(bronze)
        # Three returning users come back once, one of them buying: a few users' ranks move.
        returning = sorted(before)[:: max(1, len(before) // 3)][:3]
        bronze.write_events(sessions_of(returning, "back", purchases=1))
        incremental_run(history.url, target)
        after = rows_by_user(bronze)

        changed = {user for user in after if before.get(user) != after[user]}
        assert set(returning) <= changed
        rescored = changed - set(returning)
        written = rows_written(target, "mart_user_behavior")
        # Exactly the touched users and those whose row changed; far from all users.
        assert written == len(changed), (written, len(changed), len(rescored))
        assert rows_written(target, "int_user_activity") == len(returning)
        assert rows_written(target, "int_rfm_boundaries") == 4
        assert len(before) >= 500 and written <= len(before) // 10, (written, len(before))
        print(f"{len(before)} users; {len(returning)} touched; {len(rescored)} rescored; {written} rows written")
    finally:
        bronze.close()


def test_a_batch_moving_every_boundary_equals_a_full_refresh(history: History, tmp_path: Path) -> None:
    target = tmp_path / "target"
    bronze = history.bronze()
    try:
        users = len(rows_by_user(bronze))
        # New users who only browse (low everywhere but recency), then new users who buy often
        # (high everywhere): the population grows by a third each time, so every position moves.
        for tag, purchases, sessions in (("browse", 0, 1), ("buy", 3, 4)):
            before, boundaries_before = rows_by_user(bronze), boundaries(bronze)
            new_users = [f"USER_{tag.upper()}_{number:04d}" for number in range(users // 3)]
            bronze.write_events(sessions_of(new_users, tag, purchases=purchases, sessions=sessions))
            incremental_run(history.url, target)
            after, boundaries_after = rows_by_user(bronze), boundaries(bronze)

            moved = [
                (row_before[0], measure)
                for row_before, row_after in zip(boundaries_before, boundaries_after, strict=True)
                for measure, old, new in zip(MEASURES, row_before[1:], row_after[1:], strict=True)
                if old != new
            ]
            assert {measure for _, measure in moved} == set(MEASURES), (tag, moved)
            rescored = [user for user in before if before[user][8:11] != after[user][8:11]]  # r, f, m scores
            assert rescored, f"{tag}: no returning user changed score"
            assert_silver_and_gold_match(history.url, tmp_path)
    finally:
        bronze.close()


def test_a_run_redecides_only_touched_and_rescored_leads(history: History, tmp_path: Path) -> None:
    target = tmp_path / "target"
    bronze = history.bronze()
    try:
        leads_before, scores_before = components_by_user(bronze), scores_by_user(bronze)
        # The cursor is the newest batch among the leads: here every batch is folded in.
        ((cursor, newest),) = bronze.query(
            "select (select max(last_batch_id) from silver.int_hot_lead_components),"
            " (select max(batch_id) from silver.stg_clickstream_events)"
        )
        assert cursor == newest, (cursor, newest)
        # Two leads whose cart was abandoned before the batch's sessions: one buys (no longer a
        # lead: a purchase started after the abandoned cart), one only browses (still a lead).
        earlier = sorted(user for user, row in leads_before.items() if row[2] < BATCH_TIME)
        buyer, browser = earlier[0], earlier[len(earlier) // 2]
        bronze.write_events(sessions_of([buyer], "lead_buys", purchases=1))
        bronze.write_events(sessions_of([browser], "lead_browses", purchases=0))
        incremental_run(history.url, target)
        leads_after, scores_after = components_by_user(bronze), scores_by_user(bronze)

        hot_leads = {row[0] for row in bronze.query("select user_id from gold.mart_hot_leads")}
        assert buyer not in leads_after and buyer not in hot_leads
        assert browser in leads_after and browser in hot_leads
        assert set(leads_after) == set(leads_before) - {buyer}
        # Re-decided: the two touched users and the leads whose RFM scores moved, no other.
        rescored = {user for user in leads_before if scores_before[user] != scores_after[user]}
        written = rows_written(target, "int_hot_lead_components")
        assert written == len({buyer, browser} | rescored), (written, len(rescored))
        assert len(leads_before) >= 100 and written <= len(leads_before) // 10, (written, len(leads_before))
        changed = {user for user in leads_after if leads_before[user] != leads_after[user]}
        assert browser in changed and changed <= rescored | {browser}, changed
        others = rescored - {buyer, browser}
        print(f"{len(leads_before)} leads; 2 touched; {len(others)} other leads rescored; {written} rows written")
        assert_silver_and_gold_match(history.url, tmp_path)
    finally:
        bronze.close()

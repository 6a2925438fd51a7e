"""The Overview accepts any date its period picker offers, whatever days Gold holds.

Issue 30: choosing 0001-01-01 as the period start broke the page (the previous period's start,
``start - length``, is before the first day a date holds). Gold here holds the oldest and newest
days a date can (Bronze written by the bulk loader, which validates nothing: as Bronze written
before the stream bounded event_timestamp), a day before the window and recent days, built by the
real dbt project; every pair of the picker's own bounds is then chosen through AppTest.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from dashboard import periods
from dashboard.periods import Filters
from shopstream import database
from shopstream.services import Endpoints
from shopstream_assets_tests.dashboard.conftest import fresh_database, point_dashboard_at
from shopstream_assets_tests.dashboard.test_pages import metrics, run_page
from shopstream_assets_tests.streaming.conftest import good_event
from shopstream_cli.bench.dashboard import build_silver_and_gold
from streaming.bronze_load import KafkaPositions, bulk_load_valid_messages
from streaming.events import EARLIEST_EVENT_TIME, encode_event

OLDEST, NEWEST = date.min, date.max


def test_previous_period_is_cut_at_the_first_day_a_date_holds() -> None:
    longest = Filters(date(2000, 1, 1), NEWEST).previous()
    assert (longest.start, longest.end) == (OLDEST, date(1999, 12, 31))
    assert Filters(date(2026, 1, 8), date(2026, 1, 14)).previous() == Filters(date(2026, 1, 1), date(2026, 1, 7))
    first = Filters(OLDEST, OLDEST).previous()
    assert (first.start, first.end) == (OLDEST, OLDEST)


def test_every_day_the_overview_picker_offers_works(
    admin_database_url: str, servers: Endpoints, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    name, url = fresh_database(admin_database_url, "t_dashboard_picker")
    today = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    moments = [
        "0001-01-01T00:00:00Z",
        "1999-12-31T12:00:00Z",
        *((today - timedelta(days=days)).isoformat().replace("+00:00", "Z") for days in range(3)),
        "9999-12-31T23:59:59Z",
    ]
    events = [
        encode_event(
            good_event(event_id=f"EVT_picker_{index}", session_id=f"SESSION_picker_{index}", event_timestamp=moment)
        )
        for index, moment in enumerate(moments)
    ]
    try:
        with database.connect(url, autocommit=True) as conn:
            bulk_load_valid_messages(conn, [b"picker"] * len(events), events, KafkaPositions("picker"))
        build_silver_and_gold(url, progress=lambda message: None)
        point_dashboard_at(monkeypatch, database.with_database(servers.dashboard_database_url, name))
        app = run_page("overview")
        app.selectbox(key="overview_preset").set_value(periods.CUSTOM).run()
        picker = app.date_input(key="overview_period")
        for start, end in [
            (picker.min, picker.min),
            (picker.min, picker.max),
            (picker.max, picker.max),
            (today.date(), picker.max),
            (picker.min, today.date()),
        ]:
            app.date_input(key="overview_period").set_value((start, end)).run()
            assert not app.exception, (start, end, [exception.message for exception in app.exception])
            shown = metrics(app)
            assert shown, (start, end)
        # Gold holds 0001-01-01 and 9999-12-31; the picker starts at the first day the stream accepts.
        assert (picker.min, picker.max) == (EARLIEST_EVENT_TIME.date(), NEWEST)
        app.date_input(key="overview_period").set_value((today.date() - timedelta(days=2), today.date())).run()
        assert metrics(app)["Orders"] == "3"
    finally:
        database.drop_database(admin_database_url, name)

"""The Overview's presets resolved against a clock: which days or hours, at which grain, and the
period before each (same length, same grain)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from dashboard import periods
from dashboard.periods import Filters, Period

NOW = datetime(2026, 12, 7, 8, 10, 30, tzinfo=UTC)


def hour(day: int, at: int) -> datetime:
    return datetime(2026, 12, day, at, tzinfo=UTC)


@pytest.mark.parametrize(
    ("preset", "expected"),
    [
        (periods.LAST_15_MINUTES, Period(date(2026, 12, 7), date(2026, 12, 7), hour(7, 7), hour(7, 8))),
        (periods.LAST_HOUR, Period(date(2026, 12, 7), date(2026, 12, 7), hour(7, 7), hour(7, 8))),
        (periods.TODAY, Period(date(2026, 12, 7), date(2026, 12, 7), hour(7, 0), hour(7, 8))),
        (periods.YESTERDAY, Period(date(2026, 12, 6), date(2026, 12, 6), hour(6, 0), hour(6, 23))),
        (periods.LAST_7_DAYS, Period(date(2026, 12, 1), date(2026, 12, 7))),
        (periods.LAST_30_DAYS, Period(date(2026, 11, 8), date(2026, 12, 7))),
        (periods.MONTH_TO_DATE, Period(date(2026, 12, 1), date(2026, 12, 7))),
    ],
)
def test_each_preset_is_whole_hours_up_to_two_days_and_whole_days_beyond(preset: str, expected: Period) -> None:
    assert periods.resolve(preset, NOW) == expected
    assert expected.grain == ("hour" if expected.first_hour else "day")


def test_fifteen_minutes_inside_one_hour_is_that_hour() -> None:
    inside = datetime(2026, 12, 7, 8, 40, tzinfo=UTC)
    assert periods.resolve(periods.LAST_15_MINUTES, inside) == Period(
        date(2026, 12, 7), date(2026, 12, 7), hour(7, 8), hour(7, 8)
    )


def test_custom_range_by_hour_up_to_two_days() -> None:
    two_days = periods.resolve(periods.CUSTOM, NOW, (date(2026, 12, 5), date(2026, 12, 6)))
    assert (two_days.grain, two_days.length) == ("hour", 48)
    three_days = periods.resolve(periods.CUSTOM, NOW, (date(2026, 12, 4), date(2026, 12, 6)))
    assert (three_days.grain, three_days.length) == ("day", 3)
    with pytest.raises(ValueError, match="custom range"):
        periods.resolve(periods.CUSTOM, NOW)
    with pytest.raises(ValueError, match="one of Last 15 minutes"):
        periods.resolve("Last fortnight", NOW)


def test_previous_period_has_the_same_length_at_the_same_grain() -> None:
    today = Filters.of(periods.resolve(periods.TODAY, NOW), countries=("Ghana",))
    before = today.previous()
    assert before.grain == "hour" and before.countries == ("Ghana",)
    assert (before.first_hour, before.last_hour) == (hour(6, 15), hour(6, 23))
    assert before.period.length == today.period.length == 9
    week = Filters.of(periods.resolve(periods.LAST_7_DAYS, NOW))
    assert week.previous() == Filters(date(2026, 11, 24), date(2026, 11, 30))
    # The first hour a date holds has nothing before it: the previous period stops there.
    first = Filters.of(periods.days(date.min, date.min)).previous()
    assert (first.first_hour, first.last_hour) == (periods.FIRST_HOUR, periods.FIRST_HOUR)
    last = Filters.of(periods.days(date.max, date.max))
    assert last.period.label() == "31 Dec 9999 00:00 - 23:59 UTC"
    assert last.params()["window_last"] == periods.LAST_HOUR_HELD

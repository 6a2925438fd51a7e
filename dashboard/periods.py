"""The Overview's periods: presets resolved against a clock, the grain each is shown at, and the
selection the queries take (:class:`Filters`: a period and the segment filters).

Gold keeps two grains (``gold.mart_daily_segment_*`` per UTC day, ``gold.mart_hourly_segment_*``
per UTC hour), so a period is a run of whole UTC days or of whole UTC hours. A period of up
to two days is read and charted by the hour, a longer one by the day. The hour is Gold's
finest grain: "last 15 minutes" and "last hour" are the hours that hold them (one or two),
and the page says which hours it shows.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta

# The period control's choices, in the order offered.
LAST_15_MINUTES = "Last 15 minutes"
LAST_HOUR = "Last hour"
TODAY = "Today"
YESTERDAY = "Yesterday"
LAST_7_DAYS = "7 days"
LAST_30_DAYS = "30 days"
MONTH_TO_DATE = "Month to date"
CUSTOM = "Custom range"
PRESETS: tuple[str, ...] = (
    LAST_15_MINUTES,
    LAST_HOUR,
    TODAY,
    YESTERDAY,
    LAST_7_DAYS,
    LAST_30_DAYS,
    MONTH_TO_DATE,
    CUSTOM,
)
DEFAULT_PRESET = LAST_7_DAYS
# Up to this many days a period is shown by the hour (issue 33: "hours up to two days").
HOURLY_UP_TO_DAYS = 2

HOUR = timedelta(hours=1)
FIRST_HOUR = datetime.combine(date.min, time(), tzinfo=UTC)
LAST_HOUR_HELD = datetime.combine(date.max, time(23), tzinfo=UTC)


@dataclass(frozen=True)
class Period:
    """Whole UTC days ``start..end``; with ``first_hour``, the whole UTC hours ``first_hour..last_hour``
    (both ends included, each an hour's start) inside them, read at the hourly grain."""

    start: date
    end: date
    first_hour: datetime | None = None
    last_hour: datetime | None = None

    @property
    def grain(self) -> str:
        return "day" if self.first_hour is None else "hour"

    @property
    def length(self) -> int:
        """Days or hours, by grain."""
        if self.first_hour is None or self.last_hour is None:
            return (self.end - self.start).days + 1
        return int((self.last_hour - self.first_hour) / HOUR) + 1

    def previous(self) -> Period:
        """The period of the same length just before this one, at the same grain.

        Cut at the first day (or hour) a date holds: a period of thousands of years (any two
        days the picker offers) once made ``start - length`` overflow and broke the page.
        """
        if self.first_hour is None or self.last_hour is None:
            length = self.length
            first_day = date.fromordinal(max(date.min.toordinal(), self.start.toordinal() - length))
            last_day = date.fromordinal(max(date.min.toordinal(), self.start.toordinal() - 1))
            return Period(first_day, last_day)
        hours = self.length
        first = _hour_before(self.first_hour, hours)
        last = _hour_before(self.first_hour, 1)
        return Period(first.date(), last.date(), first, last)

    def label(self) -> str:
        """The period as the page states it: '03 Dec - 09 Dec' or '07 Dec 07:00 - 08:59 UTC'."""
        if self.first_hour is None or self.last_hour is None:
            if self.start == self.end:
                return f"{self.start:%d %b %Y}"
            return f"{self.start:%d %b %Y} - {self.end:%d %b %Y}"
        end = f"{self.last_hour:%H}:59"
        if self.first_hour.date() != self.last_hour.date():
            end = f"{self.last_hour:%d %b} {end}"
        return f"{self.first_hour:%d %b %Y %H:%M} - {end} UTC"


def _hour_before(moment: datetime, hours: int) -> datetime:
    if moment - FIRST_HOUR < hours * HOUR:
        return FIRST_HOUR
    return moment - hours * HOUR


def _floor_hour(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def days(start: date, end: date) -> Period:
    """Whole days; by the hour when they are at most two days (every hour of them)."""
    if (end - start).days + 1 > HOURLY_UP_TO_DAYS:
        return Period(start, end)
    return Period(start, end, datetime.combine(start, time(), tzinfo=UTC), datetime.combine(end, time(23), tzinfo=UTC))


def hours_holding(since: datetime, now: datetime) -> Period:
    """The whole hours that hold ``since..now``."""
    first, last = _floor_hour(since), _floor_hour(now)
    return Period(first.date(), last.date(), first, last)


def resolve(preset: str, now: datetime, custom: tuple[date, date] | None = None) -> Period:
    """The period a preset means at ``now`` (UTC). Today's hours stop at the current hour.

    ``custom`` is the custom range's days (used only for :data:`CUSTOM`).
    """
    now = now.astimezone(UTC)
    today = now.date()
    if preset == LAST_15_MINUTES:
        return hours_holding(now - timedelta(minutes=15), now)
    if preset == LAST_HOUR:
        return hours_holding(now - HOUR, now)
    if preset == TODAY:
        return hours_holding(datetime.combine(today, time(), tzinfo=UTC), now)
    if preset == YESTERDAY:
        return days(today - timedelta(days=1), today - timedelta(days=1))
    if preset == LAST_7_DAYS:
        return days(today - timedelta(days=6), today)
    if preset == LAST_30_DAYS:
        return days(today - timedelta(days=29), today)
    if preset == MONTH_TO_DATE:
        return days(today.replace(day=1), today)
    if preset == CUSTOM:
        if custom is None:
            raise ValueError("the custom range needs its first and last day")
        return days(*custom)
    raise ValueError(f"unknown period preset {preset!r}: one of {', '.join(PRESETS)}")


@dataclass(frozen=True)
class Filters:
    """The Overview's selection. An empty tuple means "all".

    ``start..end`` are the period's UTC days; with ``first_hour``/``last_hour`` (whole UTC hours,
    both included) the period is read at the hourly grain (``dashboard.periods``).
    """

    start: date
    end: date
    countries: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    first_hour: datetime | None = None
    last_hour: datetime | None = None

    @classmethod
    def of(
        cls, period: Period, countries: tuple[str, ...] = (), devices: tuple[str, ...] = (),
        categories: tuple[str, ...] = (),
    ) -> Filters:  # fmt: skip
        return cls(period.start, period.end, countries, devices, categories, period.first_hour, period.last_hour)

    @property
    def period(self) -> Period:
        return Period(self.start, self.end, self.first_hour, self.last_hour)

    @property
    def grain(self) -> str:
        return self.period.grain

    def previous(self) -> Filters:
        """The period of the same length just before this one, same grain, same dimensions."""
        before = self.period.previous()
        return replace(
            self, start=before.start, end=before.end, first_hour=before.first_hour, last_hour=before.last_hour
        )

    def params(self) -> dict[str, object]:
        # The window of instants the period covers, for Bronze's event_timestamp index: its first
        # instant and the start of its last day or hour; SQL adds the step, so the last day a
        # date holds does not overflow in Python.
        hourly = self.first_hour is not None and self.last_hour is not None
        return {
            "start": self.start,
            "end": self.end,
            "first_hour": self.first_hour,
            "last_hour": self.last_hour,
            "window_start": self.first_hour if hourly else datetime.combine(self.start, time(), tzinfo=UTC),
            "window_last": self.last_hour if hourly else datetime.combine(self.end, time(), tzinfo=UTC),
            "window_step": "1 hour" if hourly else "1 day",
            "countries": list(self.countries),
            "devices": list(self.devices),
            "categories": list(self.categories),
        }

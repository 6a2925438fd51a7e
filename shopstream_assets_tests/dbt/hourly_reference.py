"""The pandas reference of Gold's hourly marts (_hourly_marts.yml), from the same Silver
events and sessions as ``gold_reference``'s daily ones: the daily segment definitions with
the period a UTC hour (an hour starts on the hour, as a timestamptz)."""

from __future__ import annotations

import pandas as pd

from shopstream_assets_tests.dbt import gold_reference as reference


def _with_hours(events: pd.DataFrame) -> pd.DataFrame:
    return events.assign(event_date=events["event_timestamp"].dt.floor("h"))


def hourly_segment_metrics(events: pd.DataFrame) -> pd.DataFrame:
    """Per (hour, country, device, category) of the event; each user-hour counted once, in
    the cell of the user's first event that hour (event time, then event_id)."""
    cells = reference.daily_segment_metrics(_with_hours(events))
    return cells.rename(columns={"metric_date": "metric_hour", "user_days": "user_hours"})


def hourly_segment_sessions(events: pd.DataFrame, session_rows: pd.DataFrame) -> pd.DataFrame:
    """Per (hour, country, device) with events: the sessions that started in that hour."""
    sessions = session_rows.assign(session_date=session_rows["session_start"].dt.floor("h"))
    cells = reference.daily_segment_sessions(_with_hours(events), sessions)
    return cells.rename(columns={"metric_date": "metric_hour"})


def reference_tables(events: pd.DataFrame, session_rows: pd.DataFrame) -> dict[str, pd.DataFrame]:
    return {
        "gold.mart_hourly_segment_metrics": hourly_segment_metrics(events),
        "gold.mart_hourly_segment_sessions": hourly_segment_sessions(events, session_rows),
    }

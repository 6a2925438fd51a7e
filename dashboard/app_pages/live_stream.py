"""Live Stream: is the pipeline alive, how far behind is it, and what is it rejecting."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import charts, queries, ui
from dashboard.db import NotBuiltYet
from dashboard.ingest_lag import IngestLag, ingest_lag, stream_settings

WINDOW_MINUTES = 5

st.title("Live Stream")
st.caption(
    f"Events per second over the last {WINDOW_MINUTES} minutes, the newest Bronze rows, rejected messages, "
    "the ingest lag behind the broker and how fresh Gold is."
)


def _timestamp(value: object) -> pd.Timestamp | None:
    return None if value is None or pd.isna(value) else pd.Timestamp(value)


def health(per_second: pd.DataFrame, lag: IngestLag) -> None:
    summary = queries.ingest_summary(stream_settings().topic)
    try:
        gold = queries.gold_status()
    except NotBuiltYet:
        # The stream runs before dbt's first build: Bronze health is still worth showing.
        gold = {"gold_newest_event_time": None, "gold_batch_id": None, "gold_refreshed_at": None}
    now = _timestamp(summary["database_now"])
    last_batch_at = _timestamp(summary["last_batch_committed_at"])
    gold_event_time = _timestamp(gold["gold_newest_event_time"])
    gold_batch = gold["gold_batch_id"]
    has_gold = gold_batch is not None and not pd.isna(gold_batch)
    gold_refreshed = _timestamp(gold["gold_refreshed_at"])

    recent = per_second.loc[per_second["second"] >= now - pd.Timedelta(seconds=60), "events"] if now else []
    rate = float(pd.Series(recent, dtype=float).sum()) / 60.0

    columns = st.columns(5)
    columns[0].metric(
        "Events/s (last minute)",
        f"{rate:,.1f}",
        border=True,
        help="Events whose event time lies in the last 60 s, per second.",
    )
    columns[1].metric(
        "Ingest lag",
        f"{lag.messages:,} msgs" if lag.messages is not None else "unknown",
        border=True,
        help=lag.detail,
    )
    columns[2].metric(
        "Last Bronze batch",
        ui.ago(last_batch_at, now) if last_batch_at is not None else "none yet",
        border=True,
        help=(
            f"Batch #{int(summary['last_batch_id'])}: {int(summary['batches']):,} batches, "
            f"{int(summary['rows_written']):,} rows, {int(summary['rejects']):,} rejects, "
            f"{int(summary['duplicates']):,} duplicates in total."
            if last_batch_at is not None
            else "No micro-batch has been committed for this topic."
        ),
    )
    columns[3].metric(
        "Last Gold refresh",
        ui.ago(gold_refreshed, now) if gold_refreshed is not None else ("unknown" if has_gold else "not built"),
        border=True,
        help=(
            f"Gold holds Bronze up to batch #{int(gold_batch)}. The start of the last dbt run that built "
            "every Gold mart (gold.refresh_log)."
            if has_gold
            else "Gold has not been built yet."
        ),
    )
    columns[4].metric(
        "Event-to-Gold freshness",
        ui.duration(now - gold_event_time) if gold_event_time is not None and now is not None else "–",
        border=True,
        help="Age of the newest event that Gold already includes.",
    )


def live_stream() -> None:
    per_second = queries.events_per_second(WINDOW_MINUTES)
    health(per_second, ingest_lag())

    rate_col, rejects_col = st.columns([3, 2])
    if per_second.empty:
        rate_col.info(f"No events with an event time in the last {WINDOW_MINUTES} minutes: is the producer running?")
    else:
        rate_col.plotly_chart(charts.events_per_second(per_second), key="events_per_second")
    rejects = queries.rejects_by_reason(stream_settings().topic)
    if rejects.empty:
        rejects_col.success("No rejected messages.", icon=":material/check_circle:")
    else:
        rejects_col.plotly_chart(charts.rejects_by_reason(rejects), key="rejects")

    events_col, batches_col = st.columns([3, 2])
    latest = queries.latest_events()
    events_col.subheader("Latest events")
    if latest.empty:
        events_col.info("Bronze has no events yet.")
    else:
        ui.table(
            latest,
            key="latest_events_table",
            file_name="shopstream_latest_events.csv",
            container=events_col,
            column_config={
                "event_timestamp": st.column_config.DatetimeColumn("Event time", format="HH:mm:ss.SSS"),
                "event_type": st.column_config.TextColumn("Type"),
                "user_id": st.column_config.TextColumn("User"),
                "product_name": st.column_config.TextColumn("Product"),
                "product_category": st.column_config.TextColumn("Category"),
                "product_price": st.column_config.NumberColumn("Price (₦)", format="localized"),
                "quantity": st.column_config.NumberColumn("Qty"),
                "device_type": st.column_config.TextColumn("Device"),
                "country": st.column_config.TextColumn("Country"),
                "repaired": st.column_config.CheckboxColumn("Repaired"),
                "ingested_at": st.column_config.DatetimeColumn("Ingested", format="HH:mm:ss"),
            },
        )
    batches_col.subheader("Latest batches")
    batches = queries.last_batches(stream_settings().topic)
    if batches.empty:
        batches_col.info("No micro-batch committed yet.")
    else:
        ui.table(
            batches,
            key="latest_batches_table",
            file_name="shopstream_latest_batches.csv",
            container=batches_col,
            column_config={
                "batch_id": st.column_config.NumberColumn("Batch"),
                "source": st.column_config.TextColumn("Source"),
                "committed_at": st.column_config.DatetimeColumn("Committed", format="HH:mm:ss"),
                "messages_consumed": st.column_config.NumberColumn("Messages"),
                "rows_written": st.column_config.NumberColumn("Rows"),
                "rejects": st.column_config.NumberColumn("Rejects"),
                "duplicates": st.column_config.NumberColumn("Dupes"),
                "write_seconds": st.column_config.NumberColumn("Seconds", format="%.2f"),
            },
        )


ui.auto_refreshing(live_stream)

"""An independent pandas computation of every Silver and Gold relation, from Bronze.

It follows the definitions written in dbt_project/models/*/_*.yml (the reference README's
KPI table and RFM bands), not the SQL: the dbt tests hold the two equal row for row.
Money is kept in integer cents so sums are exact; ratios are floats. The per-user relations
(RFM, user activity, hot leads) are in ``user_reference``, the hourly marts in
``hourly_reference``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import psycopg

from shopstream_assets_tests.dbt import user_reference

BRONZE_QUERY = """
    select event_id, event_timestamp, user_id, session_id, event_type, product_id,
           product_name, product_category, (product_price * 100)::bigint as price_cents,
           quantity, device_type, country, repaired, ingested_at, batch_id
    from bronze.clickstream_events
"""


def read_bronze(conn: psycopg.Connection) -> pd.DataFrame:
    with conn.cursor() as cursor:
        cursor.execute(BRONZE_QUERY)
        columns = [column.name for column in cursor.description]
        events = pd.DataFrame(cursor.fetchall(), columns=columns)
    events["event_timestamp"] = pd.to_datetime(events["event_timestamp"], utc=True)
    events["ingested_at"] = pd.to_datetime(events["ingested_at"], utc=True)
    events["event_date"] = events["event_timestamp"].dt.date
    events["is_page_view"] = events["event_type"] == "page_view"
    events["is_add_to_cart"] = events["event_type"] == "add_to_cart"
    events["is_purchase"] = events["event_type"] == "purchase"
    quantity = events["quantity"].fillna(0).astype("int64")
    events["line_cents"] = np.where(events["is_purchase"], events["price_cents"] * quantity, 0)
    events["cart_cents"] = np.where(events["is_add_to_cart"], events["price_cents"] * quantity, 0)
    events["units_purchased"] = np.where(events["is_purchase"], quantity, 0)
    return events


def staging_events(events: pd.DataFrame) -> pd.DataFrame:
    """Silver events (_staging.yml): each Bronze event once, with its UTC day and hour, line
    revenue (price x quantity on purchases, else 0) and event-type flags."""
    silver = events[
        ["event_id", "event_timestamp", "event_date", "user_id", "session_id", "event_type", "product_id",
         "product_name", "product_category", "price_cents", "line_cents", "is_page_view", "is_add_to_cart",
         "is_purchase", "device_type", "country", "repaired", "ingested_at", "batch_id"]
    ].copy()  # fmt: skip
    silver["event_hour"] = events["event_timestamp"].dt.hour
    # Null on most page views: kept as None, not NaN, so a quantity compares exactly.
    silver["quantity"] = [None if pd.isna(quantity) else int(quantity) for quantity in events["quantity"]]
    return silver


def percent(numerator: float, denominator: float) -> float | None:
    return None if denominator == 0 else 100.0 * numerator / denominator


def ratio(numerator: float, denominator: float) -> float | None:
    return None if denominator == 0 else numerator / denominator


def sessions(events: pd.DataFrame) -> pd.DataFrame:
    ordered = events.sort_values(["session_id", "event_timestamp", "event_id"])
    grouped = ordered.groupby("session_id", sort=True)
    result = pd.DataFrame(
        {
            "user_id": grouped["user_id"].first(),
            "session_start": grouped["event_timestamp"].min(),
            "session_end": grouped["event_timestamp"].max(),
            "events": grouped.size(),
            "page_views": grouped["is_page_view"].sum(),
            "add_to_carts": grouped["is_add_to_cart"].sum(),
            "purchases": grouped["is_purchase"].sum(),
            "units_purchased": grouped["units_purchased"].sum(),
            "revenue_cents": grouped["line_cents"].sum(),
            "cart_value_cents": grouped["cart_cents"].sum(),
            "device_type": grouped["device_type"].first(),
            "country": grouped["country"].first(),
            "last_batch_id": grouped["batch_id"].max(),
        }
    ).reset_index()
    result["session_date"] = result["session_start"].dt.date
    result["duration_seconds"] = (result["session_end"] - result["session_start"]).dt.total_seconds()
    result["reached_cart"] = result["add_to_carts"] > 0
    result["purchased"] = result["purchases"] > 0
    result["abandoned_cart"] = result["reached_cart"] & ~result["purchased"]
    return result


def daily_metrics(events: pd.DataFrame, session_rows: pd.DataFrame) -> pd.DataFrame:
    rows: list[dict[str, Any]] = []
    for day, day_events in events.groupby("event_date", sort=True):
        day_sessions = session_rows[session_rows["session_date"] == day]
        page_views = int(day_events["is_page_view"].sum())
        carts = int(day_events["is_add_to_cart"].sum())
        purchases = int(day_events["is_purchase"].sum())
        revenue_cents = int(day_events["line_cents"].sum())
        users = int(day_events["user_id"].nunique())
        session_count = len(day_sessions)
        abandoned = int(day_sessions["abandoned_cart"].sum())
        rows.append(
            {
                "metric_date": day,
                "events": len(day_events),
                "page_views": page_views,
                "add_to_carts": carts,
                "purchases": purchases,
                "units_sold": int(day_events["units_purchased"].sum()),
                "revenue_cents": revenue_cents,
                "unique_users": users,
                "sessions": session_count,
                "abandoned_cart_sessions": abandoned,
                "conversion_rate": percent(purchases, page_views),
                "cart_rate": percent(carts, page_views),
                "checkout_rate": percent(purchases, carts),
                "cart_abandonment_rate": percent(abandoned, session_count),
                "average_order_value": ratio(revenue_cents / 100, purchases),
                "revenue_per_user": ratio(revenue_cents / 100, users),
                "last_batch_id": int(day_events["batch_id"].max()),
            }
        )
    return pd.DataFrame(rows)


def conversion_funnel(events: pd.DataFrame, session_rows: pd.DataFrame) -> pd.DataFrame:
    rows: list[dict[str, Any]] = []
    for day, day_events in events.groupby("event_date", sort=True):
        day_sessions = session_rows[session_rows["session_date"] == day]
        viewed = day_sessions["page_views"] > 0
        carted = viewed & (day_sessions["add_to_carts"] > 0)
        bought = carted & (day_sessions["purchases"] > 0)
        viewed_count, carted_count, bought_count = int(viewed.sum()), int(carted.sum()), int(bought.sum())
        rows.append(
            {
                "metric_date": day,
                "sessions": len(day_sessions),
                "viewed_sessions": viewed_count,
                "carted_sessions": carted_count,
                "purchased_sessions": bought_count,
                "view_to_cart_rate": percent(carted_count, viewed_count),
                "cart_to_purchase_rate": percent(bought_count, carted_count),
                "overall_conversion_rate": percent(bought_count, viewed_count),
                "last_batch_id": int(day_events["batch_id"].max()),
            }
        )
    return pd.DataFrame(rows)


def product_performance(events: pd.DataFrame) -> pd.DataFrame:
    grouped = events.groupby("product_id", sort=True)
    result = pd.DataFrame(
        {
            "product_name": grouped["product_name"].min(),
            "product_category": grouped["product_category"].min(),
            "views": grouped["is_page_view"].sum(),
            "carts": grouped["is_add_to_cart"].sum(),
            "purchases": grouped["is_purchase"].sum(),
            "units_sold": grouped["units_purchased"].sum(),
            "revenue_cents": grouped["line_cents"].sum(),
            "last_batch_id": grouped["batch_id"].max(),
        }
    ).reset_index()
    result["view_to_purchase_rate"] = [
        percent(purchases, views) for purchases, views in zip(result["purchases"], result["views"], strict=True)
    ]
    result["revenue_rank"] = result["revenue_cents"].rank(method="min", ascending=False).astype("int64")
    return result


SEGMENT = ["country", "device_type"]
EVENT_SEGMENT = ["event_date", *SEGMENT, "product_category"]


def daily_segment_metrics(events: pd.DataFrame) -> pd.DataFrame:
    """Per (day, country, device, category) of the event; each user-day counted once, in
    the cell of the user's first event that day (event time, then event_id)."""
    grouped = events.groupby(EVENT_SEGMENT, sort=True)
    cells = pd.DataFrame(
        {
            "events": grouped.size(),
            "page_views": grouped["is_page_view"].sum(),
            "add_to_carts": grouped["is_add_to_cart"].sum(),
            "purchases": grouped["is_purchase"].sum(),
            "units_sold": grouped["units_purchased"].sum(),
            "revenue_cents": grouped["line_cents"].sum(),
            "last_batch_id": grouped["batch_id"].max(),
        }
    )
    first_events = (
        events.sort_values(["user_id", "event_date", "event_timestamp", "event_id"])
        .groupby(["user_id", "event_date"], sort=False)
        .head(1)
    )
    cells["user_days"] = first_events.groupby(EVENT_SEGMENT).size().reindex(cells.index, fill_value=0)
    return cells.reset_index().rename(columns={"event_date": "metric_date"})


def daily_segment_sessions(events: pd.DataFrame, session_rows: pd.DataFrame) -> pd.DataFrame:
    """Per (day, country, device) with events: the sessions that started there (a session's
    day, country and device are those of its first event)."""
    cells = events.groupby(["event_date", *SEGMENT], sort=True)["batch_id"].max().rename("last_batch_id")
    viewed = session_rows["page_views"] > 0
    carted = viewed & (session_rows["add_to_carts"] > 0)
    bought = carted & (session_rows["purchases"] > 0)
    measures = session_rows.assign(
        sessions=1,
        abandoned_cart_sessions=session_rows["abandoned_cart"].astype("int64"),
        viewed_sessions=viewed.astype("int64"),
        carted_sessions=carted.astype("int64"),
        purchased_sessions=bought.astype("int64"),
    )
    columns = ["sessions", "abandoned_cart_sessions", "viewed_sessions", "carted_sessions", "purchased_sessions"]
    totals = measures.groupby(["session_date", *SEGMENT])[columns].sum()
    totals.index = totals.index.set_names(["event_date", *SEGMENT])
    result = pd.DataFrame(cells).join(totals, how="left").fillna({column: 0 for column in columns})
    result[columns] = result[columns].astype("int64")
    return result.reset_index().rename(columns={"event_date": "metric_date"})


def product_daily(events: pd.DataFrame) -> pd.DataFrame:
    grouped = events.groupby(["event_date", "product_id", *SEGMENT], sort=True)
    return (
        pd.DataFrame(
            {
                "product_name": grouped["product_name"].min(),
                "product_category": grouped["product_category"].min(),
                "views": grouped["is_page_view"].sum(),
                "carts": grouped["is_add_to_cart"].sum(),
                "purchases": grouped["is_purchase"].sum(),
                "units_sold": grouped["units_purchased"].sum(),
                "revenue_cents": grouped["line_cents"].sum(),
                "last_batch_id": grouped["batch_id"].max(),
            }
        )
        .reset_index()
        .rename(columns={"event_date": "metric_date"})
    )


def reference_tables(conn: psycopg.Connection) -> dict[str, pd.DataFrame]:
    """Every Silver and Gold relation dbt builds from data, computed here from Bronze."""
    # The hourly marts' reference builds on this module's daily one (so imports it).
    from shopstream_assets_tests.dbt import hourly_reference

    events = read_bronze(conn)
    session_rows = sessions(events)
    users = user_reference.user_behavior(session_rows)
    components = user_reference.hot_lead_components(session_rows, users)
    return {
        **hourly_reference.reference_tables(events, session_rows),
        "silver.stg_clickstream_events": staging_events(events),
        "silver.int_user_sessions": session_rows,
        "silver.int_user_activity": user_reference.user_activity(session_rows),
        "silver.int_rfm_boundaries": user_reference.rfm_boundaries(users),
        "silver.int_hot_lead_components": components,
        "gold.mart_daily_metrics": daily_metrics(events, session_rows),
        "gold.mart_daily_segment_metrics": daily_segment_metrics(events),
        "gold.mart_daily_segment_sessions": daily_segment_sessions(events, session_rows),
        "gold.mart_conversion_funnel": conversion_funnel(events, session_rows),
        "gold.mart_product_performance": product_performance(events),
        "gold.mart_product_daily": product_daily(events),
        "gold.mart_user_behavior": users,
        "gold.mart_hot_leads": user_reference.hot_leads(components, session_rows["session_date"].max()),
    }


def same_value(expected: Any, actual: Any) -> bool:
    """Exact for ints, strings, dates and money in cents; 1e-9 relative for floats."""
    if expected is None or (isinstance(expected, float) and math.isnan(expected)):
        return actual is None
    if actual is None:
        return False
    if isinstance(expected, float | np.floating):
        return math.isclose(float(expected), float(actual), rel_tol=1e-9, abs_tol=1e-9)
    if isinstance(expected, pd.Timestamp):
        return expected.to_pydatetime() == actual
    if isinstance(expected, np.integer | np.bool_):
        return expected.item() == actual
    return expected == actual

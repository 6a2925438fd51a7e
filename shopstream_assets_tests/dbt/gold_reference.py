"""An independent pandas computation of every Silver and Gold relation, from Bronze.

It follows the definitions written in dbt_project/models/*/_*.yml (the reference README's
KPI table and RFM bands), not the SQL: the dbt tests hold the two equal row for row.
Money is kept in integer cents so sums are exact; ratios are floats.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import psycopg

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


def quintile(values: pd.Series) -> pd.Series:
    """1 + floor(5 (rank - 1) / n), rank ascending, ties sharing the lowest rank."""
    ranks = values.rank(method="min", ascending=True)
    return (1 + np.floor(5 * (ranks - 1) / len(values))).astype("int64")


def rfm_tier(score: int) -> str:
    if score >= 13:
        return "Champion"
    if score >= 10:
        return "Loyal"
    if score >= 7:
        return "Potential"
    if score >= 5:
        return "At Risk"
    return "Lost"


def lifecycle_stage(recency_days: int, tenure_days: int, purchase_sessions: int) -> str:
    if recency_days > 30:
        return "Churned"
    if recency_days > 14:
        return "Dormant"
    if tenure_days < 7:
        return "New"
    if purchase_sessions >= 2:
        return "Repeat Buyer"
    if purchase_sessions == 1:
        return "Buyer"
    return "Browser"


def user_behavior(session_rows: pd.DataFrame) -> pd.DataFrame:
    as_of = session_rows["session_date"].max()
    grouped = session_rows.groupby("user_id", sort=True)
    users = pd.DataFrame(
        {
            "first_session_at": grouped["session_start"].min(),
            "last_session_at": grouped["session_start"].max(),
            "frequency": grouped.size(),
            "monetary_cents": grouped["revenue_cents"].sum(),
            "purchase_sessions": grouped["purchased"].sum(),
            "abandoned_cart_sessions": grouped["abandoned_cart"].sum(),
        }
    ).reset_index()
    users["recency_days"] = [(as_of - moment.date()).days for moment in users["last_session_at"]]
    tenure = [(as_of - moment.date()).days for moment in users["first_session_at"]]
    users["r_score"] = quintile(users["last_session_at"])
    users["f_score"] = quintile(users["frequency"])
    users["m_score"] = quintile(users["monetary_cents"])
    users["rfm_score"] = users["r_score"] + users["f_score"] + users["m_score"]
    users["rfm_tier"] = [rfm_tier(score) for score in users["rfm_score"]]
    users["lifecycle_stage"] = [
        lifecycle_stage(recency, tenure_days, purchases)
        for recency, tenure_days, purchases in zip(
            users["recency_days"], tenure, users["purchase_sessions"], strict=True
        )
    ]
    users["as_of_date"] = as_of
    users["last_batch_id"] = grouped["last_batch_id"].max().to_numpy()
    return users


def rfm_boundaries(users: pd.DataFrame) -> pd.DataFrame:
    """Per score k (2-5) and measure: the value at position ceil((k - 1) n / 5) in ascending order,
    and how many users lie below it and at or below it (_intermediate.yml)."""
    count = len(users)
    rows = []
    for score in range(2, 6):
        row: dict[str, Any] = {"score": score, "users": count}
        for measure, column in (("recency", "last_session_at"), ("frequency", "frequency"),
                                ("monetary", "monetary_cents")):  # fmt: skip
            suffix = "_cents" if column.endswith("_cents") else ""
            values = sorted(users[column])
            boundary = values[-(-(score - 1) * count // 5) - 1] if count else None
            row[f"{measure}_boundary{suffix}"] = boundary
            row[f"{measure}_below"] = sum(value < boundary for value in values) if count else 0
            row[f"{measure}_through"] = sum(value <= boundary for value in values) if count else 0
        row["last_batch_id"] = int(users["last_batch_id"].max()) if count else 0
        rows.append(row)
    return pd.DataFrame(rows)


def user_activity(session_rows: pd.DataFrame) -> pd.DataFrame:
    """One row per user: aggregates of the user's sessions and the latest session with a cart."""
    grouped = session_rows.groupby("user_id", sort=True)
    activity = pd.DataFrame(
        {
            "first_session_at": grouped["session_start"].min(),
            "last_session_at": grouped["session_start"].max(),
            "frequency": grouped.size(),
            "monetary_cents": grouped["revenue_cents"].sum(),
            "purchase_sessions": grouped["purchased"].sum(),
            "abandoned_cart_sessions": grouped["abandoned_cart"].sum(),
            "last_purchase_session_at": session_rows[session_rows["purchased"]]
            .groupby("user_id")["session_start"]
            .max(),
            "last_batch_id": grouped["last_batch_id"].max(),
        }
    )
    carts = session_rows[session_rows["reached_cart"]].sort_values(
        ["user_id", "session_start", "session_id"], ascending=[True, False, False]
    )
    latest = carts.groupby("user_id", sort=True).head(1).set_index("user_id")
    activity["cart_session_id"] = latest["session_id"]
    activity["cart_session_start"] = latest["session_start"]
    activity["cart_abandoned"] = latest["abandoned_cart"]
    activity["cart_value_cents"] = latest["cart_value_cents"]
    activity["cart_page_views"] = latest["page_views"]
    activity = activity.reset_index()
    # A user with no cart session has nulls there, as in PostgreSQL (pandas would say NaN or NaT).
    return activity.astype(object).where(activity.notna(), None)


def hot_leads(session_rows: pd.DataFrame, users: pd.DataFrame) -> pd.DataFrame:
    as_of = session_rows["session_date"].max()
    carts = session_rows[session_rows["reached_cart"]].sort_values(
        ["user_id", "session_start", "session_id"], ascending=[True, False, False]
    )
    latest = carts.groupby("user_id", sort=True).head(1)
    last_purchase = session_rows[session_rows["purchased"]].groupby("user_id")["session_start"].max()
    user_index = users.set_index("user_id")
    rows: list[dict[str, Any]] = []
    for session in latest.itertuples():
        if not session.abandoned_cart:
            continue
        bought_at = last_purchase.get(session.user_id)
        if bought_at is not None and bought_at > session.session_start:
            continue
        user = user_index.loc[session.user_id]
        rows.append(
            {
                "user_id": session.user_id,
                "abandoned_session_id": session.session_id,
                "abandoned_at": session.session_start,
                "days_since_abandoned": (as_of - session.session_start.date()).days,
                "abandoned_cart_cents": int(session.cart_value_cents),
                "abandoned_session_page_views": int(session.page_views),
                "purchase_sessions": int(user["purchase_sessions"]),
                "monetary_cents": int(user["monetary_cents"]),
                "rfm_tier": user["rfm_tier"],
                "as_of_date": as_of,
            }
        )
    leads = pd.DataFrame(rows)
    if leads.empty:
        return leads
    values = leads["abandoned_cart_cents"]
    # cume_dist: the share of leads whose cart value is at most this one.
    leads["cart_value_component"] = [float((values <= value).sum()) / len(values) for value in values]
    leads["recency_component"] = 1.0 / (1 + leads["days_since_abandoned"])
    leads["engagement_component"] = leads["abandoned_session_page_views"].clip(upper=10) / 10
    leads["loyalty_component"] = leads["purchase_sessions"].clip(upper=3) / 3
    leads["propensity_score"] = (
        0.40 * leads["recency_component"]
        + 0.30 * leads["cart_value_component"]
        + 0.15 * leads["engagement_component"]
        + 0.15 * leads["loyalty_component"]
    )
    leads = leads.sort_values(
        ["propensity_score", "abandoned_cart_cents", "user_id"], ascending=[False, False, True]
    ).reset_index(drop=True)
    leads["lead_rank"] = range(1, len(leads) + 1)
    return leads


def reference_tables(conn: psycopg.Connection) -> dict[str, pd.DataFrame]:
    """Every Silver and Gold relation dbt builds from data, computed here from Bronze."""
    # The hourly marts' reference builds on this module's daily one (so imports it).
    from shopstream_assets_tests.dbt import hourly_reference

    events = read_bronze(conn)
    session_rows = sessions(events)
    users = user_behavior(session_rows)
    return {
        **hourly_reference.reference_tables(events, session_rows),
        "silver.stg_clickstream_events": staging_events(events),
        "silver.int_user_sessions": session_rows,
        "silver.int_user_activity": user_activity(session_rows),
        "silver.int_rfm_boundaries": rfm_boundaries(users),
        "gold.mart_daily_metrics": daily_metrics(events, session_rows),
        "gold.mart_daily_segment_metrics": daily_segment_metrics(events),
        "gold.mart_daily_segment_sessions": daily_segment_sessions(events, session_rows),
        "gold.mart_conversion_funnel": conversion_funnel(events, session_rows),
        "gold.mart_product_performance": product_performance(events),
        "gold.mart_product_daily": product_daily(events),
        "gold.mart_user_behavior": users,
        "gold.mart_hot_leads": hot_leads(session_rows, users),
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

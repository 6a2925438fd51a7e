"""The pandas reference of the per-user relations (_intermediate.yml, _marts.yml): RFM and
lifecycle, the quintile boundaries, each user's activity, and the hot leads with their own
components and the parts relative to all leads. From ``gold_reference``'s Silver sessions.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import numpy as np
import pandas as pd


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


def session_aggregates(session_rows: pd.DataFrame) -> dict[str, pd.Series]:
    """Per user: first and last session, sessions, revenue, purchase and abandoned-cart sessions."""
    grouped = session_rows.groupby("user_id", sort=True)
    return {
        "first_session_at": grouped["session_start"].min(),
        "last_session_at": grouped["session_start"].max(),
        "frequency": grouped.size(),
        "monetary_cents": grouped["revenue_cents"].sum(),
        "purchase_sessions": grouped["purchased"].sum(),
        "abandoned_cart_sessions": grouped["abandoned_cart"].sum(),
    }


def user_behavior(session_rows: pd.DataFrame) -> pd.DataFrame:
    as_of = session_rows["session_date"].max()
    grouped = session_rows.groupby("user_id", sort=True)
    users = pd.DataFrame(session_aggregates(session_rows)).reset_index()
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
            **session_aggregates(session_rows),
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


def hot_lead_components(session_rows: pd.DataFrame, users: pd.DataFrame) -> pd.DataFrame:
    """One row per lead: the latest session with a cart was abandoned and no purchase started after it;
    with the lead's own parts of the propensity (engagement, loyalty) and RFM."""
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
                "abandoned_cart_cents": int(session.cart_value_cents),
                "abandoned_session_page_views": int(session.page_views),
                "purchase_sessions": int(user["purchase_sessions"]),
                "monetary_cents": int(user["monetary_cents"]),
                "rfm_tier": user["rfm_tier"],
                "last_session_at": user["last_session_at"],
                "frequency": int(user["frequency"]),
                "r_score": int(user["r_score"]),
                "f_score": int(user["f_score"]),
                "m_score": int(user["m_score"]),
                "last_batch_id": int(user["last_batch_id"]),
            }
        )
    leads = pd.DataFrame(rows)
    if leads.empty:
        return leads
    leads["engagement_component"] = leads["abandoned_session_page_views"].clip(upper=10) / 10
    leads["loyalty_component"] = leads["purchase_sessions"].clip(upper=3) / 3
    return leads


def hot_leads(components: pd.DataFrame, as_of: date) -> pd.DataFrame:
    """The leads ranked: the cart-value percentile among all leads and the recency from ``as_of``."""
    if components.empty:
        return components
    leads = components[
        ["user_id", "abandoned_session_id", "abandoned_at", "abandoned_cart_cents", "abandoned_session_page_views",
         "purchase_sessions", "monetary_cents", "rfm_tier", "engagement_component", "loyalty_component"]
    ].copy()  # fmt: skip
    leads["days_since_abandoned"] = [(as_of - moment.date()).days for moment in leads["abandoned_at"]]
    leads["as_of_date"] = as_of
    values = leads["abandoned_cart_cents"]
    # cume_dist: the share of leads whose cart value is at most this one.
    leads["cart_value_component"] = [float((values <= value).sum()) / len(values) for value in values]
    leads["recency_component"] = 1.0 / (1 + leads["days_since_abandoned"])
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

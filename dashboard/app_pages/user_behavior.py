"""User Behavior: who are the best customers, and which users to retarget."""

from __future__ import annotations

import streamlit as st

from dashboard import charts, queries, ui
from dashboard.metrics import format_naira

st.title("User Behavior")
st.caption(
    "RFM segmentation of every customer (recency, frequency and monetary quintiles, 5 = best) and the "
    "cart abandoners most likely to come back, from `gold.mart_user_behavior` and `gold.mart_hot_leads`."
)

LEADS_SHOWN = 50
LEADS_EXPORTED = 10_000


def summary(tiers, leads) -> None:
    users = int(tiers["users"].sum())
    champions = int(tiers.loc[tiers["rfm_tier"] == "Champion", "users"].sum())
    champion_revenue = float(tiers.loc[tiers["rfm_tier"] == "Champion", "revenue"].astype(float).sum())
    total_revenue = float(tiers["revenue"].astype(float).sum())
    as_of = tiers["as_of_date"].max()
    columns = st.columns(4)
    columns[0].metric("Customers", f"{users:,}", border=True, help=f"Users with a session, as of {as_of}")
    columns[1].metric(
        "Champions",
        f"{champions:,}",
        delta=f"{100.0 * champions / users:.1f}% of customers" if users else None,
        delta_color="off",
        delta_arrow="off",
        border=True,
        help="RFM score 13-15",
    )
    columns[2].metric(
        "Champions' revenue share",
        f"{100.0 * champion_revenue / total_revenue:.1f}%" if total_revenue else "–",
        border=True,
        help=f"{format_naira(champion_revenue)} of {format_naira(total_revenue)} lifetime revenue",
    )
    columns[3].metric(
        "Hot leads",
        f"{len(leads):,}" if len(leads) < LEADS_EXPORTED else f"{LEADS_EXPORTED:,}+",
        border=True,
        help="Users whose latest cart ended without a purchase",
    )


def tier_table(tiers) -> None:
    ordered = charts.in_order(tiers, "rfm_tier", charts.TIER_ORDER)
    ui.table(
        ordered.drop(columns="as_of_date"),
        key="rfm_tier_table",
        file_name="shopstream_rfm_tiers.csv",
        column_config={
            "rfm_tier": st.column_config.TextColumn("Tier"),
            "users": st.column_config.NumberColumn("Users", format="localized"),
            "revenue": st.column_config.NumberColumn("Lifetime revenue (₦)", format="localized"),
            "avg_recency_days": st.column_config.NumberColumn("Avg days since last session", format="%.1f"),
            "avg_frequency": st.column_config.NumberColumn("Avg sessions", format="%.1f"),
            "avg_monetary": st.column_config.NumberColumn("Avg revenue (₦)", format="localized"),
        },
    )


def hot_leads_table(leads) -> None:
    st.subheader("Hot leads to retarget")
    st.caption(
        "Ranked by propensity score: 40% recency of the abandoned cart, 30% cart value percentile, "
        "15% engagement, 15% past purchases."
    )
    ui.table(
        leads.head(LEADS_SHOWN),
        key="hot_leads_table",
        file_name="shopstream_hot_leads_shown.csv",
        column_config={
            "lead_rank": st.column_config.NumberColumn("Rank"),
            "user_id": st.column_config.TextColumn("User"),
            "propensity_score": st.column_config.ProgressColumn(
                "Propensity", min_value=0.0, max_value=1.0, format="%.3f"
            ),
            "abandoned_cart_value": st.column_config.NumberColumn("Cart value (₦)", format="localized"),
            "days_since_abandoned": st.column_config.NumberColumn("Days since"),
            "abandoned_at": st.column_config.DatetimeColumn("Abandoned at", format="YYYY-MM-DD HH:mm"),
            "abandoned_session_page_views": st.column_config.NumberColumn("Pages viewed"),
            "purchase_sessions": st.column_config.NumberColumn("Past purchases"),
            "monetary": st.column_config.NumberColumn("Lifetime revenue (₦)", format="localized"),
            "rfm_tier": st.column_config.TextColumn("RFM tier"),
        },
    )
    st.download_button(
        f"Download all {len(leads):,} leads (CSV)",
        data=leads.to_csv(index=False).encode(),
        file_name="shopstream_hot_leads.csv",
        mime="text/csv",
        icon=":material/download:",
        on_click="ignore",
        key="hot_leads_csv",
    )


def user_behavior() -> None:
    tiers = queries.rfm_tiers()
    if tiers.empty:
        ui.no_data("`gold.mart_user_behavior` has no users yet: the first dbt run after events reach Bronze fills it.")
        return
    leads = queries.hot_leads(LEADS_EXPORTED)
    summary(tiers, leads)

    tier_col, lifecycle_col = st.columns([3, 2])
    tier_col.plotly_chart(charts.rfm_tiers(tiers), key="rfm_tiers")
    lifecycle_col.plotly_chart(charts.lifecycle(queries.lifecycle_stages()), key="lifecycle")
    tier_table(tiers)

    scores_col, scatter_col = st.columns(2)
    scores_col.plotly_chart(charts.rfm_scores(queries.rfm_scores()), key="rfm_scores")
    scatter_col.plotly_chart(charts.rfm_scatter(queries.rfm_users()), key="rfm_scatter")

    if leads.empty:
        ui.no_data("No hot leads: no user's latest cart ended without a purchase.")
    else:
        hot_leads_table(leads)


ui.auto_refreshing(user_behavior)

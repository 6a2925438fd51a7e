"""Pure DataFrame -> Plotly Figure builders: no Streamlit, no database, testable alone.

Scatter traces are plain ``go.Scatter`` (SVG): Plotly Express switches to WebGL above
1,000 points, which a headless browser without a GPU may not draw.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboard.metrics import KPI_BY_KEY, PeriodCounts, kpi_values

ACCENT = "#2563eb"
ACCENT_LIGHT = "#93c5fd"
GOOD = "#16a34a"
WARN = "#f59e0b"
BAD = "#dc2626"
MUTED = "#64748b"

# gold.mart_user_behavior's tiers, best first (the reference's RFM bands).
TIER_ORDER: tuple[str, ...] = ("Champion", "Loyal", "Potential", "At Risk", "Lost")
TIER_COLORS: dict[str, str] = {
    "Champion": "#15803d",
    "Loyal": "#22c55e",
    "Potential": "#3b82f6",
    "At Risk": "#f59e0b",
    "Lost": "#94a3b8",
}
LIFECYCLE_ORDER: tuple[str, ...] = ("New", "Browser", "Buyer", "Repeat Buyer", "Dormant", "Churned")
LIFECYCLE_COLORS: dict[str, str] = {
    "New": "#38bdf8",
    "Browser": "#818cf8",
    "Buyer": "#22c55e",
    "Repeat Buyer": "#15803d",
    "Dormant": "#f59e0b",
    "Churned": "#94a3b8",
}


def _layout(figure: go.Figure, *, height: int = 320, title: str | None = None) -> go.Figure:
    figure.update_layout(
        template="plotly_white",
        height=height,
        # Title on the first line, legend on its own line under it: they never overlap.
        margin={"l": 8, "r": 8, "t": 72 if title else 12, "b": 8},
        title={"text": title, "x": 0, "y": 0.98, "yanchor": "top", "font": {"size": 15}} if title else None,
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.01, "xanchor": "left", "x": 0},
        hovermode="x unified",
        font={"family": "Inter, system-ui, sans-serif"},
    )
    return figure


def in_order(frame: pd.DataFrame, column: str, order: tuple[str, ...]) -> pd.DataFrame:
    """Rows in the given category order; unknown values last, alphabetically."""
    rank = {name: index for index, name in enumerate(order)}
    return frame.sort_values(by=column, key=lambda values: values.map(lambda v: (rank.get(v, len(rank)), v)))


def daily_kpis(daily_counts: pd.DataFrame) -> pd.DataFrame:
    """Each period's counts (a day's or an hour's) with its KPIs added (the formulas of dashboard.metrics)."""
    if daily_counts.empty:
        return daily_counts.assign(**{key: [] for key in KPI_BY_KEY})
    rows = []
    for record in daily_counts.to_dict("records"):
        rows.append({**record, **kpi_values(PeriodCounts.from_mapping(record))})
    return pd.DataFrame(rows)


def _period_column(frame: pd.DataFrame) -> str:
    return "period_start" if "period_start" in frame.columns else "metric_date"


def period_labels(starts: pd.Series, grain: str) -> list[str]:
    """One label per period: '05 Dec' by day, '07:00' by hour ('05 Dec 07:00' when the hours span days).

    The axis is categorical with these labels, so each point is drawn once with one label (a
    date axis over one or two points repeats its tick labels: "05 Dec 05 Dec 06 Dec"). Plain
    Python dates and times: pandas' nanosecond timestamps stop at 2262, Gold's days do not."""
    moments = [_plain_moment(start) for start in starts]
    if grain == "hour":
        several_days = len({moment.date() for moment in moments if isinstance(moment, datetime)}) > 1
        return [moment.strftime("%d %b %H:%M" if several_days else "%H:%M") for moment in moments]
    several_years = len({moment.year for moment in moments}) > 1
    return [moment.strftime("%d %b %Y" if several_years else "%d %b") for moment in moments]


def period_keys(starts: pd.Series) -> list[str]:
    """The period each point stands for, as ISO text: what a selection on a trend hands back."""
    return [_plain_moment(start).isoformat() for start in starts]


def _plain_moment(value: object) -> date:
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    if isinstance(value, date):
        return value
    raise TypeError(f"a period starts on a date or a datetime, got {value!r}")


def _trend_axis(figure: go.Figure, grain: str) -> None:
    figure.update_xaxes(type="category", title_text="UTC hour" if grain == "hour" else "UTC day")


def revenue_trend(daily: pd.DataFrame, grain: str = "day") -> go.Figure:
    """Revenue (bars) and purchases (line, right axis) by day or by hour."""
    starts = daily[_period_column(daily)]
    labels, keys = period_labels(starts, grain), period_keys(starts)
    figure = make_subplots(specs=[[{"secondary_y": True}]])
    figure.add_trace(
        go.Bar(
            x=labels,
            y=daily["revenue"].astype(float),
            customdata=keys,
            name="Revenue (₦)",
            marker_color=ACCENT,
            hovertemplate="₦%{y:,.0f}",
        ),
        secondary_y=False,
    )
    figure.add_trace(
        go.Scatter(
            x=labels,
            y=daily["purchases"],
            customdata=keys,
            name="Purchases",
            mode="lines+markers",
            line={"color": WARN, "width": 2},
            hovertemplate="%{y:,}",
        ),
        secondary_y=True,
    )
    figure.update_yaxes(title_text="Revenue (₦)", tickprefix="₦", secondary_y=False, rangemode="tozero")
    figure.update_yaxes(title_text="Purchases", secondary_y=True, showgrid=False, rangemode="tozero", tickformat=",.0f")
    _trend_axis(figure, grain)
    return _layout(figure, title=f"Revenue by {grain}")


def conversion_trend(daily: pd.DataFrame, grain: str = "day") -> go.Figure:
    """Conversion, cart and checkout rates by day or by hour, in percent."""
    starts = daily[_period_column(daily)]
    labels, keys = period_labels(starts, grain), period_keys(starts)
    figure = go.Figure()
    for key, color in (("conversion_rate", ACCENT), ("cart_rate", GOOD), ("checkout_rate", WARN)):
        figure.add_trace(
            go.Scatter(
                x=labels,
                y=daily[key],
                customdata=keys,
                name=KPI_BY_KEY[key].label,
                mode="lines+markers",
                line={"color": color, "width": 2},
                hovertemplate="%{y:.2f}%",
            )
        )
    figure.update_yaxes(ticksuffix="%", rangemode="tozero")
    _trend_axis(figure, grain)
    return _layout(figure, title=f"Conversion by {grain}")


# The funnel's steps: the segment sessions marts' column and its label, in funnel order.
FUNNEL_STEPS: dict[str, str] = {
    "viewed_sessions": "Viewed a product",
    "carted_sessions": "Added to cart",
    "purchased_sessions": "Purchased",
}


def funnel(steps: Mapping[str, int]) -> go.Figure:
    """The session funnel: viewed -> carted -> purchased, with % of the first step."""
    labels = list(FUNNEL_STEPS.values())
    values = [steps[column] for column in FUNNEL_STEPS]
    figure = go.Figure(
        go.Funnel(
            y=labels,
            x=values,
            textinfo="value+percent initial+percent previous",
            texttemplate="%{value:,} sessions<br>%{percentInitial:.1%} of viewers",
            marker={"color": [ACCENT, ACCENT_LIGHT, GOOD]},
            connector={"line": {"color": "#cbd5e1"}},
            customdata=list(FUNNEL_STEPS),
            hovertemplate="%{y}: %{x:,} sessions<br>%{percentPrevious:.1%} of the step before<extra></extra>",
        )
    )
    figure = _layout(figure, title="Where sessions drop off")
    figure.update_layout(hovermode="closest")
    return figure


def top_products(products: pd.DataFrame) -> go.Figure:
    """Horizontal bars of revenue, the best product on top."""
    ordered = products.sort_values("revenue", ascending=True)
    figure = go.Figure(
        go.Bar(
            x=ordered["revenue"].astype(float),
            y=ordered["product_name"],
            orientation="h",
            marker_color=ACCENT,
            customdata=ordered[["product_category", "units_sold", "product_id"]],
            text=[f"₦{value:,.0f}" for value in ordered["revenue"].astype(float)],
            textposition="auto",
            hovertemplate="%{y} (%{customdata[0]})<br>₦%{x:,.0f} from %{customdata[1]:,} units<extra></extra>",
        )
    )
    figure.update_xaxes(tickprefix="₦", showgrid=True)
    figure = _layout(figure, height=max(260, 34 * len(ordered) + 60), title="Top products by revenue")
    figure.update_layout(hovermode="closest")
    return figure


def rfm_tiers(tiers: pd.DataFrame) -> go.Figure:
    """Users per RFM tier, best tier first, with each tier's share of revenue."""
    ordered = in_order(tiers, "rfm_tier", TIER_ORDER)
    total_revenue = float(ordered["revenue"].astype(float).sum()) or 1.0
    shares = [100.0 * float(value) / total_revenue for value in ordered["revenue"]]
    figure = go.Figure(
        go.Bar(
            x=ordered["rfm_tier"],
            y=ordered["users"],
            marker_color=[TIER_COLORS.get(tier, MUTED) for tier in ordered["rfm_tier"]],
            text=[
                f"{users:,} users<br>{share:.0f}% of revenue"
                for users, share in zip(ordered["users"], shares, strict=True)
            ],
            textposition="outside",
            textangle=0,
            constraintext="none",
            textfont={"size": 12},
            cliponaxis=False,
            hovertemplate="%{x}: %{y:,} users<extra></extra>",
        )
    )
    figure = _layout(figure, title="Customers by RFM tier")
    figure.update_layout(hovermode="closest")
    return figure


def rfm_scores(scores: pd.DataFrame) -> go.Figure:
    """Users by score 1-5 for each of recency, frequency and monetary."""
    figure = go.Figure()
    for dimension, color in (("Recency", ACCENT), ("Frequency", GOOD), ("Monetary", WARN)):
        rows = scores[scores["dimension"] == dimension].sort_values("score")
        figure.add_trace(
            go.Bar(x=rows["score"], y=rows["users"], name=dimension, marker_color=color, hovertemplate="%{y:,}")
        )
    figure.update_xaxes(title_text="Score (5 = best)", tickmode="array", tickvals=[1, 2, 3, 4, 5])
    figure.update_yaxes(title_text="Users")
    figure = _layout(figure, title="Recency, frequency and monetary scores")
    figure.update_layout(barmode="group")
    return figure


def rfm_scatter(users: pd.DataFrame) -> go.Figure:
    """Each user: days since last session vs sessions, sized by revenue, colored by tier."""
    figure = go.Figure()
    max_monetary = float(users["monetary"].astype(float).max() or 1.0) if not users.empty else 1.0
    for tier in TIER_ORDER:
        rows = users[users["rfm_tier"] == tier]
        if rows.empty:
            continue
        monetary = rows["monetary"].astype(float)
        figure.add_trace(
            go.Scatter(
                x=rows["recency_days"],
                y=rows["frequency"],
                mode="markers",
                name=tier,
                marker={
                    "color": TIER_COLORS[tier],
                    "size": 5 + 20 * (monetary / max_monetary) ** 0.5,
                    "opacity": 0.6,
                    "line": {"width": 0},
                },
                customdata=pd.DataFrame({"user": rows["user_id"], "monetary": monetary}),
                hovertemplate=(
                    "%{customdata[0]}<br>%{x} days since last session<br>%{y} sessions"
                    "<br>₦%{customdata[1]:,.0f}<extra>" + tier + "</extra>"
                ),
            )
        )
    figure.update_xaxes(title_text="Recency: days since last session")
    figure.update_yaxes(title_text="Frequency: sessions")
    figure = _layout(figure, height=360, title="Recency x frequency (bubble size = revenue)")
    figure.update_layout(hovermode="closest")
    return figure


def lifecycle(stages: pd.DataFrame) -> go.Figure:
    """Users per lifecycle stage as a donut, in the lifecycle's order."""
    ordered = in_order(stages, "lifecycle_stage", LIFECYCLE_ORDER)
    figure = go.Figure(
        go.Pie(
            labels=ordered["lifecycle_stage"],
            values=ordered["users"],
            hole=0.55,
            sort=False,
            marker={"colors": [LIFECYCLE_COLORS.get(stage, MUTED) for stage in ordered["lifecycle_stage"]]},
            textinfo="label+percent",
            hovertemplate="%{label}: %{value:,} users<extra></extra>",
        )
    )
    figure = _layout(figure, title="Lifecycle stages")
    figure.update_layout(showlegend=False)
    return figure


def events_per_second(per_second: pd.DataFrame) -> go.Figure:
    """Events per second by event time, with a 10 s rolling mean."""
    figure = go.Figure()
    if not per_second.empty:
        series = per_second.set_index("second")["events"].astype(float)
        # Seconds without events are zeros, not gaps.
        full_index = pd.date_range(series.index.min(), series.index.max(), freq="1s")
        series = series.reindex(full_index, fill_value=0.0)
        figure.add_trace(
            go.Scatter(
                x=series.index,
                y=series.values,
                name="events/s",
                mode="lines",
                line={"color": ACCENT_LIGHT, "width": 1},
                fill="tozeroy",
                hovertemplate="%{y:,.0f} events/s",
            )
        )
        figure.add_trace(
            go.Scatter(
                x=series.index,
                y=series.rolling(10, min_periods=1).mean().values,
                name="10 s mean",
                mode="lines",
                line={"color": ACCENT, "width": 2.5},
                hovertemplate="%{y:,.1f} events/s",
            )
        )
    figure.update_yaxes(title_text="events/s", rangemode="tozero")
    figure.update_xaxes(tickformat="%H:%M:%S")
    return _layout(figure, title="Events per second (event time)")


def rejects_by_reason(rejects: pd.DataFrame) -> go.Figure:
    """Rejected messages per reason, largest on top."""
    ordered = rejects.sort_values("rejects", ascending=True)
    figure = go.Figure(
        go.Bar(
            x=ordered["rejects"],
            y=ordered["reason"],
            orientation="h",
            marker_color=BAD,
            text=[f"{value:,}" for value in ordered["rejects"]],
            textposition="auto",
            hovertemplate="%{y}: %{x:,} rejects<extra></extra>",
        )
    )
    figure = _layout(figure, height=max(220, 34 * len(ordered) + 60), title="Rejects by reason (all time)")
    figure.update_layout(hovermode="closest")
    return figure

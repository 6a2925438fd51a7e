"""Overview: what is our conversion, where do sessions drop off, which products earn."""

from __future__ import annotations

from datetime import UTC, date, datetime

import streamlit as st

from dashboard import charts, overview_data, periods, ui
from dashboard.drill import drill_panel, drill_target
from dashboard.metrics import KPIS, change, format_value, kpi_values
from dashboard.periods import Filters
from streaming.events import EARLIEST_EVENT_TIME

DEFAULT_DAYS = 7

st.title("Overview")
st.caption(
    "The reference KPIs for the selected period, each against the period of the same length before it, "
    "from Gold's hourly (periods up to two days) or daily segment tables whatever the filters. "
    "Click a bar, a point, a funnel step or a product to see the events behind it."
)

# Sessions (cart abandonment, the funnel) have no category: they follow country and device only.
SESSIONS_IGNORE_CATEGORY = "A session spans categories: the category filter does not apply to sessions."
# What a category filter means for the KPIs that are not event counts (dashboard.metrics).
CATEGORY_SCOPE: dict[str, str] = {
    "cart_abandonment_rate": SESSIONS_IGNORE_CATEGORY,
    "revenue_per_user": "Users here: user-days (user-hours by the hour) whose first event was on a product "
    "of the selected categories.",
}


def picker_bounds(first_day: date, last_day: date) -> tuple[date, date]:
    """The days the custom range offers: Gold's, from the first day the stream accepts events.

    Gold may hold older days (Bronze written before the stream bounded event_timestamp, such
    as year 1); the picker never offers a day before EARLIEST_EVENT_TIME unless Gold has no
    later one.
    """
    return min(max(first_day, EARLIEST_EVENT_TIME.date()), last_day), last_day


def period_control(column: st.delta_generator.DeltaGenerator, first_day: date, last_day: date) -> periods.Period:
    preset = column.selectbox(
        "Period", periods.PRESETS, index=periods.PRESETS.index(periods.DEFAULT_PRESET), key="overview_preset"
    )
    custom = None
    if preset == periods.CUSTOM:
        first_day, last_day = picker_bounds(first_day, last_day)
        default_start = date.fromordinal(max(first_day.toordinal(), last_day.toordinal() - (DEFAULT_DAYS - 1)))
        picked = column.date_input(
            "Days (UTC)",
            value=(default_start, last_day),
            min_value=first_day,
            max_value=last_day,
            key="overview_period",
        )
        # While the user has picked only the first date of a range, keep showing that day.
        custom = (picked[0], picked[-1]) if isinstance(picked, tuple | list) and picked else (last_day, last_day)
    return periods.resolve(preset, datetime.now(UTC), custom)


def filter_bar(first_day: date, last_day: date) -> Filters:
    options = overview_data.filter_options()
    period_col, country_col, device_col, category_col = st.columns([1.3, 1, 1, 1])
    period = period_control(period_col, first_day, last_day)
    countries = country_col.multiselect("Country", options["countries"], key="overview_countries", placeholder="All")
    devices = device_col.multiselect("Device", options["devices"], key="overview_devices", placeholder="All")
    categories = category_col.multiselect(
        "Category", options["categories"], key="overview_categories", placeholder="All"
    )
    return Filters.of(period, tuple(countries), tuple(devices), tuple(categories))


def kpi_cards(filters: Filters) -> None:
    counts = overview_data.period_counts(filters)
    current = kpi_values(counts)
    previous_filters = filters.previous()
    previous_counts = overview_data.period_counts(previous_filters)
    previous = kpi_values(previous_counts)
    length = f"{filters.period.length} {'h' if filters.grain == 'hour' else 'd'}"
    previous_label = previous_filters.period.label()
    # Two rows of four: seven KPIs and the order count, each card wide enough for its value.
    columns = [*st.columns(4), *st.columns(4)]
    for column, kpi in zip(columns, KPIS, strict=False):
        delta = change(current[kpi.key], previous[kpi.key])
        scope = f" {CATEGORY_SCOPE[kpi.key]}" if filters.categories and kpi.key in CATEGORY_SCOPE else ""
        column.metric(
            kpi.label,
            format_value(kpi, current[kpi.key]),
            delta=f"{delta:+.1f}%" if delta is not None else None,
            delta_color="normal" if kpi.higher_is_better else "inverse",
            delta_description=f"vs previous {length}" if delta is not None else None,
            help=f"{kpi.help}. Previous period: {previous_label}: {format_value(kpi, previous[kpi.key])}.{scope}",
            border=True,
        )
    orders, previous_orders = counts.purchases, previous_counts.purchases
    orders_change = change(orders, previous_orders)
    columns[len(KPIS)].metric(
        "Orders",
        f"{orders:,}",
        delta=f"{orders_change:+.1f}%" if orders_change is not None else None,
        delta_description=f"vs previous {length}" if orders_change is not None else None,
        help=f"Purchase events. Previous period: {previous_orders:,}.",
        border=True,
    )


def overview() -> None:
    first_day, last_day = overview_data.data_bounds()
    if last_day is None:
        ui.no_data("Gold has no daily metrics yet: the first dbt run after events reach Bronze fills this page.")
        return
    filters = filter_bar(first_day, last_day)
    st.caption(f"Showing {filters.period.label()}, by {filters.grain}.")
    kpi_cards(filters)

    trend = charts.daily_kpis(overview_data.trend_counts(filters))
    if trend.empty:
        ui.no_data("No events match this period and these filters.")
        return
    revenue_col, conversion_col = st.columns(2)
    selections = {
        "revenue_trend": revenue_col.plotly_chart(
            charts.revenue_trend(trend, filters.grain), key="revenue_trend", on_select="rerun", selection_mode="points"
        ),
        "conversion_trend": conversion_col.plotly_chart(
            charts.conversion_trend(trend, filters.grain),
            key="conversion_trend",
            on_select="rerun",
            selection_mode="points",
        ),
    }

    funnel_col, products_col = st.columns(2)
    selections["funnel"] = funnel_col.plotly_chart(
        charts.funnel(overview_data.funnel(filters)), key="funnel", on_select="rerun", selection_mode="points"
    )
    if filters.categories:
        funnel_col.caption(f"Sessions of the selected countries and devices. {SESSIONS_IGNORE_CATEGORY}")
    products = overview_data.top_products(filters)
    if products.empty:
        products_col.info("No product sold or viewed in this period and these filters.")
    else:
        selections["top_products"] = products_col.plotly_chart(
            charts.top_products(products), key="top_products", on_select="rerun", selection_mode="points"
        )
        days = "" if filters.grain == "day" else " Products are kept per day: this is the period's whole days."
        products_col.caption(f"Revenue in the selected period and filters, from `gold.mart_product_daily`.{days}")
    target = drill_target(filters, selections)
    if target is not None:
        drill_panel(target)


ui.auto_refreshing(overview)

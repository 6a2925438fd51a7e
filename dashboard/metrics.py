"""The reference's six KPIs, defined once in Python over additive counts.

``gold.mart_daily_metrics`` (dbt) is the other, SQL definition of the same formulas for one
UTC day; the tests hold the two equal day by day. The dashboard sums the counts over a
period and over the Gold segment cells its filters select (``gold.mart_daily_segment_metrics``
and ``gold.mart_daily_segment_sessions``, whose YAML is the SQL side of these definitions)
and applies these formulas, so a period's rate is a ratio of sums, never an average of
daily rates.

Unique users are *user-days*: each (user, UTC day) counts once, in the segment cell of the
user's first event that day. Unfiltered, a user active on three days of the period counts
three times (the daily mart's unique users summed over days; for one day exactly the
reference's "Total Revenue / Unique Users"). Under a country or device filter they are the
user-days that began in the selected countries or devices; under a category filter, those
whose first event of the day was on a product of the selected categories. Revenue per user
under a filter is the filtered revenue over those user-days, so with a category filter it is
the categories' revenue per user-day that began in them.

Sessions have no category (a session spans products): sessions and cart abandonment follow
the country and device filters only, over all categories.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True)
class PeriodCounts:
    """Additive totals of one period (or one day), the inputs of every KPI."""

    events: int = 0
    page_views: int = 0
    add_to_carts: int = 0
    purchases: int = 0
    units_sold: int = 0
    revenue: float = 0.0
    # User-days: each (user, day) once, in the cell of its first event (module docstring).
    user_days: int = 0
    sessions: int = 0
    abandoned_cart_sessions: int = 0

    @classmethod
    def from_mapping(cls, row: Mapping[str, Any]) -> PeriodCounts:
        """Counts from a query row; SQL's null (no rows) becomes zero."""
        values: dict[str, Any] = {}
        for field in fields(cls):
            raw = row.get(field.name)
            values[field.name] = (float(raw) if field.type == "float" else int(raw)) if raw is not None else 0
        return cls(**values)

    @property
    def is_empty(self) -> bool:
        return self.events == 0 and self.sessions == 0


def _percent(numerator: float, denominator: float) -> float | None:
    return 100.0 * numerator / denominator if denominator else None


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


@dataclass(frozen=True)
class Kpi:
    """One KPI card: its formula, how to show it, and which way is good."""

    key: str  # the column name in gold.mart_daily_metrics
    label: str
    formula: Callable[[PeriodCounts], float | None]
    unit: str  # "percent" or "naira"
    higher_is_better: bool
    help: str


# The reference README's "Key Performance Indicators" table, in its order, plus revenue.
KPIS: tuple[Kpi, ...] = (
    Kpi("revenue", "Revenue", lambda c: c.revenue, "naira", True, "Sum of purchase price x quantity"),
    Kpi(
        "conversion_rate",
        "Conversion rate",
        lambda c: _percent(c.purchases, c.page_views),
        "percent",
        True,
        "Purchases / page views x 100",
    ),
    Kpi(
        "cart_rate",
        "Cart rate",
        lambda c: _percent(c.add_to_carts, c.page_views),
        "percent",
        True,
        "Add-to-carts / page views x 100",
    ),
    Kpi(
        "checkout_rate",
        "Checkout rate",
        lambda c: _percent(c.purchases, c.add_to_carts),
        "percent",
        True,
        "Purchases / add-to-carts x 100",
    ),
    Kpi(
        "cart_abandonment_rate",
        "Cart abandonment",
        lambda c: _percent(c.abandoned_cart_sessions, c.sessions),
        "percent",
        False,
        "Sessions with a cart and no purchase / sessions x 100 (sessions have no category)",
    ),
    Kpi(
        "average_order_value",
        "Average order value",
        lambda c: _ratio(c.revenue, c.purchases),
        "naira",
        True,
        "Revenue / purchases",
    ),
    Kpi(
        "revenue_per_user",
        "Revenue per user",
        lambda c: _ratio(c.revenue, c.user_days),
        "naira",
        True,
        "Revenue / unique users (user-days: a user counts once per day, in the segment of the day's first event)",
    ),
)
KPI_BY_KEY: dict[str, Kpi] = {kpi.key: kpi for kpi in KPIS}


def kpi_values(counts: PeriodCounts) -> dict[str, float | None]:
    """Every KPI of ``counts``; None where the denominator is zero (SQL's nullif)."""
    return {kpi.key: kpi.formula(counts) for kpi in KPIS}


def change(current: float | None, previous: float | None) -> float | None:
    """Relative change in percent against the previous period; None when not comparable."""
    if current is None or previous is None or previous == 0:
        return None
    return 100.0 * (current - previous) / abs(previous)


def format_value(kpi: Kpi, value: float | None) -> str:
    """The card text: rates with two decimals, naira by :func:`format_naira`."""
    if value is None:
        return "–"
    if kpi.unit == "percent":
        return f"{value:.2f}%"
    return format_naira(value)


def format_naira(value: float) -> str:
    """₦ with thousands separators, and B/M above a million so a card stays one line."""
    magnitude = abs(value)
    if magnitude >= 1e9:
        return f"₦{value / 1e9:,.2f}B"
    if magnitude >= 1e6:
        return f"₦{value / 1e6:,.2f}M"
    if magnitude >= 1_000:
        return f"₦{value:,.0f}"
    return f"₦{value:,.2f}"

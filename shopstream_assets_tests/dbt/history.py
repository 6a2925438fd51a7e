"""Seventy days of returning shoppers, made so that Gold has something to say about time.

Two days of simulator traffic make every user New. Here shoppers come back after 7, 14 and
30+ days, buy and abandon carts all through the period, and some sit exactly on each lifecycle
threshold of ``mart_user_behavior`` (last session 14/15 and 30/31 days before the as-of day,
first session 6/7 days before it), so that Churned, Dormant, New, Repeat Buyer, Buyer and
Browser all occur, with every RFM tier and hot leads whose cart is days old; a threshold moved
by one day changes some user's stage.

Recency is counted from the data's as-of day (the UTC day of the newest session start, see
``_marts.yml``), not from the wall clock, so nothing needs pinning: the visits are placed in
days before ``as_of``, and the as-of day's own visits come late in that day.

Everything random comes from ``random.Random(seed)``. Events are encoded as the producer
encodes them (:func:`streaming.events.encode_event`) and are meant for the stream's own
writer (``streaming.bronze_load.write_messages``), a week of them per batch.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from streaming.events import SCHEMA_VERSION, format_timestamp
from streaming.shop import CATALOG, COUNTRY_WEIGHTS, DEVICE_WEIGHTS, Product

HISTORY_DAYS = 70  # the as-of day and the 69 before it
BROWSE, ABANDON, BUY = "browse", "abandon", "buy"
KINDS, KIND_WEIGHTS = (BROWSE, ABANDON, BUY), (0.35, 0.3, 0.35)
NULL_QUANTITY_SHARE = 0.05  # purchases sent without a quantity: the stream repairs them to 1
CATEGORIES = sorted({product.category for product in CATALOG})


@dataclass(frozen=True)
class Visit:
    days_before: int  # before the as-of day
    kind: str  # BROWSE, ABANDON or BUY


@dataclass(frozen=True)
class Shopper:
    user_id: str
    country: str
    device: str
    category: str  # the one most of their sessions browse
    visits: tuple[Visit, ...]


def _kinds(rng: random.Random, count: int) -> list[str]:
    return rng.choices(KINDS, KIND_WEIGHTS, k=count)


def _days(rng: random.Random, count: int, low: int, high: int) -> list[int]:
    """``count`` distinct days before the as-of day, in [low, high]."""
    return rng.sample(range(low, high + 1), min(count, high - low + 1))


def _plans(rng: random.Random) -> Iterator[list[Visit]]:
    """Each shopper's visits. The first few of each group sit on a lifecycle threshold."""
    last_day = HISTORY_DAYS - 1
    # Churned: last visit 31+ days back (three exactly 31), some of them weekly visitors before.
    for number in range(36):
        last = 31 if number < 3 else rng.randint(31, 60)
        earlier = (
            [last + 7 * step for step in range(1, 4)]
            if number % 4 == 1
            else _days(rng, rng.randint(0, 3), last + 1, last_day)
        )
        days = [last, *(day for day in earlier if day <= last_day)]
        yield [Visit(day, kind) for day, kind in zip(days, _kinds(rng, len(days)), strict=True)]
    # Dormant: last visit 15-30 days back (three exactly 15, three exactly 30), some fortnightly before.
    for number in range(36):
        last = 15 if number < 3 else 30 if number < 6 else rng.randint(15, 30)
        earlier = [last + 14, last + 28] if number % 3 == 1 else _days(rng, rng.randint(0, 3), last + 1, last_day)
        days = [last, *(day for day in earlier if day <= last_day)]
        yield [Visit(day, kind) for day, kind in zip(days, _kinds(rng, len(days)), strict=True)]
    # New: first visit under 7 days back (three exactly 6).
    for number in range(24):
        first = 6 if number < 3 else rng.randint(0, 6)
        days = [first, *_days(rng, rng.randint(0, 2), 0, first - 1)] if first > 0 else [0]
        yield [Visit(day, kind) for day, kind in zip(days, _kinds(rng, len(days)), strict=True)]
    # Repeat buyers: two or more buying visits, first 7+ days back (three exactly 7), last within 14
    # days (three exactly 14); a third of them weekly, a third fortnightly.
    for number in range(30):
        if number < 3:
            days = [7, rng.randint(0, 6)]
        elif number < 6:
            days = [14, rng.randint(21, last_day)]
        elif number % 3 == 0:
            days = list(range(rng.randint(0, 14), rng.randint(28, last_day), 7))
        elif number % 3 == 1:
            days = list(range(rng.randint(0, 14), last_day, 14))
        else:
            days = [rng.randint(0, 14), *_days(rng, rng.randint(1, 4), 15, last_day)]
        kinds = [BUY, BUY, *_kinds(rng, len(days) - 2)]
        rng.shuffle(kinds)
        yield [Visit(day, kind) for day, kind in zip(days, kinds, strict=True)]
    # Champions in the making: frequent big buyers, back on the as-of day.
    for _ in range(12):
        days = [0, *_days(rng, rng.randint(3, 6), 1, last_day)]
        yield [Visit(day, BUY) for day in days]
    # Buyers and browsers: one buying visit, or none; first 7+ days back, last within 14 days.
    for buying in (True, False):
        for number in range(30):
            if number < 3:
                days = [7, rng.randint(0, 6)]
            elif number < 6:
                days = [14, *_days(rng, rng.randint(1, 2), 15, last_day)]
            else:
                days = [rng.randint(0, 14), *_days(rng, rng.randint(1, 3), 15, last_day)]
            kinds = [rng.choice((BROWSE, ABANDON)) for _ in days]
            if buying:
                kinds[rng.randrange(len(kinds))] = BUY
            yield [Visit(day, kind) for day, kind in zip(days, kinds, strict=True)]
    # Back after a month or more away.
    for _ in range(24):
        days = [rng.randint(0, 14), *_days(rng, rng.randint(1, 2), 50, last_day)]
        yield [Visit(day, kind) for day, kind in zip(days, _kinds(rng, len(days)), strict=True)]


def shoppers(seed: int) -> list[Shopper]:
    rng = random.Random(seed)
    countries, country_weights = zip(*COUNTRY_WEIGHTS.items(), strict=True)
    devices, device_weights = zip(*DEVICE_WEIGHTS.items(), strict=True)
    return [
        Shopper(
            f"USER_H{number:04d}",
            rng.choices(countries, country_weights)[0],
            rng.choices(devices, device_weights)[0],
            rng.choice(CATEGORIES),
            tuple(sorted(visits, key=lambda visit: -visit.days_before)),
        )
        for number, visits in enumerate(_plans(rng), start=1)
    ]


class SessionMaker:
    """The events of one visit: views, then carts and purchases as its kind says."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.sessions = 0

    def _product(self, category: str) -> Product:
        pool = [product for product in CATALOG if product.category == category]
        if self.rng.random() < 0.3:
            pool = list(CATALOG)
        return self.rng.choices(pool, [product.popularity for product in pool])[0]

    def events(self, shopper: Shopper, visit: Visit, as_of: date) -> list[dict[str, Any]]:
        rng = self.rng
        self.sessions += 1
        session_id = f"SESSION_H{self.sessions:05d}"
        day = as_of - timedelta(days=visit.days_before)
        # The as-of day's visits come after any other traffic of that day; a few earlier visits run
        # past midnight (the session stays on the day it started).
        if visit.days_before == 0:
            start_seconds = rng.randint(12 * 3600, 21 * 3600)
        elif rng.random() < 0.08:
            start_seconds = rng.randint(23 * 3600 + 50 * 60, 24 * 3600 - 30)
        else:
            start_seconds = rng.randint(6 * 3600, 22 * 3600)
        moment = datetime.combine(day, time(), tzinfo=UTC) + timedelta(seconds=start_seconds)
        device = shopper.device if rng.random() < 0.85 else rng.choice(list(DEVICE_WEIGHTS))
        viewed = [self._product(shopper.category) for _ in range(rng.randint(1, 5))]
        steps: list[tuple[str, Product, int | None]] = [("page_view", product, None) for product in viewed]
        if visit.kind in (ABANDON, BUY):
            carted = rng.sample(viewed, rng.randint(1, min(2, len(viewed))))
            quantities = [rng.choice((1, 1, 2, 3)) for _ in carted]
            steps += [("add_to_cart", product, quantity) for product, quantity in zip(carted, quantities, strict=True)]
            if visit.kind == BUY:
                bought = [(product, quantity) for product, quantity in zip(carted, quantities, strict=True)]
                steps += [
                    ("purchase", product, None if rng.random() < NULL_QUANTITY_SHARE else quantity)
                    for product, quantity in bought
                ]
        events = []
        for number, (event_type, product, quantity) in enumerate(steps):
            events.append(
                {
                    "event_id": f"EVT_{session_id}_{number:02d}",
                    "event_timestamp": format_timestamp(moment),
                    "user_id": shopper.user_id,
                    "session_id": session_id,
                    "event_type": event_type,
                    "product_id": product.product_id,
                    "product_name": product.name,
                    "product_category": product.category,
                    "product_price": product.price,
                    "quantity": quantity,
                    "device_type": device,
                    "country": shopper.country,
                    "schema_version": SCHEMA_VERSION,
                }
            )
            moment += timedelta(seconds=rng.randint(5, 180))
        return events


def history_events(seed: int, as_of: date) -> list[dict[str, Any]]:
    """Every shopper's events, in event-time order."""
    maker = SessionMaker(random.Random(seed ^ 0x5E55))
    events = [
        event for shopper in shoppers(seed) for visit in shopper.visits for event in maker.events(shopper, visit, as_of)
    ]
    return sorted(events, key=lambda event: (event["event_timestamp"], event["event_id"]))


def weekly_batches(events: list[dict[str, Any]], as_of: date) -> list[list[dict[str, Any]]]:
    """The events cut into weeks counted back from the as-of day, oldest week first."""
    weeks: dict[int, list[dict[str, Any]]] = {}
    for event in events:
        days_before = (as_of - date.fromisoformat(event["event_timestamp"][:10])).days
        weeks.setdefault(max(days_before, 0) // 7, []).append(event)
    return [weeks[week] for week in sorted(weeks, reverse=True)]

"""The shopper model: a Nigerian web shop's clickstream, in pure Python (no I/O).

A fixed population of returning users (stable ids, home country, preferred device) opens
sessions; a session browses several products, adds about 30% of the viewed products to
the cart and, at checkout, buys about 50% of the carted items (the reference's funnel).
Sessions run concurrently and interleave on one simulated clock, so timestamps advance
realistically inside a session (dwell times of seconds to minutes) and globally.

The shop is already trading when a run starts: the sessions a steady shop has open at that
moment are in flight (begun before the start; their earlier events are never sent), so the
funnel's ratios hold from the first minute on (docs/simulator.md).

Everything random comes from ``random.Random(seed)`` and the model's clock counts from
``start``: the same seed and options give the same messages whatever the start, except the
timestamps and the time part of the event ids (their first 12 hex digits, epoch ms); with
``diurnal`` the pace follows the hour of day, so the start changes the messages too. Same
seed, options and ``start``: the same bytes. The wire bytes are built from fragments
precomputed with :func:`streaming.events.encode_event` (the one encoder): a handful of C
calls per event, so generating is never what holds ``shopstream produce`` back.

With ``bad_ratio > 0`` a share of the messages is the broken data real producers send
(:mod:`streaming.bad_messages`). Bad messages carry no marker; :class:`Batch` ``labels`` say,
for the side manifest and the tests, what each one is and what the stream is expected to
make of it. The shop itself (catalogue, users, daily traffic) is :mod:`streaming.shop`.
"""

from __future__ import annotations

import heapq
import json
import math
import os
import random
from bisect import bisect
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import accumulate
from typing import Any

from streaming.bad_messages import BAD_MIX, BadKind, Label, Outcome, corrupt, event_id_of
from streaming.events import encode_event
from streaming.shop import (
    ADD_TO_CART_PROBABILITY,
    CATALOG,
    CONTINUE_BROWSING_PROBABILITY,
    DEFAULT_POPULATION,
    DEVICE_WEIGHTS,
    MAX_VIEWS,
    MISSION_CATEGORY_PROBABILITY,
    PREFERRED_DEVICE_PROBABILITY,
    PURCHASE_PROBABILITY,
    QUANTITY_WEIGHTS,
    Product,
    build_population,
    draw_table,
    event_fragment,
    traffic_multiplier,
    user_fragments,
)
from streaming.steady_start import open_in_flight

# Above this many open sessions the model opens no new ones and shortens dwell times
# instead. A session lasts about two and a half minutes over ~6 events, so about 24 x rate
# sessions are open: above ~200 events/s sessions get proportionally shorter in time (same
# shape). The bound keeps the session heap in cache, which is most of the model's speed.
MAX_OPEN_SESSIONS = 5_000


@dataclass
class Batch:
    """Messages in send order. ``labels[i]`` is None for a good message."""

    keys: list[bytes]
    values: list[bytes]
    labels: list[Label | None] | None  # None: no bad data in this run

    def __len__(self) -> int:
        return len(self.values)


# ---------------------------------------------------------------------------------------
# The model


class Simulator:
    """Deterministic generator of clickstream messages.

    ``take(n)`` returns the next n messages; ``take_until(t)`` the messages whose event time
    is at or before ``t``, which is how the producer paces itself on the wall clock. The
    sequence does not depend on how it is cut into batches.

    A run opens on a shop already trading: ``in_flight_at_start`` holds the keys (session
    ids) of the sessions begun before the start, whose remaining events are sent as they
    fall due, so the mix of events is the model's steady one from the first event.
    """

    def __init__(
        self,
        seed: int | None = None,
        *,
        start: datetime | None = None,
        events_per_second: float = 100.0,
        diurnal: bool = False,
        bad_ratio: float = 0.0,
        population: int = DEFAULT_POPULATION,
        catalog: tuple[Product, ...] = CATALOG,
        max_open_sessions: int = MAX_OPEN_SESSIONS,
    ) -> None:
        if not events_per_second > 0:
            raise ValueError(f"events_per_second must be > 0: got {events_per_second}")
        if not 0.0 <= bad_ratio <= 1.0:
            raise ValueError(f"bad_ratio must be between 0 and 1: got {bad_ratio}")
        self.seed = seed if seed is not None else int.from_bytes(os.urandom(4))
        self.start = (start or datetime.now(UTC)).astimezone(UTC)
        self.events_per_second = events_per_second
        self.diurnal = diurnal
        self.bad_ratio = bad_ratio
        self.catalog = catalog
        self.max_open_sessions = max_open_sessions
        self.users, self._user_cumulative = build_population(population)

        self._rng = random.Random(self.seed)
        self._bad_rng = random.Random(self.seed ^ 0x5EED_BAD)
        # Model time is ms since the start, so the sequence does not depend on the start
        # (float rounding of large epoch values would reorder near-simultaneous sessions).
        self._origin_ms = self.start.timestamp() * 1000.0
        self._next_ms = 0.0
        self._hour_end_ms = -math.inf  # forces the first _update_step
        self._step_ms = 1000.0 / events_per_second
        self._update_step()
        self._open: list[tuple[float, int, list[Any]]] = []  # heap of (due ms, tiebreak, session)
        self._pushes = 0  # heap tiebreak: equal due times pop in push order
        self._second = -1
        self._second_prefix = b""
        self.sent = 0

        self._precompute()
        # The sessions a steady shop has in progress at the start (docs/simulator.md).
        self._open, self._pushes = open_in_flight(
            self._new_session, self._rng.random, self._step_ms, self.max_open_sessions
        )
        self.in_flight_at_start = frozenset(entry[2][0] for entry in self._open)

        # Bad-data state: recent good messages for duplicates, purchases owed a null quantity.
        self._recent_good: list[tuple[bytes, bytes]] = []
        self._null_quantity_owed = 0
        kinds = list(BAD_MIX)
        self._bad_kinds = kinds
        self._bad_cumulative = list(accumulate(BAD_MIX[kind].weight for kind in kinds))

    # -- precomputation -------------------------------------------------------------------

    def _precompute(self) -> None:
        rng = random.Random(self.seed ^ 0x7AB1E5)
        products = self.catalog
        self._view_fragments = []
        self._cart_fragments = []
        self._purchase_fragments = []
        for product in products:
            base = {
                "product_id": product.product_id,
                "product_name": product.name,
                "product_category": product.category,
                "product_price": product.price,
            }
            self._view_fragments.append(event_fragment({"event_type": "page_view", **base, "quantity": None}))
            self._cart_fragments.append(
                [event_fragment({"event_type": "add_to_cart", **base, "quantity": q}) for q in (1, 2, 3)]
            )
            self._purchase_fragments.append(
                [event_fragment({"event_type": "purchase", **base, "quantity": q}) for q in (1, 2, 3)]
            )
        self._product_draw = draw_table([product.popularity for product in products])
        categories = sorted({product.category for product in products})
        self._category_draws = [
            draw_table([p.popularity if p.category == category else 0.0 for p in products]) for category in categories
        ]
        self._quantity_draw = [q + 1 for q in draw_table(list(QUANTITY_WEIGHTS), 1024)]
        # Pre-sampled dwell times (ms), picked uniformly per event: lognormal reading time on
        # a product page, a short think before adding to cart, a longer one before checkout.
        self._view_dwell = [
            min(300_000.0, max(2_000.0, rng.lognormvariate(math.log(22_000), 0.8))) for _ in range(4096)
        ]
        self._cart_dwell = [rng.uniform(3_000, 20_000) for _ in range(4096)]
        self._checkout_dwell = [rng.uniform(20_000, 120_000) for _ in range(4096)]
        self._purchase_gap = [rng.uniform(200, 2_000) for _ in range(4096)]
        devices = list(DEVICE_WEIGHTS)
        self._device_draw = [devices[i] for i in draw_table(list(DEVICE_WEIGHTS.values()), 1024)]
        self._user_draw = user_fragments(len(self.users))
        self._user_total = self._user_cumulative[-1]

    def _update_step(self) -> None:
        """Time between events: 1/rate, shaped by the hour of day when diurnal."""
        if not self.diurnal:
            self._hour_end_ms = math.inf
            return
        moment = datetime.fromtimestamp((self._origin_ms + self._next_ms) / 1000.0, UTC)
        self._step_ms = 1000.0 / (self.events_per_second * traffic_multiplier(moment))
        hour_start = moment.replace(minute=0, second=0, microsecond=0)
        self._hour_end_ms = (hour_start + timedelta(hours=1)).timestamp() * 1000.0 - self._origin_ms

    def _new_session(self) -> list[Any]:
        """A session's whole plan: [key, prefix, tail, fragments, gaps after each, next]."""
        rng = self._rng
        random_ = rng.random
        getrandbits = rng.getrandbits
        user = self._user_draw[bisect(self._user_cumulative, random_() * self._user_total)]
        device = user[1] if random_() < PREFERRED_DEVICE_PROBABILITY else self._device_draw[getrandbits(10)]
        session_id = b"SESSION_%016x" % getrandbits(64)
        prefix = b'%b%b",' % (user[0], session_id)
        tail = user[2][device]

        # Views: 1 + geometric, mean ~4.4; a third of the sessions bounce after one page.
        views = 1
        while views < MAX_VIEWS and random_() < CONTINUE_BROWSING_PROBABILITY:
            views += 1
        mission = self._category_draws[int(random_() * len(self._category_draws))]
        fragments: list[bytes] = []
        gaps: list[float] = []
        carted: list[tuple[int, int]] = []
        for _ in range(views):
            draw = mission if random_() < MISSION_CATEGORY_PROBABILITY else self._product_draw
            product = draw[getrandbits(12)]
            fragments.append(self._view_fragments[product])
            if random_() < ADD_TO_CART_PROBABILITY:
                quantity = self._quantity_draw[getrandbits(10)]
                gaps.append(self._cart_dwell[getrandbits(12)])
                fragments.append(self._cart_fragments[product][quantity - 1])
                carted.append((product, quantity))
            gaps.append(self._view_dwell[getrandbits(12)])
        if carted:
            gaps[-1] = self._checkout_dwell[getrandbits(12)]
            for product, quantity in carted:
                if random_() < PURCHASE_PROBABILITY:
                    fragments.append(self._purchase_fragments[product][quantity - 1])
                    gaps.append(self._purchase_gap[getrandbits(12)])
        return [session_id, prefix, tail, fragments, gaps, 0]

    # -- generation -----------------------------------------------------------------------

    def _generate(self, limit: int, until_ms: float, keys: list[bytes], values: list[bytes]) -> int:
        """Append up to ``limit`` model events with event time <= until_ms. The hot loop."""
        open_sessions = self._open
        heapreplace, heappush, heappop = heapq.heapreplace, heapq.heappush, heapq.heappop
        getrandbits = self._rng.getrandbits
        append_key, append_value = keys.append, values.append
        t = self._next_ms
        step = self._step_ms
        hour_end = self._hour_end_ms
        second, second_prefix = self._second, self._second_prefix
        pushes = self._pushes
        max_open = self.max_open_sessions
        origin = self._origin_ms
        until = until_ms - origin
        made = 0
        while made < limit and t <= until:
            if open_sessions and (open_sessions[0][0] <= t or len(open_sessions) >= max_open):
                session = open_sessions[0][2]
                from_heap = True
            else:
                session = self._new_session()
                from_heap = False
            index = session[5]
            ms = int(origin + t)
            if ms // 1000 != second:
                second = ms // 1000
                second_prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S").encode()
            append_key(session[0])
            # event_id leads with the event's epoch milliseconds, as UUIDv7 and ULID do: a batch's
            # ids land at the right edge of Bronze's primary-key btree instead of on random
            # pages, so COPY stays fast, and random inserts only get worse once the index
            # outgrows memory. 64 random bits follow.
            append_value(
                b'{"event_id":"EVT_%012x%016x","event_timestamp":"%b.%03dZ",%b%b%b'
                % (ms, getrandbits(64), second_prefix, ms - second * 1000, session[1], session[3][index], session[2])
            )
            index += 1
            if index < len(session[3]):
                session[5] = index
                pushes += 1
                entry = (t + session[4][index - 1], pushes, session)
                if from_heap:
                    heapreplace(open_sessions, entry)
                else:
                    heappush(open_sessions, entry)
            elif from_heap:
                heappop(open_sessions)
            made += 1
            t += step
            if t >= hour_end:
                self._next_ms = t
                self._update_step()
                step, hour_end = self._step_ms, self._hour_end_ms
        self._next_ms = t
        self._second, self._second_prefix = second, second_prefix
        self._pushes = pushes
        return made

    def take(self, count: int) -> Batch:
        """The next ``count`` messages, regardless of their event time."""
        return self._take(count, math.inf)

    def take_until(self, moment_ms: float, limit: int = 1_000_000) -> Batch:
        """The next messages with event time <= ``moment_ms`` (epoch ms), at most ``limit``."""
        return self._take(limit, moment_ms)

    @property
    def next_event_ms(self) -> float:
        """Event time (epoch ms) of the next model event: when the producer should send it."""
        return self._origin_ms + self._next_ms

    def _take(self, limit: int, until_ms: float) -> Batch:
        keys: list[bytes] = []
        values: list[bytes] = []
        if self.bad_ratio == 0.0:
            self._generate(limit, until_ms, keys, values)
            self.sent += len(values)
            return Batch(keys, values, None)
        labels: list[Label | None] = []
        until = until_ms - self._origin_ms
        while len(values) < limit and self._next_ms <= until:
            self._next_message(keys, values, labels)
        self.sent += len(values)
        return Batch(keys, values, labels)

    # -- bad data -------------------------------------------------------------------------

    def _next_message(self, keys: list[bytes], values: list[bytes], labels: list[Label | None]) -> None:
        rng = self._bad_rng
        kind: BadKind | None = None
        if rng.random() < self.bad_ratio:
            kind = self._bad_kinds[bisect(self._bad_cumulative, rng.random() * 100)]
        if kind is BadKind.DUPLICATE and self._recent_good:
            # Re-sent (a producer retry after a lost ack): same key, same bytes. It takes the
            # model event's time slot, so the stream's pace is unchanged.
            key, value = self._recent_good[int(rng.random() * len(self._recent_good))]
            keys.append(key)
            values.append(value)
            labels.append(Label(kind, Outcome.DUPLICATE, event_id_of(value)))
            self._next_ms += self._step_ms
            return
        if kind is BadKind.NULL_PURCHASE_QUANTITY:
            # Only a purchase can have this bug: the next purchase the model makes gets it.
            self._null_quantity_owed += 1
            kind = None
        self._generate(1, math.inf, keys, values)
        value = values[-1]
        label: Label | None = None
        if kind is not None and kind is not BadKind.DUPLICATE:
            value = corrupt(kind, value, self._bad_rng)
            label = Label(kind, BAD_MIX[kind].expected, event_id_of(values[-1]))
        elif self._null_quantity_owed and b'"event_type":"purchase"' in value:
            self._null_quantity_owed -= 1
            event = json.loads(value)
            event["quantity"] = None
            value = encode_event(event)
            label = Label(BadKind.NULL_PURCHASE_QUANTITY, Outcome.REPAIRED, event["event_id"])
        values[-1] = value
        labels.append(label)
        if label is None:
            self._recent_good.append((keys[-1], value))
            if len(self._recent_good) > 256:
                del self._recent_good[:128]

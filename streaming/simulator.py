"""The shopper model: a Nigerian web shop's clickstream, in pure Python (no I/O).

A fixed population of returning users (stable ids, home country, preferred device) opens
sessions; a session browses several products, adds about 30% of the viewed products to
the cart and, at checkout, buys about 50% of the carted items (the reference's funnel).
Sessions run concurrently and interleave on one simulated clock, so timestamps advance
realistically inside a session (dwell times of seconds to minutes) and globally.

Everything random comes from ``random.Random(seed)``: the same seed gives the same
messages, ids included; only ``start`` shifts the timestamps (and the time prefix of the
event ids). The wire bytes are built from fragments precomputed with
:func:`streaming.events.encode_event` (the one encoder), so each event costs a handful of C
calls: that is what lets ``shopstream produce`` deliver more than 100,000 events/s on two cores.

With ``bad_ratio > 0`` a share of the messages is the broken data real producers send
(:data:`BAD_MIX`). Bad messages carry no marker; :class:`Batch` ``labels`` say, for the side
manifest and the tests, what each one is and what the stream is expected to make of it.
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
from enum import StrEnum
from itertools import accumulate
from typing import Any

from streaming.events import (
    DEVICE_TYPES,
    SCHEMA_VERSION,
    RejectReason,
    encode_event,
    format_timestamp,
    parse_timestamp,
)

CURRENCY = "NGN"


@dataclass(frozen=True)
class Product:
    product_id: str
    name: str
    category: str
    price: float  # NGN
    popularity: float  # relative view weight


# Prices are naira, as the reference's revenue figures; weights make a few items the hits.
CATALOG: tuple[Product, ...] = (
    Product("P001", "Wireless Earbuds", "Electronics", 18_499.99, 9.0),
    Product("P002", "Bluetooth Speaker", "Electronics", 32_000.00, 5.0),
    Product("P003", "Smartwatch", "Electronics", 64_999.00, 4.0),
    Product("P004", "Power Bank 20000mAh", "Electronics", 15_500.00, 8.0),
    Product("P005", "43-inch Smart TV", "Electronics", 285_000.00, 2.5),
    Product("P006", "14-inch Laptop", "Electronics", 520_000.00, 2.0),
    Product("P007", "Android Smartphone", "Phones & Tablets", 145_000.00, 7.0),
    Product("P008", "Feature Phone", "Phones & Tablets", 12_500.00, 3.0),
    Product("P009", "10-inch Tablet", "Phones & Tablets", 110_000.00, 2.5),
    Product("P010", "Phone Case", "Phones & Tablets", 3_500.00, 6.0),
    Product("P011", "USB-C Fast Charger", "Phones & Tablets", 6_499.99, 6.5),
    Product("P012", "Ankara Print Dress", "Fashion", 15_000.00, 6.0),
    Product("P013", "Men's Sneakers", "Fashion", 28_000.00, 5.5),
    Product("P014", "Leather Handbag", "Fashion", 35_000.00, 3.0),
    Product("P015", "Agbada Set", "Fashion", 60_000.00, 2.0),
    Product("P016", "Wristwatch", "Fashion", 22_000.00, 3.5),
    Product("P017", "Sunglasses", "Fashion", 8_500.00, 4.0),
    Product("P018", "Blender", "Home & Kitchen", 38_000.00, 3.5),
    Product("P019", "Rice Cooker", "Home & Kitchen", 45_000.00, 2.5),
    Product("P020", "Non-stick Pot Set", "Home & Kitchen", 42_000.00, 2.0),
    Product("P021", "Standing Fan", "Home & Kitchen", 48_000.00, 3.0),
    Product("P022", "Electric Kettle", "Home & Kitchen", 16_000.00, 3.5),
    Product("P023", "Bedsheet Set", "Home & Kitchen", 18_000.00, 2.5),
    Product("P024", "Shea Butter Body Cream", "Beauty & Health", 4_500.00, 5.0),
    Product("P025", "Eau de Parfum 100ml", "Beauty & Health", 25_000.00, 3.0),
    Product("P026", "Hair Clipper", "Beauty & Health", 14_000.00, 2.5),
    Product("P027", "African Black Soap", "Beauty & Health", 2_500.00, 4.5),
    Product("P028", "Vitamin C Tablets", "Beauty & Health", 7_000.00, 2.0),
    Product("P029", "Jollof Seasoning Mix", "Groceries", 1_800.00, 4.0),
    Product("P030", "Long Grain Rice 5kg", "Groceries", 12_000.00, 6.0),
    Product("P031", "Vegetable Oil 3L", "Groceries", 9_500.00, 4.5),
    Product("P032", "Instant Noodles (40 pack)", "Groceries", 11_000.00, 5.0),
    Product("P033", "Football", "Sports & Outdoors", 9_500.00, 2.5),
    Product("P034", "Yoga Mat", "Sports & Outdoors", 11_000.00, 2.0),
    Product("P035", "Dumbbell Set 20kg", "Sports & Outdoors", 38_000.00, 1.5),
    Product("P036", "Super Eagles Jersey", "Sports & Outdoors", 17_000.00, 3.0),
    Product("P037", "Things Fall Apart (paperback)", "Books & Stationery", 6_500.00, 2.0),
    Product("P038", "Exercise Books (20 pack)", "Books & Stationery", 3_000.00, 2.5),
    Product("P039", "Scientific Calculator", "Books & Stationery", 12_000.00, 2.0),
)

# Home countries of the shop's users, and how common each is.
COUNTRY_WEIGHTS: dict[str, float] = {
    "Nigeria": 72.0,
    "Ghana": 8.0,
    "Kenya": 5.0,
    "South Africa": 4.0,
    "United Kingdom": 4.5,
    "United States": 4.0,
    "Canada": 2.5,
}
DEVICE_WEIGHTS: dict[str, float] = {"Mobile": 65.0, "Desktop": 26.0, "Tablet": 9.0}
assert set(DEVICE_WEIGHTS) == set(DEVICE_TYPES)

# The reference's funnel.
ADD_TO_CART_PROBABILITY = 0.30  # per viewed product
PURCHASE_PROBABILITY = 0.50  # per carted item, decided at checkout
QUANTITY_WEIGHTS = (0.6, 0.3, 0.1)  # 1, 2, 3 units
PREFERRED_DEVICE_PROBABILITY = 0.85  # otherwise the session is on another of the user's devices
MISSION_CATEGORY_PROBABILITY = 0.65  # a session mostly browses one category

DEFAULT_POPULATION = 5_000
# The population comes from its own fixed seed, so USER_00042 has the same home country and
# device in every run: users return across runs, not just within one.
POPULATION_SEED = 20_260_103
# Above this many open sessions the model opens no new ones and shortens dwell times
# instead. A session lasts about two and a half minutes over ~6 events, so about 24 x rate
# sessions are open: above ~200 events/s sessions get proportionally shorter in time (same
# shape). The bound keeps the session heap in cache, which is most of the model's speed.
MAX_OPEN_SESSIONS = 5_000

# Relative traffic by local hour in Lagos (UTC+1): a night trough, a lunch bump and an
# evening peak, as on African e-commerce sites. Normalized to a mean of 1 below.
_HOURLY_TRAFFIC = (
    0.45, 0.30, 0.20, 0.15, 0.15, 0.25, 0.45, 0.70, 0.90, 1.00, 1.05, 1.10,
    1.20, 1.15, 1.05, 1.00, 1.05, 1.15, 1.30, 1.50, 1.65, 1.60, 1.25, 0.80,
)  # fmt: skip
TRAFFIC_UTC_OFFSET_HOURS = 1
HOURLY_TRAFFIC: tuple[float, ...] = tuple(weight * 24 / sum(_HOURLY_TRAFFIC) for weight in _HOURLY_TRAFFIC)


def traffic_multiplier(moment: datetime) -> float:
    """Traffic at ``moment`` relative to the daily mean (1.0), by local hour in Lagos."""
    local = moment.astimezone(UTC) + timedelta(hours=TRAFFIC_UTC_OFFSET_HOURS)
    return HOURLY_TRAFFIC[local.hour]


# ---------------------------------------------------------------------------------------
# Bad data


class BadKind(StrEnum):
    """The kinds of broken message ``--bad-ratio`` mixes in."""

    MALFORMED_JSON = "malformed_json"  # truncated, or a Python dict repr
    INVALID_UTF8 = "invalid_utf8"  # a latin-1 encoded product name
    MISSING_FIELD = "missing_field"  # a required field absent, null or ""
    WRONG_TYPE = "wrong_type"  # e.g. the price as a string
    NEGATIVE_PRICE = "negative_price"
    UNKNOWN_EVENT_TYPE = "unknown_event_type"  # e.g. wishlist_add
    NULL_PURCHASE_QUANTITY = "null_purchase_quantity"  # the reference's own bug
    DUPLICATE = "duplicate"  # an event already sent, re-sent byte for byte
    LATE = "late"  # event_timestamp minutes to hours before the send


class Outcome(StrEnum):
    """What the stream makes of a message that is not rejected."""

    ACCEPTED = "accepted"
    REPAIRED = "repaired"  # accepted with streaming.events.Repair
    DUPLICATE = "duplicate"  # same event_id as an accepted event: counted, not stored twice
    LATE = "late"  # accepted; its event time is well before its send time


@dataclass(frozen=True)
class BadSpec:
    weight: float  # share of the bad messages, in percent
    expected: RejectReason | Outcome
    example: str


BAD_MIX: dict[BadKind, BadSpec] = {
    BadKind.MALFORMED_JSON: BadSpec(12, RejectReason.MALFORMED_JSON, "truncated JSON, a Python dict repr"),
    BadKind.INVALID_UTF8: BadSpec(8, RejectReason.INVALID_UTF8, "product_name in latin-1"),
    BadKind.MISSING_FIELD: BadSpec(12, RejectReason.MISSING_FIELD, 'no user_id, or session_id ""'),
    BadKind.WRONG_TYPE: BadSpec(12, RejectReason.WRONG_TYPE, 'product_price "4500.0", user_id 123'),
    BadKind.NEGATIVE_PRICE: BadSpec(10, RejectReason.NEGATIVE_PRICE, "product_price -18499.99"),
    BadKind.UNKNOWN_EVENT_TYPE: BadSpec(10, RejectReason.UNKNOWN_EVENT_TYPE, "event_type wishlist_add"),
    BadKind.NULL_PURCHASE_QUANTITY: BadSpec(12, Outcome.REPAIRED, "purchase with quantity null"),
    BadKind.DUPLICATE: BadSpec(14, Outcome.DUPLICATE, "an earlier event re-sent as is"),
    BadKind.LATE: BadSpec(10, Outcome.LATE, "event_timestamp 2 min to 6 h old"),
}
assert sum(spec.weight for spec in BAD_MIX.values()) == 100

# A late event is at least this much older than its send time; good events are at most a
# few seconds older (when the producer keeps up with --rate).
LATE_MIN_SECONDS = 120
LATE_MAX_SECONDS = 6 * 3600


@dataclass(frozen=True)
class Label:
    """What a bad message is and what the stream should make of it."""

    kind: BadKind
    expected: RejectReason | Outcome
    event_id: str | None  # the id the message carries or was made from, for the manifest


@dataclass
class Batch:
    """Messages in send order. ``labels[i]`` is None for a good message."""

    keys: list[bytes]
    values: list[bytes]
    labels: list[Label | None] | None  # None: no bad data in this run

    def __len__(self) -> int:
        return len(self.values)


def expected_outcome(label: Label | None) -> str:
    return Outcome.ACCEPTED.value if label is None else label.expected.value


# ---------------------------------------------------------------------------------------
# The model


@dataclass(frozen=True)
class User:
    user_id: str
    country: str
    preferred_device: str


def build_population(size: int = DEFAULT_POPULATION) -> tuple[tuple[User, ...], list[float]]:
    """The users and their cumulative visit weights (a few loyal users come back often)."""
    if not 1 <= size <= 99_999:
        raise ValueError(f"population must be 1-99,999 users: got {size}")
    rng = random.Random(POPULATION_SEED)
    countries, country_weights = zip(*COUNTRY_WEIGHTS.items(), strict=True)
    devices, device_weights = zip(*DEVICE_WEIGHTS.items(), strict=True)
    users = tuple(
        User(
            f"USER_{number:05d}",
            rng.choices(countries, country_weights)[0],
            rng.choices(devices, device_weights)[0],
        )
        for number in range(1, size + 1)
    )
    # Zipf-like loyalty, assigned to users in random order so ids say nothing about it.
    ranks = list(range(1, size + 1))
    rng.shuffle(ranks)
    cumulative = list(accumulate(1.0 / rank**0.7 for rank in ranks))
    return users, cumulative


def _fragment(fields: dict[str, Any]) -> bytes:
    """``"a":1,"b":2,`` exactly as encode_event writes those fields."""
    return encode_event(fields)[1:-1] + b","


def _draw_table(weights: list[float], size: int = 4096) -> list[int]:
    """Indices repeated in proportion to weight: a uniform pick from it is a weighted pick."""
    total = sum(weights)
    cumulative = list(accumulate(weights))
    return [bisect(cumulative, (slot + 0.5) * total / size) for slot in range(size)]


class Simulator:
    """Deterministic generator of clickstream messages.

    ``take(n)`` returns the next n messages; ``take_until(t)`` the messages whose event time
    is at or before ``t``, which is how the producer paces itself on the wall clock. The
    sequence does not depend on how it is cut into batches.

    A run starts with an empty shop: the first events are mostly first page views, carts
    follow at once and the first purchases within a few hundred events; the funnel
    reaches its steady ratios after a few thousand.
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
        self._next_ms = self.start.timestamp() * 1000.0
        self._hour_end_ms = -math.inf  # forces the first _update_step
        self._step_ms = 1000.0 / events_per_second
        self._update_step()
        self._open: list[tuple[float, int, list[Any]]] = []  # heap of (due ms, tiebreak, session)
        self._pushes = 0  # heap tiebreak: equal due times pop in push order
        self._generated = 0  # model events made so far
        self._second = -1
        self._second_prefix = b""
        self.sent = 0

        self._precompute()

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
            self._view_fragments.append(_fragment({"event_type": "page_view", **base, "quantity": None}))
            self._cart_fragments.append(
                [_fragment({"event_type": "add_to_cart", **base, "quantity": q}) for q in (1, 2, 3)]
            )
            self._purchase_fragments.append(
                [_fragment({"event_type": "purchase", **base, "quantity": q}) for q in (1, 2, 3)]
            )
        self._product_draw = _draw_table([product.popularity for product in products])
        categories = sorted({product.category for product in products})
        self._category_draws = [
            _draw_table([p.popularity if p.category == category else 0.0 for p in products]) for category in categories
        ]
        self._quantity_draw = [q + 1 for q in _draw_table(list(QUANTITY_WEIGHTS), 1024)]
        # Pre-sampled dwell times (ms), picked uniformly per event: lognormal reading time on
        # a product page, a short think before adding to cart, a longer one before checkout.
        self._view_dwell = [
            min(300_000.0, max(2_000.0, rng.lognormvariate(math.log(22_000), 0.8))) for _ in range(4096)
        ]
        self._cart_dwell = [rng.uniform(3_000, 20_000) for _ in range(4096)]
        self._checkout_dwell = [rng.uniform(20_000, 120_000) for _ in range(4096)]
        self._purchase_gap = [rng.uniform(200, 2_000) for _ in range(4096)]
        devices = list(DEVICE_WEIGHTS)
        self._device_draw = [devices[i] for i in _draw_table(list(DEVICE_WEIGHTS.values()), 1024)]
        # Per user: the fragment up to the session id's value, the preferred device, and the
        # event's tail (device, country, schema_version) for each device.
        tails: dict[tuple[str, str], bytes] = {}
        for country in COUNTRY_WEIGHTS:
            for device in devices:
                tails[country, device] = encode_event(
                    {"device_type": device, "country": country, "schema_version": SCHEMA_VERSION}
                )[1:]
        self._user_draw = [
            (
                _fragment({"user_id": user.user_id, "session_id": ""})[:-2],
                user.preferred_device,
                {device: tails[user.country, device] for device in devices},
            )
            for user in self.users
        ]
        self._user_total = self._user_cumulative[-1]

    def _update_step(self) -> None:
        """Time between events: 1/rate, shaped by the hour of day when diurnal."""
        if not self.diurnal:
            self._hour_end_ms = math.inf
            return
        moment = datetime.fromtimestamp(self._next_ms / 1000.0, UTC)
        self._step_ms = 1000.0 / (self.events_per_second * traffic_multiplier(moment))
        hour_start = moment.replace(minute=0, second=0, microsecond=0)
        self._hour_end_ms = (hour_start + timedelta(hours=1)).timestamp() * 1000.0

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
        while views < 25 and random_() < 0.77:
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
        generated = self._generated
        made = 0
        while made < limit and t <= until_ms:
            # The shop opens empty. Letting the open-session bound grow with the events made
            # so far brings the first carts and purchases within seconds of the start (dwell
            # times are briefly compressed) instead of after a long wave of first page views.
            if open_sessions and (
                open_sessions[0][0] <= t or len(open_sessions) >= min(max_open, 20 + (generated + made) // 10)
            ):
                session = open_sessions[0][2]
                from_heap = True
            else:
                session = self._new_session()
                from_heap = False
            index = session[5]
            ms = int(t)
            if ms // 1000 != second:
                second = ms // 1000
                second_prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S").encode()
            append_key(session[0])
            # event_id leads with the event's epoch milliseconds, as UUIDv7 and ULID do: a batch's
            # ids land at the right edge of Bronze's primary-key btree instead of on random
            # pages (on 250k-row batches PostgreSQL's COPY took 1.5 s instead of 2.2 s, and random
            # inserts only get worse once the index outgrows memory). 64 random bits follow.
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
        self._generated = generated + made
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
        return self._next_ms

    def _take(self, limit: int, until_ms: float) -> Batch:
        keys: list[bytes] = []
        values: list[bytes] = []
        if self.bad_ratio == 0.0:
            self._generate(limit, until_ms, keys, values)
            self.sent += len(values)
            return Batch(keys, values, None)
        labels: list[Label | None] = []
        while len(values) < limit and self._next_ms <= until_ms:
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
            labels.append(Label(kind, Outcome.DUPLICATE, _event_id(value)))
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
            value = self._corrupt(kind, value)
            label = Label(kind, BAD_MIX[kind].expected, _event_id(values[-1]))
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

    def _corrupt(self, kind: BadKind, value: bytes) -> bytes:
        rng = self._bad_rng
        event: dict[str, Any] = json.loads(value)
        if kind is BadKind.MALFORMED_JSON:
            if rng.random() < 0.7:
                # Cut short, as by a client that died mid-write (any proper prefix of an
                # object is invalid JSON; the events are ASCII, so no UTF-8 char is split).
                return value[: 1 + int(rng.random() * (len(value) - 2))]
            return repr(event).encode()  # single quotes, None: a Python dict, not JSON
        if kind is BadKind.INVALID_UTF8:
            # A legacy client writing latin-1: é is one byte 0xE9, never valid alone in UTF-8.
            event["product_name"] = rng.choice(("Crème Brûlée Torch", "Café Press", "Piñata Set", "Façade Mirror"))
            return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode("latin-1")
        if kind is BadKind.MISSING_FIELD:
            field = rng.choice(("user_id", "session_id", "event_id", "product_id", "event_timestamp"))
            if rng.random() < 0.5:
                del event[field]
            else:
                event[field] = rng.choice((None, "", "  "))
        elif kind is BadKind.WRONG_TYPE:
            choice = int(rng.random() * 4)
            if choice == 0:
                event["product_price"] = str(event["product_price"])
            elif choice == 1:
                event["user_id"] = int(event["user_id"].removeprefix("USER_"))
            elif choice == 2:
                event["schema_version"] = str(SCHEMA_VERSION)
            else:
                event["quantity"] = "1"
        elif kind is BadKind.NEGATIVE_PRICE:
            event["product_price"] = -event["product_price"]
        elif kind is BadKind.UNKNOWN_EVENT_TYPE:
            event["event_type"] = rng.choice(("wishlist_add", "remove_from_cart", "checkout_started", "PageView"))
        elif kind is BadKind.LATE:
            # A phone that was offline: the event is sent minutes to hours after it happened.
            delay_s = math.exp(rng.uniform(math.log(LATE_MIN_SECONDS), math.log(LATE_MAX_SECONDS)))
            moment = parse_timestamp(event["event_timestamp"])
            assert moment is not None  # the model writes valid timestamps
            event["event_timestamp"] = format_timestamp(moment - timedelta(seconds=delay_s))
        return encode_event(event)


def _event_id(value: bytes) -> str | None:
    try:
        event_id = json.loads(value).get("event_id")
    except ValueError:
        return None
    return event_id if isinstance(event_id, str) else None


def bad_mix_table() -> str:
    """The bad-data mix as a Markdown table (README, ``--help``)."""
    lines = ["| kind | share of bad | example | the stream makes it |", "|---|---|---|---|"]
    for kind, spec in BAD_MIX.items():
        lines.append(f"| `{kind}` | {spec.weight:g}% | {spec.example} | `{spec.expected}` |")
    return "\n".join(lines)

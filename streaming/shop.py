"""The shop the simulator models: its catalogue, its users and when they come.

A Nigerian web shop: products priced in naira, users from a few home countries on a few
devices, a fixed returning population, and traffic that follows the day in Lagos. Pure data
and pure functions; :mod:`streaming.simulator` turns them into sessions and events.
"""

from __future__ import annotations

import functools
import random
from bisect import bisect
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import accumulate
from typing import Any

from streaming.events import DEVICE_TYPES, SCHEMA_VERSION, encode_event

# How shoppers behave: the reference's funnel.
ADD_TO_CART_PROBABILITY = 0.30  # per viewed product
PURCHASE_PROBABILITY = 0.50  # per carted item, decided at checkout
QUANTITY_WEIGHTS = (0.6, 0.3, 0.1)  # 1, 2, 3 units
CONTINUE_BROWSING_PROBABILITY = 0.77  # after each view: a third of the sessions bounce after one page
MAX_VIEWS = 25
PREFERRED_DEVICE_PROBABILITY = 0.85  # otherwise the session is on another of the user's devices
MISSION_CATEGORY_PROBABILITY = 0.65  # a session mostly browses one category

# Events per session on average: views (1 + a geometric number, capped), the carts they lead
# to and the purchases of those. Sets how many sessions a steady shop begins per second.
EXPECTED_VIEWS = sum(CONTINUE_BROWSING_PROBABILITY**k for k in range(MAX_VIEWS))
EVENTS_PER_SESSION = EXPECTED_VIEWS * (1 + ADD_TO_CART_PROBABILITY * (1 + PURCHASE_PROBABILITY))


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

DEFAULT_POPULATION = 5_000
# The population comes from its own fixed seed, so USER_00042 has the same home country and
# device in every run: users return across runs, not just within one.
POPULATION_SEED = 20_260_103

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


@dataclass(frozen=True)
class User:
    user_id: str
    country: str
    preferred_device: str


@functools.lru_cache(maxsize=4)
def build_population(size: int = DEFAULT_POPULATION) -> tuple[tuple[User, ...], list[float]]:
    """The users and their cumulative visit weights (a few loyal users come back often).

    The same for every run, so made once per size: callers share it and must not change it.
    """
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


def draw_table(weights: list[float], size: int = 4096) -> list[int]:
    """Indices repeated in proportion to weight: a uniform pick from it is a weighted pick."""
    total = sum(weights)
    cumulative = list(accumulate(weights))
    return [bisect(cumulative, (slot + 0.5) * total / size) for slot in range(size)]


def event_fragment(fields: dict[str, Any]) -> bytes:
    """``"a":1,"b":2,`` exactly as encode_event writes those fields."""
    return encode_event(fields)[1:-1] + b","


@functools.lru_cache(maxsize=4)
def user_fragments(population: int) -> tuple[tuple[bytes, str, dict[str, bytes]], ...]:
    """Per user: the fragment up to the session id's value, the preferred device, and the
    event's tail (device, country, schema_version) for each device. The same for every seed,
    so made once per population (shared read-only)."""
    devices = list(DEVICE_WEIGHTS)
    tails = {
        (country, device): encode_event({"device_type": device, "country": country, "schema_version": SCHEMA_VERSION})[
            1:
        ]
        for country in COUNTRY_WEIGHTS
        for device in devices
    }
    return tuple(
        (
            event_fragment({"user_id": user.user_id, "session_id": ""})[:-2],
            user.preferred_device,
            {device: tails[user.country, device] for device in devices},
        )
        for user in build_population(population)[0]
    )

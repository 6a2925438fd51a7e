"""The shopper model, without Kafka: funnel, validity, realism, determinism, the bad mix."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from streaming.bad_messages import BAD_MIX, LATE_MIN_SECONDS, BadKind, Outcome, bad_mix_table
from streaming.events import (
    DEVICE_TYPES,
    FIELD_NAMES,
    Repair,
    encode_event,
    parse_timestamp,
    validate_event,
    validate_message,
)
from streaming.shop import ADD_TO_CART_PROBABILITY, CATALOG, HOURLY_TRAFFIC, PURCHASE_PROBABILITY, build_population
from streaming.simulator import Simulator

START = datetime(2026, 1, 3, 9, 0, tzinfo=UTC)
PRODUCTS = {product.product_id: product for product in CATALOG}


def decoded(values: list[bytes]) -> list[dict[str, Any]]:
    return [json.loads(value) for value in values]


@pytest.fixture(scope="module")
def large_sample() -> list[dict[str, Any]]:
    # A low rate keeps few sessions open at any time, so the sessions cut off at the end of
    # the sample (whose carts have not reached checkout yet) barely bias the ratios.
    return decoded(Simulator(11, start=START, events_per_second=5).take(200_000).values)


def test_funnel_ratios_match_the_reference_within_tolerance(large_sample: list[dict[str, Any]]) -> None:
    counts = Counter(event["event_type"] for event in large_sample)
    cart_rate = counts["add_to_cart"] / counts["page_view"]
    purchase_rate = counts["purchase"] / counts["add_to_cart"]
    # Tolerances: +-0.01 is > 8 standard deviations at this sample size; the purchase
    # tolerance also covers the open sessions at the end of the sample.
    assert cart_rate == pytest.approx(ADD_TO_CART_PROBABILITY, abs=0.01)
    assert purchase_rate == pytest.approx(PURCHASE_PROBABILITY, abs=0.02)


def test_every_good_event_is_valid_and_encoded_by_the_one_encoder(large_sample: list[dict[str, Any]]) -> None:
    values = Simulator(3, start=START).take(20_000).values
    for value, event in zip(values, decoded(values), strict=True):
        verdict = validate_message(value)
        assert verdict.accepted and verdict.repair is None, (verdict, value)
        assert tuple(event) == FIELD_NAMES
        assert encode_event(event) == value
    for event in large_sample:
        assert validate_event(event).accepted
        product = PRODUCTS[event["product_id"]]
        assert (event["product_name"], event["product_category"], event["product_price"]) == (
            product.name,
            product.category,
            product.price,
        )
        assert event["device_type"] in DEVICE_TYPES
        if event["event_type"] == "page_view":
            assert event["quantity"] is None
        else:
            assert event["quantity"] in (1, 2, 3)


def test_sessions_are_realistic(large_sample: list[dict[str, Any]]) -> None:
    sessions: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in large_sample:
        sessions[event["session_id"]].append(event)
    users, _ = build_population()
    home = {user.user_id: user for user in users}
    # Sessions in flight at the start began before it: their earlier events were never sent,
    # so only what holds for any part of a session is checked on them.
    in_flight = {key.decode() for key in Simulator(11, start=START, events_per_second=5).in_flight_at_start}
    assert 50 <= len(in_flight & set(sessions)) == len(in_flight)
    lengths, durations = [], []
    for session_id, events in sessions.items():
        assert len({event["user_id"] for event in events}) == 1
        assert len({event["device_type"] for event in events}) == 1
        assert events[0]["country"] == home[events[0]["user_id"]].country
        times = [parse_timestamp(event["event_timestamp"]) for event in events]
        gaps = [(later - earlier).total_seconds() for earlier, later in zip(times, times[1:], strict=False)]
        assert all(0.1 <= gap <= 600 for gap in gaps), gaps
        if session_id in in_flight:
            continue
        assert events[0]["event_type"] == "page_view"
        viewed: set[str] = set()
        carted: Counter[tuple[str, int]] = Counter()
        for event in events:
            item = (event["product_id"], event["quantity"])
            if event["event_type"] == "page_view":
                viewed.add(event["product_id"])
            elif event["event_type"] == "add_to_cart":
                assert event["product_id"] in viewed
                carted[item] += 1
            else:  # a purchase buys an item carted earlier in the session, same quantity
                assert carted[item] > 0, (item, carted)
                carted[item] -= 1
        lengths.append(len(events))
        if len(events) > 1:
            durations.append((times[-1] - times[0]).total_seconds())
    # Several events and a couple of minutes per session, as on a real shop.
    assert 4 <= sum(lengths) / len(lengths) <= 9
    assert 60 <= sorted(durations)[len(durations) // 2] <= 300
    # Returning users: many users come back for several sessions.
    sessions_per_user = Counter(events[0]["user_id"] for events in sessions.values())
    assert sum(1 for count in sessions_per_user.values() if count >= 3) > 500


def test_users_keep_their_home_country_and_device_across_runs() -> None:
    first = decoded(Simulator(1, start=START).take(5_000).values)
    second = decoded(Simulator(2, start=START).take(5_000).values)
    countries: dict[str, set[str]] = defaultdict(set)
    for event in first + second:
        countries[event["user_id"]].add(event["country"])
    assert all(len(found) == 1 for found in countries.values())
    assert set(countries) & {event["user_id"] for event in second} & {event["user_id"] for event in first}


def test_timestamps_advance_at_the_rate_from_the_start() -> None:
    events = decoded(Simulator(5, start=START, events_per_second=50).take(5_000).values)
    times = [parse_timestamp(event["event_timestamp"]) for event in events]
    assert times[0] == START
    assert times == sorted(times)
    assert times[-1] - times[0] == pytest.approx(timedelta(seconds=4_999 / 50), abs=timedelta(milliseconds=2))
    assert all(event["event_timestamp"].endswith("Z") and len(event["event_timestamp"]) == 24 for event in events)


def test_diurnal_traffic_follows_the_hour_of_day() -> None:
    simulator = Simulator(9, start=datetime(2026, 1, 3, 0, 0, tzinfo=UTC), events_per_second=0.5, diurnal=True)
    batch = simulator.take_until(datetime(2026, 1, 4, 0, 0, tzinfo=UTC).timestamp() * 1000 - 1)
    per_lagos_hour = Counter(
        (parse_timestamp(event["event_timestamp"]).hour + 1) % 24 for event in decoded(batch.values)
    )
    for hour, multiplier in enumerate(HOURLY_TRAFFIC):
        assert per_lagos_hour[hour] == pytest.approx(3_600 * 0.5 * multiplier, abs=2)
    assert len(batch) == pytest.approx(86_400 * 0.5, rel=0.001)


def test_same_seed_same_messages_however_they_are_cut_into_batches() -> None:
    def run(seed: int, cuts: list[int]) -> tuple[list[bytes], list[bytes], list[Any]]:
        simulator = Simulator(seed, start=START, bad_ratio=0.1)
        keys, values, labels = [], [], []
        for cut in cuts:
            batch = simulator.take(cut)
            keys += batch.keys
            values += batch.values
            labels += batch.labels or []
        return keys, values, labels

    assert run(42, [3_000]) == run(42, [1, 999, 256, 1_744])
    assert run(42, [3_000])[1] != run(43, [3_000])[1]
    paced = Simulator(42, start=START, bad_ratio=0.1)
    by_time = []
    for step in range(1, 40):
        by_time += paced.take_until(START.timestamp() * 1000 + step * 1_000).values
    assert by_time == run(42, [len(by_time)])[1]


def test_bad_mix_proportions_and_expected_outcomes() -> None:
    batch = Simulator(21, start=START, events_per_second=200, bad_ratio=0.2).take(60_000)
    assert batch.labels is not None
    kinds = Counter(label.kind for label in batch.labels if label is not None)
    bad = sum(kinds.values())
    assert bad / len(batch) == pytest.approx(0.2, abs=0.01)
    for kind, spec in BAD_MIX.items():
        assert kinds[kind] / bad * 100 == pytest.approx(spec.weight, abs=1.5), kind

    seen: dict[bytes, int] = {}
    previous_time: datetime | None = None
    for index, (value, label) in enumerate(zip(batch.values, batch.labels, strict=True)):
        verdict = validate_message(value)
        if label is None or label.expected in (Outcome.DUPLICATE, Outcome.LATE):
            assert verdict.accepted and verdict.repair is None, (label, value)
        elif label.expected is Outcome.REPAIRED:
            assert verdict.repair is Repair.PURCHASE_NULL_QUANTITY
        else:
            assert verdict.reason == label.expected, (label, verdict, value)
        if label is not None and label.kind is BadKind.DUPLICATE:
            original = seen[value]  # the exact bytes were sent before, as a good message
            assert batch.labels[original] is None and batch.keys[original] == batch.keys[index]
        if verdict.accepted:
            event = json.loads(value)
            assert set(event) == set(FIELD_NAMES)  # no marker field a stream could cheat with
            moment = parse_timestamp(event["event_timestamp"])
            if label is not None and label.kind is BadKind.LATE:
                assert previous_time is not None
                assert previous_time - moment >= timedelta(seconds=LATE_MIN_SECONDS - 1)
            elif label is None:
                previous_time = moment
        seen.setdefault(value, index)


def test_bad_ratio_zero_sends_no_bad_data_and_limits_are_checked() -> None:
    assert Simulator(1, start=START).take(10).labels is None
    with pytest.raises(ValueError, match="bad_ratio"):
        Simulator(1, bad_ratio=1.5)
    with pytest.raises(ValueError, match="events_per_second"):
        Simulator(1, events_per_second=0)
    table = bad_mix_table()
    assert all(kind.value in table for kind in BadKind)

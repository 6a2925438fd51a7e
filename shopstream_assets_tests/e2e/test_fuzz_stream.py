"""A bounded fuzz run: 20,000 random and mutated messages through a real topic and a real stream.

Simulator traffic (its own bad mix too), 40% of it mutated at random (bytes, truncation, a
field dropped, added or replaced by a hostile value), some with hostile headers or timestamps at
the window's edges, produced to a real topic and drained by a real ``shopstream stream``
process. Every message must be accounted for in Bronze with ONE verdict from Python's rules and
Spark's; the property test beside it (``test_hostile_input.py``) does the same through Spark in
process.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from typing import Any

import pytest

from shopstream_assets_tests.e2e.helpers import (
    CLI,
    Report,
    check_bronze_equals_delivered,
    read_topic,
    topic_message_count,
)
from shopstream_assets_tests.e2e.hostile_json import RAW_TOKENS, SPECIAL_STRINGS, JsonObject, RawJson, to_json
from shopstream_assets_tests.e2e.hostile_records import fuzz_headers, near_window_edges
from shopstream_assets_tests.e2e.kafka_records import check_each_message, produce_records, read_records
from streaming.events import DEVICE_TYPES, EVENT_TYPES, FIELD_NAMES
from streaming.simulator import Simulator

FUZZ_MESSAGES = 20_000
FUZZ_START = datetime(2026, 12, 6, 3, 50, tzinfo=UTC)


def _hostile_value(rng: random.Random) -> Any:
    pick = rng.randrange(10)
    if pick == 0:
        return RawJson(rng.choice(RAW_TOKENS))
    if pick == 1:
        return rng.choice(SPECIAL_STRINGS)
    if pick == 2:
        depth = rng.randrange(2, 300)
        return RawJson("[" * depth + "]" * depth)
    if pick == 3:
        return "".join(chr(rng.randrange(1, 0x2FFF)) for _ in range(rng.randrange(200, 600)))
    if pick == 4:
        return rng.choice([None, True, False, 0, -1, 2**63, -(2**70), 1.5, float("nan"), float("inf"), 1e308])
    if pick == 5:
        return [rng.randrange(100), {"nested": [None, "x"]}]
    if pick == 6:
        return rng.choice(EVENT_TYPES + DEVICE_TYPES) + rng.choice(["", " ", "\x00", "\u200b"])
    if pick == 7:
        return rng.uniform(-1e10, 1e10)
    if pick == 8:
        return "".join(rng.choice("0123456789-:TZ.+ ") for _ in range(rng.randrange(30)))
    return rng.randrange(-5, 200)


def _mutate(value: bytes, rng: random.Random) -> bytes | None:
    how = rng.randrange(12)
    if how == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(0, 120)))
    if how == 1:
        return value[: rng.randrange(len(value))]
    if how == 2:
        flipped = bytearray(value)
        flipped[rng.randrange(len(flipped))] = rng.randrange(256)
        return bytes(flipped)
    if how == 3:
        return None
    event = json.loads(value)
    pairs = list(event.items())
    name = rng.choice([*FIELD_NAMES, "extra"])
    if how == 4:
        pairs = [(key, item) for key, item in pairs if key != name]
    elif how == 5:
        pairs.append((name, _hostile_value(rng)))
    else:
        pairs = [(key, _hostile_value(rng) if key == name else item) for key, item in pairs]
    return to_json(JsonObject(tuple(pairs))).encode("utf-8", "surrogatepass")


def fuzz_messages(count: int, *, seed: int) -> tuple[list[bytes], list[bytes | None]]:
    """(keys, values): simulator traffic (its own bad mix too), 40% of it mutated at random."""
    rng = random.Random(seed)
    # A fixed clock: the simulator's timestamps (and the ids that lead with them) would
    # otherwise change the corpus, and so what the mutations hit, from one run to the next.
    batch = Simulator(seed=seed, bad_ratio=0.2, start=FUZZ_START).take(count)
    keys: list[bytes] = []
    values: list[bytes | None] = []
    for key, value in zip(batch.keys, batch.values, strict=True):
        candidate: bytes | None = value
        if rng.random() < 0.4:
            try:
                candidate = _mutate(value, rng)
            except ValueError:  # a message the simulator broke on purpose: damage its bytes instead
                candidate = value[::-1]
        keys.append(key)
        values.append(candidate)
    return keys, values


@pytest.mark.slow
def test_fuzz_run_through_a_real_topic_and_stream(
    shopstream_env: dict[str, str], database_url: str, kafka_bootstrap: str, topic: str, spawn_process: Any
) -> None:
    report = Report(f"fuzz run: {FUZZ_MESSAGES:,} random and mutated messages through a real stream")
    keys, values = fuzz_messages(FUZZ_MESSAGES, seed=1717)
    rng = random.Random(1718)
    values = near_window_edges(values, rng, datetime.now(UTC))
    produce_records(kafka_bootstrap, topic, values, fuzz_headers(len(values), rng), keys=keys)
    report.tried(f"produced {len(values):,} messages to {topic}, some with hostile headers or at the window's edges")
    # The topic is full before the stream starts, so idle means drained: a second is enough.
    stream = spawn_process([*CLI, "stream", "--until-idle", "1"], env=shopstream_env, name="fuzz-stream")
    report.tried("ran `shopstream stream --until-idle 1` until it drained the topic")
    exit_code = stream.wait(420)
    report.held("the stream exited cleanly", exit_code == 0, f"exit {exit_code}")
    in_topic = topic_message_count(kafka_bootstrap, topic)
    report.held("topic holds every message sent", in_topic == FUZZ_MESSAGES, f"{in_topic}")
    state = check_bronze_equals_delivered(report, database_url, topic, read_topic(kafka_bootstrap, topic))
    check_each_message(report, database_url, topic, read_records(kafka_bootstrap, topic))
    report.note(
        f"{state.consumed:,} consumed = {state.rows_written:,} rows + {state.ledger_rejects:,} rejects"
        f" + {state.duplicates:,} duplicates in {state.batches} batches; reasons {dict(state.rejects)}"
    )
    report.finish()

"""streaming.checkpoint: where the stream starts without a checkpoint (the reconciliation with Bronze runs in
test_job.py, against real servers)."""

from __future__ import annotations

import json

from streaming.checkpoint import starting_offsets


def test_starting_offsets_come_from_the_ledger_else_earliest() -> None:
    assert starting_offsets("t", [0, 1, 2], {}) == "earliest"
    assert json.loads(starting_offsets("t", [0, 1, 2], {0: 7, 2: 3})) == {"t": {"0": 7, "1": -2, "2": 3}}

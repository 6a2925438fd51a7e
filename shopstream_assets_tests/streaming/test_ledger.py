"""streaming.ledger: the one definition of consumer lag, and of a hole before a planned batch."""

from streaming.ledger import PlannedOffsets, describe_hole, messages_behind, missing_before, planned_coverage


def test_lag_counts_from_bronze_offsets_or_from_what_the_broker_still_holds() -> None:
    watermarks = {0: (0, 10), 1: (5, 9), 2: (100, 120), 3: (0, 4)}
    committed = {0: 7, 1: 2, 3: 4}
    # 0: 10 - 7; 1: Bronze stands before the low watermark, retention dropped 2-4, so 9 - 5;
    # 2: never read, counted from its low watermark; 3: caught up.
    assert messages_behind(watermarks, committed) == {0: 3, 1: 4, 2: 20, 3: 0}


def test_bronze_ahead_of_the_broker_is_no_negative_lag() -> None:
    assert messages_behind({0: (0, 5)}, {0: 8}) == {0: 0}


def test_a_batch_planned_beyond_bronze_names_the_missing_offsets() -> None:
    planned = PlannedOffsets(start={0: 120, 1: 50, 2: 7}, end={0: 150, 1: 60, 2: 9})
    # 0: Bronze stops at 99, the batch starts at 120; 1: Bronze is past the start (a replay got
    # there first): an overlap, not a hole; 2: never written, not checked.
    missing = missing_before(planned, {0: 99, 1: 55})
    assert missing == {0: (99, 120)}
    assert describe_hole(missing) == "partition 0 offsets 99-119"
    assert missing_before(PlannedOffsets(start=None, end={0: 150}), {0: 99}) == {}


def test_a_batch_covers_from_bronzes_position_to_its_planned_end() -> None:
    planned = PlannedOffsets(start={0: 10, 1: 20, 2: 0, 3: 4}, end={0: 15, 1: 20, 2: 3, 3: 6})
    # 0: from Bronze's 12 (10-11 written before) to 15; 1: nothing planned; 2: never written, from
    # the planned start; 3: Bronze already past the planned end.
    assert planned_coverage(planned, {0: 12, 1: 20, 3: 9}) == ({0: 12, 2: 0}, {0: 15, 2: 3})

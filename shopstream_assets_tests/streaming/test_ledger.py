"""streaming.ledger.messages_behind: the one definition of consumer lag."""

from streaming.ledger import messages_behind


def test_lag_counts_from_bronze_offsets_or_from_what_the_broker_still_holds() -> None:
    watermarks = {0: (0, 10), 1: (5, 9), 2: (100, 120), 3: (0, 4)}
    committed = {0: 7, 1: 2, 3: 4}
    # 0: 10 - 7; 1: Bronze stands before the low watermark, retention dropped 2-4, so 9 - 5;
    # 2: never read, counted from its low watermark; 3: caught up.
    assert messages_behind(watermarks, committed) == {0: 3, 1: 4, 2: 20, 3: 0}


def test_bronze_ahead_of_the_broker_is_no_negative_lag() -> None:
    assert messages_behind({0: (0, 5)}, {0: 8}) == {0: 0}

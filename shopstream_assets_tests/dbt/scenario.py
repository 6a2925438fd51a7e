"""What the dbt tests write into Bronze, through the stream's own writer: simulator batches and
hand-made late events that change the past."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, timedelta
from typing import Any

from shopstream import database
from streaming.bronze_load import KafkaPositions, write_messages
from streaming.events import encode_event, format_timestamp


class Bronze:
    """Writes simulator batches and hand-made late events into one test database."""

    def __init__(self, database_url: str) -> None:
        self.conn = database.connect(database_url, autocommit=True)
        self.positions = KafkaPositions("t-dbt")

    def write(self, keys: Sequence[bytes], values: Sequence[bytes]) -> int | None:
        return write_messages(self.conn, keys, values, self.positions)

    def write_events(self, events: Sequence[dict[str, Any]]) -> int | None:
        keys = [event["session_id"].encode() for event in events]
        return self.write(keys, [encode_event(event) for event in events])

    def query(self, statement: str) -> list[tuple[Any, ...]]:
        return self.conn.execute(statement).fetchall()

    def close(self) -> None:
        self.conn.close()


def _bronze_event(row: tuple[Any, ...], **changes: Any) -> dict[str, Any]:
    """A copy of a stored Bronze event (as the producer would send it) with ``changes``."""
    (event_id, moment, user_id, session_id, event_type, product_id, name, category, price,
     quantity, device, country) = row  # fmt: skip
    event = {
        "event_id": event_id,
        "event_timestamp": format_timestamp(moment),
        "user_id": user_id,
        "session_id": session_id,
        "event_type": event_type,
        "product_id": product_id,
        "product_name": name,
        "product_category": category,
        "product_price": float(price),
        "quantity": quantity,
        "device_type": device,
        "country": country,
        "schema_version": 1,
    }
    event.update(changes)
    return event


_EVENT_COLUMNS = (
    "event_id, event_timestamp, user_id, session_id, event_type, product_id, product_name,"
    " product_category, product_price, quantity, device_type, country"
)


def late_events(bronze: Bronze, tag: str) -> list[dict[str, Any]]:
    """Events that change the past: a session's start moved back across midnight, an
    abandoned cart bought an hour later, and a user-day's first event moved to another
    device and category."""
    made: list[dict[str, Any]] = []
    # The first event of a session that started after midnight, re-dated to 23:59:59.
    after_midnight = bronze.query(
        f"select {_EVENT_COLUMNS} from bronze.clickstream_events as e"
        " where event_timestamp >= date_trunc('day', (select max(event_timestamp)"
        "   from bronze.clickstream_events)) and event_type = 'page_view'"
        "   and not exists (select 1 from bronze.clickstream_events as earlier"
        "     where earlier.session_id = e.session_id and earlier.event_timestamp < e.event_timestamp)"
        " order by event_timestamp limit 1"
    )
    for row in after_midnight:
        midnight = row[1].astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        made.append(
            _bronze_event(
                row, event_id=f"EVT_late_start_{tag}", event_timestamp=format_timestamp(midnight - timedelta(seconds=1))
            )  # fmt: skip
        )
    # A purchase for the cart of a session that has a cart and no purchase yet.
    abandoned_cart = bronze.query(
        f"select {_EVENT_COLUMNS} from bronze.clickstream_events as e"
        " where event_type = 'add_to_cart' and not exists (select 1 from bronze.clickstream_events"
        "   as bought where bought.session_id = e.session_id and bought.event_type = 'purchase')"
        " order by event_timestamp, event_id limit 1"
    )
    for row in abandoned_cart:
        made.append(
            _bronze_event(
                row,
                event_id=f"EVT_late_purchase_{tag}",
                event_type="purchase",
                event_timestamp=format_timestamp(row[1] + timedelta(hours=1)),
            )  # fmt: skip
        )
    # A user's first event of a day, copied one second earlier on another device and for a
    # product of another category: the user-day and its session move to another segment.
    first_of_day = bronze.query(
        f"select {_EVENT_COLUMNS} from bronze.clickstream_events as e"
        " where event_type = 'page_view'"
        "   and event_timestamp - interval '1 second' >= date_trunc('day', event_timestamp at time zone 'UTC')"
        "     at time zone 'UTC'"
        "   and not exists (select 1 from bronze.clickstream_events as earlier"
        "     where earlier.user_id = e.user_id and earlier.event_timestamp < e.event_timestamp"
        "       and earlier.event_timestamp >= date_trunc('day', e.event_timestamp at time zone 'UTC')"
        "         at time zone 'UTC')"
        " order by event_timestamp desc, event_id limit 1"
    )
    for row in first_of_day:
        category, device = row[7], row[10]
        other_product = bronze.conn.execute(
            "select product_id, product_name, product_category, product_price from bronze.clickstream_events"
            " where product_category <> %s order by product_id limit 1",
            (category,),
        ).fetchone()
        made.append(
            _bronze_event(
                row,
                event_id=f"EVT_late_first_{tag}",
                event_timestamp=format_timestamp(row[1] - timedelta(seconds=1)),
                product_id=other_product[0],
                product_name=other_product[1],
                product_category=other_product[2],
                product_price=float(other_product[3]),
                device_type="Tablet" if device != "Tablet" else "Desktop",
            )
        )
    return made

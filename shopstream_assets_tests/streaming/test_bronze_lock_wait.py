"""Nobody waits for the Bronze lock in silence, and no Bronze writer's session can hang on forever.

Broken on purpose: with ``lock_bronze`` back to a bare ``pg_advisory_xact_lock``, the
waiting writer logs nothing and the first test fails; with the writer connecting without
``WRITER_SESSION_SETTINGS``, the server keeps the kernel's defaults (keepalives after two
hours, no statement or idle-transaction limit) and the second fails.
"""

from __future__ import annotations

import logging
import threading
import time

import pytest

from shopstream import database
from streaming import ledger
from streaming.bronze_sink import BronzeSink

HOLDER_APPLICATION = "test: a Bronze writer that went quiet"


def _records_naming(caplog: pytest.LogCaptureFixture, pid: int) -> list[logging.LogRecord]:
    return [
        record
        for record in caplog.records
        if "waiting for the Bronze lock" in record.getMessage()
        and f"pid {pid} " in record.getMessage()
        and HOLDER_APPLICATION in record.getMessage()
    ]


def test_a_writer_waiting_for_the_lock_says_who_holds_it_until_it_gets_it(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=ledger.__name__)
    holder = database.connect(database_url, application_name=HOLDER_APPLICATION)
    holder_pid = holder.info.backend_pid
    holder.execute("begin")
    ledger.lock_bronze(holder)
    took_lock = threading.Event()
    errors: list[BaseException] = []

    def wait_for_the_lock() -> None:
        try:
            with (
                database.connect_writer(database_url, application_name="test: waiting writer") as waiter,
                waiter.transaction(),
            ):
                ledger.lock_bronze(waiter, report_every=1.0)
                took_lock.set()
        except BaseException as error:  # noqa: BLE001 -- handed to the test thread
            errors.append(error)

    waiter_thread = threading.Thread(target=wait_for_the_lock, daemon=True)
    waiter_thread.start()
    try:
        # Said at once, and said again while the wait goes on.
        deadline = time.monotonic() + 60
        while len(_records_naming(caplog, holder_pid)) < 2 and time.monotonic() < deadline and not errors:
            time.sleep(0.05)
        assert not errors, errors
        assert len(_records_naming(caplog, holder_pid)) >= 2, [record.getMessage() for record in caplog.records]
        assert not took_lock.is_set(), "the waiter took the lock while another transaction held it"
        first = _records_naming(caplog, holder_pid)[0].getMessage()
        assert "in its transaction since" in first and "idle in transaction" in first, first
    finally:
        holder.execute("rollback")
        holder.close()
    waiter_thread.join(timeout=60)
    assert not errors, errors
    assert took_lock.is_set(), "the waiter never took the lock after the holder let go"
    assert any("took the Bronze lock" in record.getMessage() for record in caplog.records)


def test_a_bronze_writers_session_has_keepalives_and_bounded_waits(database_url: str) -> None:
    sink = BronzeSink(database_url, "lock-wait-topic")
    assert sink.committed_offsets() == {}
    writer = sink._connection()  # the sink's own session, as it writes batches
    for name, value in database.WRITER_SESSION_SETTINGS.items():
        shown = writer.execute("select setting from pg_settings where name = %s", (name,)).fetchone()[0]
        assert shown == value, (name, shown, value)
    with database.connect(database_url) as observer:
        application = observer.execute(
            "select application_name from pg_stat_activity where pid = %s", (writer.info.backend_pid,)
        ).fetchone()[0]
    assert application == "shopstream bronze writer (stream)"
    sink.close()

"""What a user does in a real browser beyond looking: the hot-leads download and the auto-refresh controls.

The session's `shopstream dashboard` on the seeded shop and its headless Chromium (``conftest.dashboard``).
The auto-refresh is read off the page's websocket: the server tells the browser to re-run the
live fragment every N seconds (``auto_rerun``), and the browser asks for each re-run on its own
(``rerun_script`` with ``is_auto_rerun``) -- Streamlit's own protocol, decoded with its own protobufs.
"""

from __future__ import annotations

import io
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from shopstream import database
from shopstream_assets_tests.dashboard.browser import DEADLINE_MS, Dashboard
from shopstream_assets_tests.dashboard.conftest import Shop


def _gold_hot_leads(admin_url: str) -> pd.DataFrame:
    with database.connect(admin_url) as conn:
        cursor = conn.execute("select * from gold.mart_hot_leads order by lead_rank")
        return pd.DataFrame(cursor.fetchall(), columns=[column.name for column in cursor.description])


def test_the_hot_leads_csv_holds_every_lead_as_gold_has_it(dashboard: Dashboard, shop: Shop, tmp_path: Path) -> None:
    """The downloaded file, parsed as a user's spreadsheet would, against gold.mart_hot_leads.

    A download built from the 50 leads the on-page table shows would fail the row count.
    """
    gold = _gold_hot_leads(shop.admin_url)
    assert len(gold) > 50  # more than the on-page table shows: the file must hold them all
    page = dashboard.browser.new_page(accept_downloads=True)
    try:
        page.goto(dashboard.base + "user_behavior")
        button = page.get_by_role("button", name=re.compile(r"Download all [\d,]+ leads \(CSV\)"))
        button.wait_for(timeout=DEADLINE_MS)
        with page.expect_download(timeout=DEADLINE_MS) as started:
            button.click()
        download = started.value
        assert download.suggested_filename == "shopstream_hot_leads.csv"
        csv_path = tmp_path / download.suggested_filename
        download.save_as(csv_path)
    finally:
        page.close()

    leads = pd.read_csv(io.BytesIO(csv_path.read_bytes()))
    assert len(leads) == len(gold)
    assert set(leads.columns) <= set(gold.columns)
    assert {"lead_rank", "user_id", "propensity_score", "abandoned_cart_value", "abandoned_at"} <= set(leads.columns)
    for column in leads.columns:
        shown, stored = leads[column], gold[column]
        if column == "abandoned_at":
            shown_at = pd.to_datetime(shown, utc=True, format="ISO8601")
            assert (shown_at == pd.to_datetime(stored, utc=True)).all(), column
        elif pd.api.types.is_numeric_dtype(shown):
            assert ((shown - stored.astype(float)).abs() < 1e-6).all(), column
        else:
            assert (shown.astype(str) == stored.astype(str)).all(), column


@dataclass
class Websocket:
    """What the page and the server said to each other, decoded."""

    auto_rerun_intervals: list[float] = field(default_factory=list)
    auto_reruns_asked: int = 0
    runs_finished: int = 0  # whole-page runs
    lock: threading.Lock = field(default_factory=threading.Lock)

    def received(self, payload: bytes | str) -> None:
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        if isinstance(payload, bytes):
            message = ForwardMsg()
            message.ParseFromString(payload)
            kind = message.WhichOneof("type")
            with self.lock:
                if kind == "auto_rerun":
                    self.auto_rerun_intervals.append(message.auto_rerun.interval)
                elif kind == "script_finished" and message.script_finished == ForwardMsg.FINISHED_SUCCESSFULLY:
                    self.runs_finished += 1  # a whole run, not one of the fragment's

    def sent(self, payload: bytes | str) -> None:
        from streamlit.proto.BackMsg_pb2 import BackMsg

        if isinstance(payload, bytes):
            message = BackMsg()
            message.ParseFromString(payload)
            if message.WhichOneof("type") == "rerun_script" and message.rerun_script.is_auto_rerun:
                with self.lock:
                    self.auto_reruns_asked += 1


def test_the_auto_refresh_controls_set_and_stop_the_live_re_runs(dashboard: Dashboard) -> None:
    """Default every 5 s; the slider makes it 2 s; the switch stops it and starts it again.

    Broken on purpose (the fragment re-run every 5 s whatever the slider says), this test failed:
    no ``auto_rerun`` of 2 s was ever sent.
    """
    socket = Websocket()
    page = dashboard.browser.new_page()

    def listen(websocket: object) -> None:
        websocket.on("framereceived", socket.received)
        websocket.on("framesent", socket.sent)

    page.on("websocket", listen)
    try:
        page.goto(dashboard.base + "live_stream")
        page.wait_for_function(
            "document.querySelectorAll('[data-testid=\"stMetric\"]').length >= 5", timeout=DEADLINE_MS
        )

        def wait_until(condition, what: str) -> None:
            deadline = DEADLINE_MS
            while not condition():
                assert deadline > 0, f"no {what} within {DEADLINE_MS / 1000:.0f} s: {socket}"
                page.wait_for_timeout(100)  # also lets Playwright deliver the websocket events
                deadline -= 100

        wait_until(lambda: 5.0 in socket.auto_rerun_intervals, "auto_rerun every 5 s (the default)")

        # The sidebar's "Every" slider, one step down: 5 s -> 2 s.
        slider = page.get_by_role("slider")
        slider.focus()
        slider.press("ArrowLeft")
        wait_until(lambda: 2.0 in socket.auto_rerun_intervals, "auto_rerun every 2 s after the slider moved")
        asked = socket.auto_reruns_asked
        wait_until(lambda: socket.auto_reruns_asked >= asked + 2, "two re-runs the page asked for on its own")

        # Switched off: once the run the switch started has finished, the page stops asking.
        finished = socket.runs_finished
        page.get_by_text("Auto-refresh", exact=True).click()
        wait_until(lambda: socket.runs_finished > finished, "the run after switching auto-refresh off")
        intervals_sent, asked = len(socket.auto_rerun_intervals), socket.auto_reruns_asked
        # A negative can only be watched for a while: three of the 2 s intervals.
        page.wait_for_timeout(3 * 2_000)
        assert socket.auto_reruns_asked == asked, "the page still re-runs with auto-refresh off"
        assert len(socket.auto_rerun_intervals) == intervals_sent

        # And on again: the 2 s chosen before is kept.
        page.get_by_text("Auto-refresh", exact=True).click()
        wait_until(lambda: socket.auto_reruns_asked >= asked + 1, "a re-run after switching back on")
        assert socket.auto_rerun_intervals[-1] == 2.0
    finally:
        page.close()

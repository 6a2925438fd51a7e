"""Streamlit pieces every page shares: the refresh settings, the auto-refreshing fragment, the messages,
tables with their CSV download."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

import pandas as pd
import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from dashboard.db import DatabaseDown, DataUnavailable, NotBuiltYet

DEFAULT_REFRESH_SECONDS = 5
REFRESH_CHOICES: tuple[int, ...] = (2, 5, 10, 30, 60)
AUTO_REFRESH_KEY = "auto_refresh"
REFRESH_SECONDS_KEY = "refresh_seconds"
# How long a table's earlier CSV stays downloadable after the table stops showing it.
KEPT_DOWNLOAD_SECONDS = 60
KEPT_CLASS = "csv_kept"


def refresh_controls() -> None:
    """Sidebar switch and interval for the pages' auto-refresh (kept across pages)."""
    st.session_state.setdefault(AUTO_REFRESH_KEY, True)
    st.session_state.setdefault(REFRESH_SECONDS_KEY, DEFAULT_REFRESH_SECONDS)
    with st.sidebar:
        st.toggle("Auto-refresh", key=AUTO_REFRESH_KEY, help="Re-query the data without reloading the page.")
        st.select_slider(
            "Every",
            options=REFRESH_CHOICES,
            key=REFRESH_SECONDS_KEY,
            format_func=lambda seconds: f"{seconds} s",
            disabled=not st.session_state[AUTO_REFRESH_KEY],
        )


def refresh_seconds() -> int | None:
    """The auto-refresh interval, or None when switched off."""
    if not st.session_state.get(AUTO_REFRESH_KEY, True):
        return None
    return int(st.session_state.get(REFRESH_SECONDS_KEY, DEFAULT_REFRESH_SECONDS))


def auto_refreshing(render: Callable[[], None]) -> None:
    """Run ``render`` in a fragment that re-runs on its own every refresh interval.

    Only the fragment re-runs, so the page keeps its scroll position and widgets. A
    database that is down or a table not built yet shows a message instead of a
    traceback; the next refresh tries again, which is how the page recovers by itself.
    """
    interval = refresh_seconds()

    def refreshing_section() -> None:
        try:
            render()
        except DataUnavailable as problem:
            show_unavailable(problem, interval)

    st.fragment(refreshing_section, run_every=interval)()


def show_unavailable(problem: DataUnavailable, interval: int | None) -> None:
    retry = (
        f"The page tries again every {interval} s." if interval else "Auto-refresh is off: switch it on or press Retry."
    )
    if isinstance(problem, DatabaseDown):
        st.error(f"**Database unavailable.** {problem} {retry}", icon=":material/cloud_off:")
    elif isinstance(problem, NotBuiltYet):
        st.info(
            f"**No data yet.** {problem} Start the pipeline (`shopstream up`) and this page fills in. {retry}",
            icon=":material/hourglass_empty:",
        )
    else:
        st.warning(f"**Data unavailable.** {problem} {retry}", icon=":material/warning:")
    if not interval:
        st.button("Retry", key="retry_unavailable")


def no_data(what: str) -> None:
    """A clear note for a table that exists but holds no rows yet."""
    st.info(f"**No data yet.** {what}", icon=":material/hourglass_empty:")


def ago(moment: datetime | None, now: datetime) -> str:
    """'4 s ago', '3 min ago', '2 h ago' or '-'."""
    if moment is None:
        return "–"
    seconds = max((now - moment).total_seconds(), 0.0)
    return f"{duration(timedelta(seconds=seconds))} ago"


def duration(span: timedelta | None) -> str:
    if span is None:
        return "–"
    seconds = max(span.total_seconds(), 0.0)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def table(
    frame: pd.DataFrame,
    *,
    key: str,
    file_name: str,
    container: DeltaGenerator | None = None,
    column_config: Mapping[str, Any] | None = None,
) -> None:
    """A table and, under it, a CSV download of exactly the rows and columns it shows."""
    where = container if container is not None else st
    where.dataframe(frame, hide_index=True, column_config=column_config, key=key)
    csv = frame.to_csv(index=False).encode()
    where.download_button(
        "Download CSV",
        data=csv,
        file_name=file_name,
        mime="text/csv",
        icon=":material/download:",
        on_click="ignore",
        key=f"{key}_csv",
    )
    _keep_recent_downloads(where, key, file_name, csv)


def _keep_recent_downloads(where: DeltaGenerator | Any, key: str, file_name: str, csv: bytes) -> None:
    """Keep the files of this table's recent versions downloadable for KEPT_DOWNLOAD_SECONDS.

    Streamlit serves a download button's file only while a run shows it: once a re-run shows
    other rows, the previous file is deleted at the end of the run after. Under auto-refresh a
    browser that is a run behind (a busy machine, a slow network) still holds the previous
    link, and its request finds no file: the download is cancelled. The versions of the last
    minute stay referenced by hidden copies of the button, so any link the
    browser may still hold is served; a version unchanged from one run to the next is one file.
    """
    now = time.monotonic()
    state_key = f"{key}_csv_recent"
    recent: dict[str, tuple[bytes, float]] = {
        digest: (data, seen)
        for digest, (data, seen) in st.session_state.get(state_key, {}).items()
        if now - seen < KEPT_DOWNLOAD_SECONDS
    }
    current = hashlib.blake2b(csv, digest_size=8).hexdigest()
    recent[current] = (csv, now)
    st.session_state[state_key] = recent
    earlier = [(digest, data) for digest, (data, _) in recent.items() if digest != current]
    if not earlier:
        return
    kept = where.container(key=f"{key}_{KEPT_CLASS}")
    kept.html(f"<style>.st-key-{key}_{KEPT_CLASS} {{ display: none; }}</style>")
    for digest, data in earlier:
        kept.download_button(
            "Earlier CSV", data=data, file_name=file_name, mime="text/csv", on_click="ignore", key=f"{key}_csv_{digest}"
        )

"""ShopStream's dashboard: one entry, three pages (`streamlit run dashboard/streamlit_app.py`)."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from dashboard import ui
from dashboard.db import DataUnavailable, current_url
from shopstream.database import redact

PAGES_DIR = Path(__file__).resolve().parent / "app_pages"

st.set_page_config(page_title="ShopStream", page_icon=":material/shopping_cart:", layout="wide")

navigation = st.navigation(
    [
        st.Page(PAGES_DIR / "overview.py", title="Overview", icon=":material/monitoring:", default=True),
        st.Page(PAGES_DIR / "user_behavior.py", title="User Behavior", icon=":material/group:"),
        st.Page(PAGES_DIR / "live_stream.py", title="Live Stream", icon=":material/bolt:"),
    ]
)

with st.sidebar:
    st.markdown("### :material/shopping_cart: ShopStream")
ui.refresh_controls()
with st.sidebar:
    try:
        st.caption(f"Data: `{redact(current_url())}`")
    except DataUnavailable as problem:
        st.caption(str(problem))

navigation.run()

"""A real browser (Debian's chromium via Playwright) on a running `shopstream dashboard`."""

from __future__ import annotations

from shopstream_assets_tests.dashboard.browser import ARTIFACTS, DEADLINE_MS, Dashboard

# url path -> (file name, Plotly charts the page draws on the seeded shop)
PAGES = {"": ("overview", 4), "user_behavior": ("user_behavior", 4), "live_stream": ("live_stream", 2)}


# Streamlit marks its root element with the script's state; Plotly sets _fullLayout on a chart once drawn.
DRAWN_AND_DONE = """n => {
    const app = document.querySelector('[data-testid="stApp"]');
    const plots = [...document.querySelectorAll('[data-testid="stPlotlyChart"] .js-plotly-plot')];
    return app !== null && app.dataset.testScriptState === "notRunning" && plots.length >= n
        && plots.every(plot => plot._fullLayout && plot.querySelector(".main-svg"));
}"""


def test_every_page_renders_its_charts_in_a_real_browser(dashboard: Dashboard) -> None:
    """Errors are looked for once Streamlit says the page's script run is over, not a fixed
    second after the charts appear: a page that raises after drawing its charts fails here
    on any machine, however slow its last query (tried)."""
    ARTIFACTS.mkdir(exist_ok=True)
    page = dashboard.browser.new_page(viewport={"width": 1600, "height": 2000})
    try:
        for path, (name, charts) in PAGES.items():
            page.goto(dashboard.base + path)
            # The script run over (so no error element can still come) and every chart laid out.
            page.wait_for_function(DRAWN_AND_DONE, arg=charts, timeout=DEADLINE_MS)
            assert page.locator('[data-testid="stException"]').count() == 0, name
            assert page.locator('[data-testid="stAlertContentError"]').count() == 0, name
            page.screenshot(path=str(ARTIFACTS / f"dashboard-{name}.png"))
    finally:
        page.close()

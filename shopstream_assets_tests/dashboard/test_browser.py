"""A real browser (Debian's chromium via Playwright) on a running `shopstream dashboard`."""

from __future__ import annotations

import sys
import time
import urllib.request

import pytest

from shopstream.embedded import free_port
from shopstream_assets_tests.conftest import REPO_ROOT, Spawn
from shopstream_assets_tests.dashboard.conftest import Shop
from shopstream_cli.test_setup import CHROMIUM, INSTALL_CHROMIUM

ARTIFACTS = REPO_ROOT / "test-artifacts"
# url path -> (file name, Plotly charts the page draws on the seeded shop)
PAGES = {"": ("overview", 4), "user_behavior": ("user_behavior", 4), "live_stream": ("live_stream", 2)}


# Streamlit marks its root element with the script's state; Plotly sets _fullLayout on a chart once drawn.
DRAWN_AND_DONE = """n => {
    const app = document.querySelector('[data-testid="stApp"]');
    const plots = [...document.querySelectorAll('[data-testid="stPlotlyChart"] .js-plotly-plot')];
    return app !== null && app.dataset.testScriptState === "notRunning" && plots.length >= n
        && plots.every(plot => plot._fullLayout && plot.querySelector(".main-svg"));
}"""


def dashboard_command(port: int) -> list[str]:
    """`shopstream dashboard --port N`, through the CLI when the command is registered."""
    from shopstream_cli.cli import app

    registered = {command.name or command.callback.__name__ for command in app.registered_commands}
    if "dashboard" in registered:
        return [sys.executable, "-m", "shopstream_cli.cli", "dashboard", "--port", str(port)]
    runner = "import typer; from dashboard.cli import dashboard_command; typer.run(dashboard_command)"
    return [sys.executable, "-c", runner, "--port", str(port)]


def wait_for_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url + "_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.3)


def test_every_page_renders_its_charts_in_a_real_browser(
    shop: Shop, shopstream_env: dict[str, str], spawn_process: Spawn
) -> None:
    """Errors are looked for once Streamlit says the page's script run is over, not a fixed
    second after the charts appear: a page that raises after drawing its charts fails here
    on any machine, however slow its last query (tried)."""
    from playwright.sync_api import sync_playwright

    # Never a skip: a green suite without its browser test would be a claim nobody checked.
    if not CHROMIUM.exists():
        pytest.fail(INSTALL_CHROMIUM)

    port = free_port()
    env = {
        **shopstream_env,
        "SHOPSTREAM_DASHBOARD_DATABASE_URL": shop.reader_url,
        "SHOPSTREAM_TOPIC": shop.topic,
        "SHOPSTREAM_DASHBOARD_PORT": str(port),
    }
    spawn_process(dashboard_command(port), env=env, name="dashboard")
    base = f"http://127.0.0.1:{port}/"
    wait_for_http(base)
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 2000})
            for path, (name, charts) in PAGES.items():
                page.goto(base + path)
                # The script run over (so no error element can still come) and every chart laid out.
                page.wait_for_function(DRAWN_AND_DONE, arg=charts, timeout=45_000)
                assert page.locator('[data-testid="stException"]').count() == 0, name
                assert page.locator('[data-testid="stAlertContentError"]').count() == 0, name
                page.screenshot(path=str(ARTIFACTS / f"dashboard-{name}.png"))
        finally:
            browser.close()

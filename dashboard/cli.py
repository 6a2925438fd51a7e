"""`shopstream dashboard [--port N]`: the Streamlit app on SHOPSTREAM_BIND_ADDRESS (127.0.0.1)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from shopstream.command import fail, settings_or_exit
from shopstream.settings import SettingsError

APP_PATH = Path(__file__).resolve().parent / "streamlit_app.py"


def streamlit_command(port: int, host: str = "127.0.0.1") -> list[str]:
    """The `streamlit run` command line: loopback by default, headless, no usage statistics."""
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP_PATH),
        "--server.address",
        host,
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        # The pages are code, not user uploads: no file watcher thread needed in production.
        "--server.fileWatcherType",
        "none",
        # A viewer's menu only: no "Deploy" button or developer options.
        "--client.toolbarMode",
        "viewer",
        "--theme.base",
        "light",
    ]


def dashboard_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for the Streamlit process: SHOPSTREAM_* plus the resolved read-only URL."""
    from dashboard.db import dashboard_database_url

    env = dict(os.environ if base is None else base)
    env["SHOPSTREAM_DASHBOARD_DATABASE_URL"] = dashboard_database_url(env)
    return env


def dashboard_command(
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Port (default SHOPSTREAM_DASHBOARD_PORT, 8501).")
    ] = None,
) -> None:
    """Serve the dashboard (Overview, User Behavior, Live Stream) on http://127.0.0.1:PORT by default."""
    settings = settings_or_exit()
    try:
        env = dashboard_environment()
    except SettingsError as error:
        raise fail(error) from None
    chosen_port = port if port is not None else settings.dashboard_port
    if not 1 <= chosen_port <= 65535:
        raise typer.BadParameter(f"--port must be 1-65535: got {chosen_port}")
    typer.echo(f"dashboard: http://{settings.bind_address}:{chosen_port}", err=True)
    command = streamlit_command(chosen_port, settings.bind_address)
    # Become Streamlit (no wrapper process): signals from `shopstream up` or a terminal reach it directly.
    os.execve(command[0], command, env)

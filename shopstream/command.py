"""How every `shopstream` command (on any floor) reports a failure it can name: one red line, exit code."""

from __future__ import annotations

import math

import typer

from shopstream.settings import Settings, SettingsError, load_settings

USAGE_ERROR = 2  # a setting, an option or a missing server: the user can fix it and run again


def fail(message: object, code: int = USAGE_ERROR) -> typer.Exit:
    """Print ``error: message`` to stderr; return the Exit to raise (``raise fail(...) from None``)."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=code)


def settings_or_exit() -> Settings:
    try:
        return load_settings()
    except SettingsError as error:
        raise fail(error) from None


def finite(value: float | None) -> float | None:
    """The callback of every float option: click's ranges let ``inf`` and ``nan`` through."""
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"must be a finite number, got {value}")
    return value

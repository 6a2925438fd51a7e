"""Typed readers of one environment value each, for :mod:`shopstream.settings`.

Each names the variable (or command-line option) in its error, and never shows a password.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import urlsplit


class SettingsError(ValueError):
    """A setting has a value ShopStream cannot use; the message names the variable."""


_BOOTSTRAP_SERVER = re.compile(r"^[A-Za-z0-9.\-_\[\]:]+:\d{1,5}$")


def text_value(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    if value is None or not value.strip():
        return None
    return value.strip()


def port_value(env: Mapping[str, str], name: str, default: int) -> int:
    return int_value(env, name, default, low=1, high=65535)


def int_value(env: Mapping[str, str], name: str, default: int, *, low: int, high: int) -> int:
    raw = text_value(env, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number from {low} to {high}: got {raw!r}") from None
    if not low <= value <= high:
        raise SettingsError(f"{name} must be a whole number from {low} to {high}: got {raw!r}")
    return value


_SIZE_UNITS = {"k": 1024, "m": 1024**2, "g": 1024**3}


def size_value(env: Mapping[str, str], name: str, default: int, *, low: int) -> int:
    """A size such as ``512k``, ``50m`` or ``1g`` (binary units), in bytes."""
    raw = text_value(env, name)
    if raw is None:
        return default
    found = re.fullmatch(r"([1-9]\d{0,8})([kmg])", raw.lower())
    value = int(found[1]) * _SIZE_UNITS[found[2]] if found else 0
    if value < low:
        raise SettingsError(f"{name} must be a size of at least {low // 1024}k, such as 512k, 50m or 1g: got {raw!r}")
    return value


_URL_PASSWORD_PARAMETER = re.compile(r"(?i)([?&]password=)[^&#]*")


def redact_url(url: str) -> str:
    """``url`` safe to print: its password, in the user part or as a ``password=`` parameter, shown as ***.

    Works on URLs too broken to parse (an unencoded ``@``, ``/`` or ``#`` in the password), since
    those are the ones an error message shows.
    """
    scheme, separator, rest = url.partition("://")
    if separator:
        credentials, at, server = rest.rpartition("@")
        if at and ":" in credentials:
            rest = f"{credentials.split(':', 1)[0]}:***@{server}"
    return _URL_PASSWORD_PARAMETER.sub(r"\1***", scheme + separator + rest)


def parse_database_url(name: str, raw: str) -> str:
    """Check that ``raw`` is a usable PostgreSQL URL; return it unchanged. Errors show it without its password."""
    shown = redact_url(raw)
    parts = urlsplit(raw)
    if parts.scheme not in ("postgresql", "postgres"):
        raise SettingsError(f"{name} is not a postgresql:// URL: got {shown!r}")
    if not parts.hostname:
        raise SettingsError(f"{name} has no host (postgresql://user:password@host:port/db): got {shown!r}")
    if not parts.path.strip("/"):
        raise SettingsError(f"{name} names no database (postgresql://user:password@host:port/db): got {shown!r}")
    try:
        parts.port  # noqa: B018 -- urlsplit only validates the port when asked
    except ValueError:
        raise SettingsError(
            f"{name} has a port that is not a number (a password with @ / # : % must be URL-encoded): got {shown!r}"
        ) from None
    return raw


def parse_kafka_bootstrap(name: str, raw: str) -> str:
    servers = [server.strip() for server in raw.split(",") if server.strip()]
    if not servers or not all(_BOOTSTRAP_SERVER.match(server) for server in servers):
        raise SettingsError(f"{name} must be host:port[,host:port...]: got {raw!r}")
    return ",".join(servers)


def parse_topic(name: str, raw: str) -> str:
    """Kafka's own rule for topic names; ``name`` is the setting or option the value came from."""
    if not re.fullmatch(r"[A-Za-z0-9._\-]{1,249}", raw):
        raise SettingsError(f"{name} must be 1-249 characters of letters, digits, '.', '_' or '-': got {raw!r}")
    return raw


def flag_value(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = text_value(env, name)
    if raw is None:
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name} must be 1 or 0 (true/false, yes/no, on/off): got {raw!r}")

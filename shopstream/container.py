"""The image's entry point: put the PostgreSQL password into SHOPSTREAM_DATABASE_URL, URL-encoded, then
become the command (``python -m shopstream.container shopstream stream``).

compose.yaml cannot encode a value it substitutes, and a password with ``#``, ``/``, ``@``, ``:`` or
``%`` pasted into a URL breaks it. So compose gives the URL without a password and the password
apart, in ``POSTGRES_PASSWORD`` (the name the postgres image reads too); this joins them. The
dashboard's service gets no ``POSTGRES_PASSWORD``: its URL is the reader's, made from
SHOPSTREAM_READER_PASSWORD by the settings (``database.as_reader`` encodes it as well).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, MutableMapping
from urllib.parse import quote, urlsplit, urlunsplit

PASSWORD_VARIABLE = "POSTGRES_PASSWORD"
URL_VARIABLE = "SHOPSTREAM_DATABASE_URL"


def with_password(url: str, password: str) -> str:
    """``url`` with ``password`` as its user's, percent-encoded."""
    parts = urlsplit(url)
    user, _, _ = parts.netloc.rpartition("@")[0].partition(":")
    server = parts.netloc.rpartition("@")[2]
    netloc = f"{user}:{quote(password, safe='')}@{server}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def container_environment(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` with the password moved into the URL (and out of the environment)."""
    result = dict(env)
    password = result.pop(PASSWORD_VARIABLE, None)
    if password and result.get(URL_VARIABLE):
        result[URL_VARIABLE] = with_password(result[URL_VARIABLE], password)
    return result


def main(argv: list[str] | None = None, environ: MutableMapping[str, str] = os.environ) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        raise SystemExit("usage: python -m shopstream.container COMMAND [ARGS...]")
    os.execvpe(argv[0], argv, container_environment(environ))


if __name__ == "__main__":
    main()

"""The image's entry point: put each PostgreSQL password into its URL, URL-encoded, then become the
command (``python -m shopstream.container shopstream stream``).

compose.yaml cannot encode a value it substitutes, and a password with ``#``, ``/``, ``@``, ``:`` or
``%`` pasted into a URL breaks it. So compose gives each URL without a password and the password
apart (:data:`URL_PASSWORDS`); this joins them and takes the password variables out of the
environment. Each service gets only its own pair: the setup service the admin's (``POSTGRES_PASSWORD``,
the name the postgres image reads too) beside the others, the stream the owner's, Dagster its own and
the owner's, the dashboard none of these: its URL is the reader's, made from SHOPSTREAM_READER_PASSWORD
by the settings (``database.as_reader`` encodes it as well).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, MutableMapping
from urllib.parse import quote, urlsplit, urlunsplit

# URL variable -> the variable compose gives its password in.
URL_PASSWORDS = {
    "SHOPSTREAM_ADMIN_DATABASE_URL": "POSTGRES_PASSWORD",
    "SHOPSTREAM_DATABASE_URL": "SHOPSTREAM_OWNER_PASSWORD",
    "SHOPSTREAM_DAGSTER_DATABASE_URL": "SHOPSTREAM_DAGSTER_PASSWORD",
}
PASSWORD_VARIABLES = frozenset(URL_PASSWORDS.values())


def with_password(url: str, password: str) -> str:
    """``url`` with ``password`` as its user's, percent-encoded."""
    parts = urlsplit(url)
    user, _, _ = parts.netloc.rpartition("@")[0].partition(":")
    server = parts.netloc.rpartition("@")[2]
    netloc = f"{user}:{quote(password, safe='')}@{server}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def container_environment(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` with each password moved into its URL (and out of the environment)."""
    result = dict(env)
    for url_variable, password_variable in URL_PASSWORDS.items():
        password = result.pop(password_variable, None)
        if password and result.get(url_variable):
            result[url_variable] = with_password(result[url_variable], password)
    return result


def main(argv: list[str] | None = None, environ: MutableMapping[str, str] = os.environ) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        raise SystemExit("usage: python -m shopstream.container COMMAND [ARGS...]")
    os.execvpe(argv[0], argv, container_environment(environ))


if __name__ == "__main__":
    main()

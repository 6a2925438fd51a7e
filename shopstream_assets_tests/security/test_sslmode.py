"""Every PostgreSQL client honours ``sslmode`` and ``sslrootcert`` from the URL's query string.

A managed PostgreSQL is reached with ``?sslmode=verify-full&sslrootcert=<its CA>``. The embedded
server is built without TLS, so the module puts PostgreSQL's own TLS in front of the session's
server (:class:`TlsTerminator`: it answers libpq's SSLRequest, does the handshake with a
certificate for 127.0.0.1 signed by a CA made here, then relays the session) and each client
connects through it with such a URL: psycopg (``shopstream.database``, which the stream's
Bronze writer uses), dbt's profile, dagster-postgres through our dagster.yaml, and the
dashboard's pool. Each shows the parameters it used and a TLS session; given another CA, each
is refused, so the certificate is verified, not merely offered. ``sslmode=require`` against
the server itself (no TLS) fails with libpq's plain sentence.
"""

from __future__ import annotations

import os
import selectors
import shutil
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import dagster as dg
import psycopg
import pytest

from shopstream import database
from shopstream.services import Endpoints
from shopstream.settings import environment_overridden
from shopstream_assets.runtime.dagster_instance import (
    DBT_PROJECT_DIR,
    dbt_profile_environment,
    venv_executable,
    write_instance_yaml,
)

pytestmark = [pytest.mark.servers]

# libpq's first message when it wants TLS (or GSS encryption, which we decline), from PostgreSQL's protocol.
SSL_REQUEST_CODE = 80877103
GSSENC_REQUEST_CODE = 80877104


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _certificates(folder: Path) -> None:
    """ca.pem and other-ca.pem (self-signed CAs), server.pem/server.key for 127.0.0.1 signed by ca.pem."""
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for name in ("ca", "other-ca"):
        _openssl("req", "-x509", *key, "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
                 "-subj", f"/CN=shopstream test {name}", cwd=folder)  # fmt: skip
    _openssl("req", *key, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1", cwd=folder)
    (folder / "server.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.pem", "-days", "2", "-extfile", "server.ext", cwd=folder)  # fmt: skip


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


class TlsTerminator:
    """PostgreSQL's TLS on 127.0.0.1 in front of a server that has none: a TLS-only listener."""

    def __init__(self, backend: tuple[str, int], certificate: Path, key: Path) -> None:
        self.backend = backend
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(certificate, key)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            while True:
                _, code = struct.unpack("!II", _read_exactly(client, 8))
                if code == GSSENC_REQUEST_CODE:
                    client.sendall(b"N")
                    continue
                if code != SSL_REQUEST_CODE:
                    return  # a client that does not ask for TLS is not served here
                client.sendall(b"S")
                break
            tls = self.context.wrap_socket(client, server_side=True)
            with tls, socket.create_connection(self.backend) as backend:
                self._relay(tls, backend)
        except (OSError, ConnectionError):
            pass  # a refused handshake (the client did not trust us) or a session's end
        finally:
            client.close()

    @staticmethod
    def _relay(tls: ssl.SSLSocket, backend: socket.socket) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(tls, selectors.EVENT_READ)
            selector.register(backend, selectors.EVENT_READ)
            while True:
                for key, _ in selector.select():
                    if key.fileobj is tls:
                        data = tls.recv(65536)
                        while data and tls.pending():
                            data += tls.recv(tls.pending())
                        target: socket.socket = backend
                    else:
                        data = backend.recv(65536)
                        target = tls
                    if not data:
                        return
                    target.sendall(data)


@dataclass(frozen=True)
class TlsServer:
    port: int
    ca: Path  # the CA that signed the certificate
    other_ca: Path  # a CA that did not

    def verified(self, url: str, *, ca: Path | None = None) -> str:
        """``url`` through the TLS listener, with ?sslmode=verify-full&sslrootcert=<ca> (default: the right CA)."""
        parts = urlsplit(url)
        netloc = f"{parts.netloc.rsplit('@', 1)[0]}@127.0.0.1:{self.port}"
        query = f"sslmode=verify-full&sslrootcert={ca or self.ca}"
        return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


@pytest.fixture(scope="module")
def tls_server(postgres_server: tuple[str, str]) -> Iterator[TlsServer]:
    """TLS in front of the session's PostgreSQL, for this module; closed pass or fail."""
    folder = Path(tempfile.mkdtemp(prefix="shopstream-tls-"))
    terminator = None
    try:
        _certificates(folder)
        parts = database.url_parts(postgres_server[0])
        terminator = TlsTerminator((parts.host, parts.port), folder / "server.pem", folder / "server.key")
        yield TlsServer(terminator.port, folder / "ca.pem", folder / "other-ca.pem")
    finally:
        if terminator is not None:
            terminator.close()
        shutil.rmtree(folder, ignore_errors=True)


def _tls_of(conn: psycopg.Connection) -> tuple[str | None, str | None, bool]:
    """(sslmode, sslrootcert) the connection was made with, and whether its session is TLS."""
    parameters = conn.info.get_parameters()
    return parameters.get("sslmode"), parameters.get("sslrootcert"), conn.pgconn.ssl_in_use


def test_psycopg_connections_verify_the_server_as_the_url_says(
    tls_server: TlsServer, database_url: str, dashboard_database_url: str
) -> None:
    url = tls_server.verified(database_url)
    expected = ("verify-full", str(tls_server.ca), True)
    with database.connect(url) as conn:
        assert _tls_of(conn) == expected
    # The Bronze writer's connection adds its session options to the URL's, and keeps its TLS.
    with database.connect_writer(url, "sslmode-test") as conn:
        assert _tls_of(conn) == expected
        assert conn.execute("show statement_timeout").fetchone() == ("15min",)
    # Derived URLs (another database, the reader role) keep the query string.
    with database.connect(database.with_database(url, "postgres")) as conn:
        assert _tls_of(conn) == expected
    reader = database.as_reader(url, database.url_parts(dashboard_database_url).password)
    with database.connect(reader) as conn:
        assert _tls_of(conn) == expected
    assert database.url_parts(url).ssl == {"sslmode": "verify-full", "sslrootcert": str(tls_server.ca)}

    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        database.connect(tls_server.verified(database_url, ca=tls_server.other_ca))


def test_sslmode_require_against_a_server_without_tls_fails_clearly(admin_database_url: str) -> None:
    with pytest.raises(psycopg.OperationalError, match="server does not support SSL, but SSL was required"):
        database.connect(f"{admin_database_url}?sslmode=require")


def _dbt_debug(url: str) -> subprocess.CompletedProcess[str]:
    """``dbt debug`` (it prints the profile's connection values and opens a connection) with the
    SHOPSTREAM_DB_* variables `shopstream up` gives dbt for ``url``."""
    profile = dbt_profile_environment(Endpoints(url, url, "unused:9092"))
    env = {name: value for name, value in os.environ.items() if not name.startswith("SHOPSTREAM_")}
    env.update({**profile, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false", "DBT_USE_COLORS": "false"})
    command = [venv_executable("dbt"), "debug", "--project-dir", str(DBT_PROJECT_DIR)]
    return subprocess.run(
        [*command, "--profiles-dir", str(DBT_PROJECT_DIR)],
        env=env,
        cwd=DBT_PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_dbt_profile_takes_sslmode_and_sslrootcert_from_the_url(tls_server: TlsServer, database_url: str) -> None:
    url = tls_server.verified(database_url)
    profile = dbt_profile_environment(Endpoints(url, url, "unused:9092"))
    assert (profile["SHOPSTREAM_DB_SSLMODE"], profile["SHOPSTREAM_DB_SSLROOTCERT"]) == (
        "verify-full",
        str(tls_server.ca),
    )
    # A URL without them empties them, so a run worker never keeps another URL's.
    plain = dbt_profile_environment(Endpoints(database_url, database_url, "unused:9092"))
    assert plain["SHOPSTREAM_DB_SSLMODE"] == plain["SHOPSTREAM_DB_SSLROOTCERT"] == ""

    debug = _dbt_debug(url)
    assert debug.returncode == 0, debug.stdout[-3000:]
    assert "sslmode: verify-full" in debug.stdout and f"sslrootcert: {tls_server.ca}" in debug.stdout
    assert "Connection test: [OK connection ok]" in debug.stdout

    refused = _dbt_debug(tls_server.verified(database_url, ca=tls_server.other_ca))
    assert refused.returncode != 0 and "certificate verify failed" in refused.stdout


def _dagster_instance(home: Path, url: str) -> dg.DagsterInstance:
    """The instance `shopstream up` runs, from our dagster.yaml, its storage at ``url``."""
    parts = database.url_parts(url)
    write_instance_yaml(home, parts.database, fast=False, ssl=parts.ssl)
    storage_environment = {
        "SHOPSTREAM_DB_HOST": parts.host,
        "SHOPSTREAM_DB_PORT": str(parts.port),
        "SHOPSTREAM_DAGSTER_DB_USER": parts.user,
        "SHOPSTREAM_DAGSTER_DB_PASSWORD": parts.password,
    }
    with environment_overridden(storage_environment):
        return dg.DagsterInstance.from_config(str(home))


def test_dagster_storage_takes_sslmode_and_sslrootcert_from_the_url(
    tls_server: TlsServer, database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = tls_server.verified(database_url)
    with _dagster_instance(tmp_path / "verified", url) as instance:
        # The URL dagster-postgres built from dagster.yaml, and a query through it.
        storage_url = instance.run_storage.postgres_url  # type: ignore[attr-defined]
        assert storage_url.endswith(f"?sslmode=verify-full&sslrootcert={quote(str(tls_server.ca), safe='')}")
        assert instance.get_runs() == []
    # verify-full with the right CA is what let it in: with another CA it is refused.
    # (dagster-postgres retries a few times, logging each failure, then gives up.)
    with pytest.raises(Exception, match="too many retries for DB connection"):
        _dagster_instance(tmp_path / "other-ca", tls_server.verified(database_url, ca=tls_server.other_ca))
    assert "SSL error: certificate verify failed" in caplog.text


def test_dashboard_pool_takes_sslmode_and_sslrootcert_from_the_url(
    tls_server: TlsServer, database_url: str, dashboard_database_url: str, tmp_path: Path
) -> None:
    from dashboard.db import dashboard_database_url as dashboard_url_from
    from dashboard.db import get_pool, read

    owner = tls_server.verified(database_url)
    reader_password = database.url_parts(dashboard_database_url).password
    # The reader's URL derived from the owner's keeps the query string, as does a given one.
    derived = dashboard_url_from(
        {
            "SHOPSTREAM_HOME": str(tmp_path),
            "SHOPSTREAM_DATABASE_URL": owner,
            "SHOPSTREAM_READER_PASSWORD": reader_password,
        }
    )
    assert database.url_parts(derived).ssl == database.url_parts(owner).ssl
    given = tls_server.verified(dashboard_database_url)
    with environment_overridden({"SHOPSTREAM_DASHBOARD_DATABASE_URL": given, "SHOPSTREAM_HOME": str(tmp_path)}):
        try:
            assert read(_tls_of) == ("verify-full", str(tls_server.ca), True)
        finally:
            get_pool.clear()

"""The embedded PostgreSQL's generated passwords: where they live and how a role gets one.

They are kept in ``SHOPSTREAM_HOME/credentials.json``, created at mode 600 and replaced in one
step. Only the admin password cannot be made again: it is the one the cluster was initialised
with, so when the file is gone while the cluster is there, nothing is generated in its place
(``shopstream services reset-passwords`` sets new ones through the server's local access).
A role's password goes to the server as a SCRAM verifier, never as text a server log could show.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from pathlib import Path

from shopstream.embedded import ServiceError, write_file_atomically

ADMIN_PASSWORD = "admin_password"
# Passwords of the login roles ShopStream makes; each is set again at every start, so a missing one
# is generated and saved without harm.
ROLE_PASSWORDS = ("owner_password", "reader_password", "dagster_password")
SCRAM_ITERATIONS = 4096


class CredentialsMissing(ServiceError):
    """The cluster exists but its admin password is not at hand."""


def new_password() -> str:
    return secrets.token_urlsafe(24)


def scram_verifier(password: str, *, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for ``password`` (RFC 7677, as libpq's PQencryptPasswordConn)."""
    salt = secrets.token_bytes(16) if salt is None else salt
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def encode(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${iterations}:{encode(salt)}${encode(stored_key)}:{encode(server_key)}"


class Credentials:
    """Generated passwords, kept in ``SHOPSTREAM_HOME/credentials.json`` (mode 600)."""

    def __init__(self, home: Path) -> None:
        self.path = home / "credentials.json"

    def _read(self) -> dict[str, str]:
        """The stored passwords; CredentialsMissing says why there are none."""
        try:
            stored = json.loads(self.path.read_text())
        except FileNotFoundError:
            raise CredentialsMissing(f"{self.path} is missing") from None
        except (OSError, ValueError) as error:
            raise CredentialsMissing(f"{self.path} is unreadable ({type(error).__name__})") from None
        if not isinstance(stored, dict) or not isinstance(stored.get(ADMIN_PASSWORD), str):
            raise CredentialsMissing(f"{self.path} holds no admin password")
        return stored

    def load(self) -> dict[str, str]:
        """Every password; the role passwords a file from an older version lacks are generated and saved."""
        stored = self._read()
        missing = [name for name in ROLE_PASSWORDS if not isinstance(stored.get(name), str)]
        if missing:
            stored.update({name: new_password() for name in missing})
            self.save(stored)
        return stored

    def create(self) -> dict[str, str]:
        """New passwords for a new cluster, saved."""
        passwords = {name: new_password() for name in (ADMIN_PASSWORD, *ROLE_PASSWORDS)}
        self.save(passwords)
        return passwords

    def save(self, passwords: dict[str, str]) -> None:
        write_file_atomically(self.path, json.dumps(passwords, indent=2), mode=0o600)

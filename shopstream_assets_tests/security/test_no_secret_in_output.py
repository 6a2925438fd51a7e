"""No generated password in any command's output, nor in any file under SHOPSTREAM_HOME but the two
that exist to hold them (credentials.json and env.sh, both mode 600)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from shopstream.services import ENVIRONMENT_FILENAME
from shopstream.settings import SettingsError, load_settings, redact_url
from shopstream_assets.runtime.dagster_instance import write_instance_yaml
from shopstream_assets_tests.ground.own_servers import CLI, cli, env_for, exports

SECRET_STORES = ("credentials.json", ENVIRONMENT_FILENAME)


def files_holding(home: Path, secrets: list[str]) -> list[str]:
    found = []
    needles = [secret.encode() for secret in secrets]
    for path in home.rglob("*"):
        if path.is_symlink() or not path.is_file() or (path.parent == home and path.name in SECRET_STORES):
            continue
        content = path.read_bytes()
        found.extend(f"{path}" for needle in needles if needle in content)
    return found


@pytest.mark.servers
@pytest.mark.slow
def test_the_readme_commands_print_and_leave_no_password(own_home: Path) -> None:
    outputs: list[str] = []

    def run(*args: str, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        if env is None:
            result = cli(own_home, *args, check=check)
        else:
            result = subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=300)
            assert not check or result.returncode == 0, result.stderr
        outputs.append(result.stdout + result.stderr)
        return result

    started = run("services", "start")
    assert started.stdout.startswith(". ")  # what `eval` runs: the private file, not its content
    exported = exports(started.stdout)
    passwords = list(json.loads((own_home / "credentials.json").read_text()).values())
    assert passwords and all(len(password) >= 20 for password in passwords)
    assert any(password in exported["SHOPSTREAM_DATABASE_URL"] for password in passwords)

    # The shell `eval "$(shopstream services start)"` leaves behind points at the servers.
    shell = subprocess.run(
        ["sh", "-c", 'eval "$(cat)"; printf %s "$SHOPSTREAM_DATABASE_URL"'],
        input=started.stdout,
        capture_output=True,
        text=True,
        check=True,
    )
    assert shell.stdout == exported["SHOPSTREAM_DATABASE_URL"]

    env = {**env_for(own_home), **exported, "SHOPSTREAM_SPARK_MASTER": "local[2]"}
    run("services", "status")
    run("migrate", env=env)
    run("produce", "--events", "300", "--rate", "0", "--quiet", env=env)
    run("stream", "--until-idle", "5", env=env)

    # A broken URL is named in the error without its password.
    broken = {**env, "SHOPSTREAM_DATABASE_URL": f"postgresql://shopstream:{passwords[0]}@/shopstream"}
    error = run("migrate", env=broken, check=False)
    assert error.returncode == 2 and "SHOPSTREAM_DATABASE_URL" in error.stderr and "***" in error.stderr

    # Dagster's instance file names the variables, not their values.
    write_instance_yaml(own_home / "dagster", fast=False)

    for output in outputs:
        for password in passwords:
            assert password not in output, output
    assert files_holding(own_home, passwords) == []
    for name in SECRET_STORES:
        assert oct((own_home / name).stat().st_mode & 0o777) == oct(0o600)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:s3cret-pw@/db",
        "mysql://u:s3cret-pw@h/db",
        "postgresql://u:s3cret-pw@h:port/db",
        "postgresql://u:s3cret-pw@h:5432/",
        "postgresql://u:s3c#ret/pw@h/db",
        "postgresql://?password=s3cret-pw",
    ],
)
def test_a_settings_error_shows_the_url_without_its_password(url: str, tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings({"SHOPSTREAM_DATABASE_URL": url, "SHOPSTREAM_HOME": str(tmp_path)})
    message = str(raised.value)
    assert "SHOPSTREAM_DATABASE_URL" in message and "s3c" not in message and "***" in message


def test_redaction_keeps_everything_but_the_password() -> None:
    assert (
        redact_url("postgresql://u:p%40ss@h:5432/db?sslmode=require") == "postgresql://u:***@h:5432/db?sslmode=require"
    )
    assert redact_url("postgresql://u@h/db") == "postgresql://u@h/db"

"""compose.yaml cannot run here (no Docker engine), so check what can be checked without one."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from shopstream.container import PASSWORD_VARIABLE
from shopstream.settings import VARIABLES
from shopstream_cli.cli import app

REPO_ROOT = Path(__file__).resolve().parents[1]


def _compose() -> dict:
    return yaml.safe_load((REPO_ROOT / "compose.yaml").read_text())


def _cli_command_exists(words: list[str]) -> bool:
    import typer.main

    # typer vendors its own click, so look for sub-commands by attribute, not by class.
    group = typer.main.get_command(app)
    for word in words:
        if word.startswith("-") or word.startswith("$"):
            break
        if not hasattr(group, "commands"):
            return True
        command = group.commands.get(word)
        if command is None:
            return False
        group = command
    return True


def test_every_service_runs_a_command_the_package_has() -> None:
    services = _compose()["services"]
    assert {"kafka", "postgres", "producer", "stream", "dagster-webserver", "dagster-daemon", "dashboard"} <= set(
        services
    )
    # The broker compose runs is the one `make up` runs from Maven Central.
    pom = (REPO_ROOT / "streaming" / "jvm" / "pom.xml").read_text()
    (kafka_version,) = re.findall(r"<kafka.version>([^<]+)</kafka.version>", pom)
    assert services["kafka"]["image"] == f"apache/kafka:{kafka_version}"
    for name, service in services.items():
        command = service.get("command")
        if command is None:
            assert "image" in service and "build" not in service, f"{name} has neither command nor image"
            continue
        assert command[0] == "shopstream", f"{name} runs {command[0]}, not the package's console script"
        assert _cli_command_exists(command[1:]), f"{name}: `{' '.join(command)}` is not a shopstream command"


def test_every_variable_set_is_one_the_settings_module_reads() -> None:
    compose = _compose()
    # Beside the settings: the password the image's entry point puts into the URL (shopstream/container.py).
    shopstream_env = set(compose["x-shopstream-env"]) - {PASSWORD_VARIABLE}
    assert shopstream_env <= set(VARIABLES), shopstream_env - set(VARIABLES)
    for name, service in compose["services"].items():
        for variable in service.get("environment", {}) or {}:
            if variable.startswith("SHOPSTREAM_"):
                assert variable in VARIABLES, f"{name} sets {variable}, which settings.py does not read"


def test_no_credential_is_committed() -> None:
    text = (REPO_ROOT / "compose.yaml").read_text()
    for key, value in re.findall(r"^\s*([A-Z_]*PASSWORD[A-Z_]*):\s*(.+)$", text, re.MULTILINE):
        assert value.startswith("${"), f"a literal password in compose.yaml: {key}: {value}"
    for url in re.findall(r"postgresql://[^\s]+", text):
        # No password in a URL at all: the entry point adds it, encoded (shopstream/container.py).
        user_part = url.removeprefix("postgresql://").rpartition("@")[0]
        assert ":" not in user_part, f"a URL with a password in compose.yaml: {url}"
    example = (REPO_ROOT / ".env.example").read_text()
    assert re.search(r"^SHOPSTREAM_POSTGRES_PASSWORD=$", example, re.MULTILINE)


def test_the_dockerfile_installs_the_pinned_set() -> None:
    """The image installs the pinned set and holds every package (fails with a COPY line removed: checked)."""
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert "-c constraints.txt" in dockerfile and "openjdk-17" in dockerfile
    # Every package the project installs is copied into the image (the floors' move once left two out).
    packages = {path.parent.name for path in REPO_ROOT.glob("*/__init__.py")} - {"shopstream_assets_tests"}
    copied = set(re.findall(r"^COPY (\w+) \./\1$", dockerfile, re.MULTILINE))
    assert packages <= copied, f"the Dockerfile does not copy {sorted(packages - copied)}"


def test_only_the_two_uis_publish_ports_and_only_on_loopback() -> None:
    compose = _compose()
    published = {name for name, service in compose["services"].items() if service.get("ports")}
    assert published == {"dashboard", "dagster-webserver"}
    for name in published:
        for port in compose["services"][name]["ports"]:
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


def test_kafka_and_postgres_sit_on_an_internal_network_only() -> None:
    compose = _compose()
    networks = compose["networks"]
    for name in ("kafka", "postgres"):
        joined = compose["services"][name]["networks"]
        assert joined and all(networks[network].get("internal") is True for network in joined), (name, joined)
    for name, service in compose["services"].items():
        # A service on no named network would be on compose's default one, reachable from every container.
        assert service.get("networks"), f"{name} is on compose's default network"


def test_only_the_services_that_need_it_get_the_database_password() -> None:
    compose = _compose()
    for name in ("producer", "dashboard"):
        environment = compose["services"][name]["environment"]
        assert "POSTGRES_PASSWORD" not in environment, f"{name} gets the database's password"
    assert "SHOPSTREAM_READER_PASSWORD" in compose["services"]["dashboard"]["environment"]


def test_the_image_runs_as_a_user_other_than_root_through_the_entry_point() -> None:
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.MULTILINE)
    assert users and users[-1] not in ("root", "0"), users
    assert 'ENTRYPOINT ["python", "-m", "shopstream.container"]' in dockerfile

"""compose.yaml cannot run here (no Docker engine), so check what can be checked without one."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from shopstream import database
from shopstream.container import PASSWORD_VARIABLES, URL_PASSWORDS
from shopstream.database import DAGSTER_DATABASE_NAME, OWNER_ROLE
from shopstream.postgres_roles import DAGSTER_ROLE
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
    assert {
        "kafka",
        "postgres",
        "producer",
        "stream",
        "dagster-code-server",
        "dagster-webserver",
        "dagster-daemon",
        "dashboard",
    } <= set(services)
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
    for name, service in _compose()["services"].items():
        for variable in service.get("environment", {}) or {}:
            # Beside the settings: the passwords the image's entry point puts into their URLs (shopstream/container.py).
            if variable.startswith("SHOPSTREAM_") and variable not in PASSWORD_VARIABLES:
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
    for variable in ("POSTGRES", "OWNER", "READER", "DAGSTER"):
        assert re.search(rf"^SHOPSTREAM_{variable}_PASSWORD=$", example, re.MULTILINE), variable


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


# The credentials (password variables) each ShopStream service holds: only its own (docs/security.md).
OWNER, READER, DAGSTER = "SHOPSTREAM_OWNER_PASSWORD", "SHOPSTREAM_READER_PASSWORD", "SHOPSTREAM_DAGSTER_PASSWORD"
CREDENTIALS = {
    "setup": {"POSTGRES_PASSWORD", OWNER, READER, DAGSTER},  # creates the roles with them
    "producer": set(),
    "stream": {OWNER},
    "dagster-code-server": {DAGSTER, OWNER},  # its runs': Dagster's storage, and dbt's and the replay's
    # They load the code location from its server and never run it: Dagster's storage only.
    "dagster-webserver": {DAGSTER},
    "dagster-daemon": {DAGSTER},
    "dashboard": {READER},
}


def _environments() -> dict[str, dict[str, str]]:
    services = _compose()["services"]
    return {name: services[name].get("environment") or {} for name in CREDENTIALS}


def test_each_service_gets_only_its_own_credential() -> None:
    services = _compose()["services"]
    shopstream_services = {name for name, service in services.items() if service.get("image") == "shopstream:local"}
    assert shopstream_services == set(CREDENTIALS)
    for name, environment in _environments().items():
        held = {variable for variable in environment if "PASSWORD" in variable}
        assert held == CREDENTIALS[name], f"{name} holds {sorted(held)}"


def test_the_superuser_s_password_reaches_only_postgres_and_the_setup_service() -> None:
    services = _compose()["services"]
    superuser = services["postgres"]["environment"]["POSTGRES_USER"]
    password = services["postgres"]["environment"]["POSTGRES_PASSWORD"]
    for name, service in services.items():
        environment = service.get("environment") or {}
        holders = {variable for variable, value in environment.items() if value == password}
        assert holders == ({"POSTGRES_PASSWORD"} if name in ("postgres", "setup") else set()), name
        for variable, value in environment.items():
            if str(value).startswith("postgresql://"):
                is_admin = database.url_parts(value).user == superuser
                assert is_admin == (variable == "SHOPSTREAM_ADMIN_DATABASE_URL" and name == "setup"), (name, variable)


def test_each_url_names_its_duty_s_role_and_every_service_the_roles_setup_made() -> None:
    environments = _environments()
    setup = environments["setup"]
    assert setup["SHOPSTREAM_ADMIN_DATABASE_URL"]  # the setup service sets the roles up as the admin
    for name, environment in environments.items():
        for url_variable, password_variable in URL_PASSWORDS.items():
            if password_variable in environment:  # the entry point joins them: a password needs its URL
                assert url_variable in environment, f"{name}: {password_variable} without {url_variable}"
        if OWNER in environment:
            owner = environment["SHOPSTREAM_DATABASE_URL"]
            assert owner == setup["SHOPSTREAM_DATABASE_URL"] and database.url_parts(owner).user == OWNER_ROLE, name
        if DAGSTER in environment:
            dagster = environment["SHOPSTREAM_DAGSTER_DATABASE_URL"]
            parts = database.url_parts(dagster)
            assert dagster == setup["SHOPSTREAM_DAGSTER_DATABASE_URL"], name
            assert (parts.user, parts.database) == (DAGSTER_ROLE, DAGSTER_DATABASE_NAME), name


def test_the_image_runs_as_a_user_other_than_root_through_the_entry_point() -> None:
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.MULTILINE)
    assert users and users[-1] not in ("root", "0"), users
    assert 'ENTRYPOINT ["python", "-m", "shopstream.container"]' in dockerfile


def test_webserver_and_daemon_load_the_code_location_from_the_code_server_as_on_kubernetes() -> None:
    """The code location in its own `dagster api grpc` process, every run started there by Dagster's stock
    DefaultRunLauncher (SHOPSTREAM_FAST_RUNS=0), as runtime/test_code_server.py runs it against real servers."""
    services = _compose()["services"]
    code_server = services["dagster-code-server"]
    command = code_server["command"]
    assert command[:3] == ["shopstream", "dagster", "code-server"]
    port = command[command.index("--port") + 1]
    assert code_server["environment"]["SHOPSTREAM_FAST_RUNS"] == "0"
    # The Helm chart's readiness probe on the same port; nothing publishes it.
    assert code_server["healthcheck"]["test"] == ["CMD", "dagster", "api", "grpc-health-check", "--port", port]
    assert "ports" not in code_server and code_server["networks"] == ["backend"]
    for name in ("dagster-webserver", "dagster-daemon"):
        service = services[name]
        command = service["command"]
        assert command[:3] == ["shopstream", "dagster", name.removeprefix("dagster-")], name
        assert command[command.index("--code-server") + 1] == f"dagster-code-server:{port}", name
        assert service["environment"]["SHOPSTREAM_FAST_RUNS"] == "0", name
        assert service["depends_on"]["dagster-code-server"] == {"condition": "service_healthy"}, name
        # An explicit depends_on replaces the shared one: the servers and the setup are still awaited.
        assert {"setup", "kafka"} <= set(service["depends_on"]), name

"""The Dagster instance behind `shopstream up`: dagster.yaml, the dbt manifest, the two commands.

``dagster-webserver`` and ``dagster-daemon`` share one instance: ``dagster.yaml`` under
``SHOPSTREAM_HOME/dagster`` (DAGSTER_HOME) keeps runs, event logs and schedules in a
``dagster`` database on ShopStream's own PostgreSQL, so the UI, the daemon and every run
worker see the same history. The dbt manifest must exist before either process loads the
code location: ``DbtProject.prepare_if_dev()`` only acts under ``dagster dev``.

`shopstream up` runs each process as ``python -m shopstream_assets.runtime.dagster_instance
webserver|daemon``: that prepares the instance (idempotent, under a file lock, so the two
never run ``dbt parse`` at once) and then ``exec``s the Dagster command, which keeps the
process id and process group ``up`` stops. The daemon is dagster-daemon's own CLI run
through :func:`run_daemon`, which only shortens its sensor loop (on the fast run path, see
``run_path``; on the stock path it is dagster-daemon unchanged).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

from shopstream.database import DAGSTER_DATABASE_NAME, ssl_environment, ssl_parameters
from shopstream.embedded import Progress
from shopstream.services import Endpoints, endpoints
from shopstream.settings import Settings, SettingsError, load_settings
from shopstream_assets.runtime.run_path import run_path

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKSPACE_FILE = REPO_ROOT / "workspace.yaml"
DBT_PROJECT_DIR = REPO_ROOT / "dbt_project"
# The venv that runs us holds dagster-webserver, dagster-daemon and dbt.
VENV_BIN = Path(sys.executable).parent
# Variables dbt's profiles.yml reads (Endpoints.environment() derives them from the URL).
DBT_PROFILE_VARIABLES = (
    "SHOPSTREAM_DB_HOST",
    "SHOPSTREAM_DB_PORT",
    "SHOPSTREAM_DB_USER",
    "SHOPSTREAM_DB_PASSWORD",
    "SHOPSTREAM_DB_NAME",
)
# The first argument that makes ``python -m`` this module dagster-daemon (see run_daemon);
# it keeps "dagster-daemon" in the process's command line, where `ps` and `up` look for it.
DAEMON_ENTRY = "dagster-daemon"
FAST_SENSOR_LOOP_S = 1.0
# Files whose change makes the prepared manifest stale.
DBT_SOURCE_SUFFIXES = (".sql", ".yml", ".yaml", ".md", ".csv")
MANIFEST_STAMP = ".shopstream-manifest-fingerprint"
PREPARE_LOCK = ".shopstream-prepare.lock"
PARTIAL_PARSE_FILE = "partial_parse.msgpack"


class DagsterSetupError(RuntimeError):
    """The instance or the dbt manifest could not be prepared; the message says what to fix."""


def venv_executable(name: str) -> str:
    """``name`` from the running venv, else from PATH (a system-wide install)."""
    candidate = VENV_BIN / name
    return str(candidate) if candidate.exists() else name


FAST_RUN_LAUNCHER = """\
# Run workers forked from a warm process that has the code loaded, instead of a new Python
# process per run that imports it all again: see the module. (The fast run path: run_path.py.)
run_launcher:
  module: shopstream_assets.runtime.warm_run_launcher
  class: WarmRunLauncher

# Dagster's run queue, but the Bronze sensor's refreshes launch at once: see the module.
run_coordinator:
  module: shopstream_assets.runtime.immediate_run_coordinator
  class: ImmediateRunCoordinator
  config:
    # The daemon looks at the queue every second (default 5).
    dequeue_interval_seconds: 1
"""
STOCK_RUN_LAUNCHER = """\
# Dagster's stock launcher, a new Python process per run: SHOPSTREAM_FAST_RUNS=0, or the
# installed Dagster, dagster-dbt or dbt are not the tested ones (run_path.py says which).
run_launcher:
  module: dagster
  class: DefaultRunLauncher

# The daemon looks at the queue every second (default 5): each second is event-to-Gold latency.
run_queue:
  dequeue_interval_seconds: 1
"""


def instance_yaml(
    database_name: str = DAGSTER_DATABASE_NAME, *, fast: bool = True, ssl: Mapping[str, str] | None = None
) -> str:
    """dagster.yaml: PostgreSQL storage, the run launcher and queue, and the dbt pool limit.

    The connection comes from the SHOPSTREAM_DB_* variables at load time, so no password
    is written to disk and the instance always follows the current endpoints. ``fast``
    chooses the warm run launcher, else Dagster's stock one. ``ssl``: the storage URL's TLS
    parameters (``sslmode``, ``sslrootcert``...), written as they are: dagster-postgres reads
    its ``params`` literally, with no environment lookup, and they hold no secret.
    """
    params = "".join(f"\n        {name}: {json.dumps(value)}" for name, value in (ssl or {}).items())
    ssl_block = f"\n      # The URL's TLS parameters, as libpq names them.\n      params:{params}" if params else ""
    return f"""\
# Written by shopstream_assets/runtime/dagster_instance.py; edit that file instead.
storage:
  postgres:
    postgres_db:
      hostname: {{env: SHOPSTREAM_DB_HOST}}
      port: {{env: SHOPSTREAM_DB_PORT}}
      # Dagster's own role (shopstream.services.Endpoints), not the pipeline's owner.
      username: {{env: SHOPSTREAM_DAGSTER_DB_USER}}
      password: {{env: SHOPSTREAM_DAGSTER_DB_PASSWORD}}
      db_name: {database_name}
      # SQLAlchemy 2.1 reads plain postgresql:// as psycopg 3; dagster-postgres ships psycopg2.
      scheme: postgresql+psycopg2{ssl_block}

{FAST_RUN_LAUNCHER if fast else STOCK_RUN_LAUNCHER}
run_monitoring:
  # A run worker killed mid-run would stay STARTED, and the Bronze sensor would wait on it forever.
  enabled: true
  poll_interval_seconds: 30
  max_resume_run_attempts: 0
  # A cancelled run's worker notices within 2 s (default 10).
  cancellation_thread_poll_interval_seconds: 2

concurrency:
  pools:
    # Every pool (the dbt assets use pool "dbt") runs one op at a time: never two dbt runs at once.
    default_limit: 1

# A sensor ticking every few seconds writes tens of thousands of skipped ticks a day.
retention:
  sensor:
    purge_after_days:
      skipped: 1
      failure: 7
      success: 7

telemetry:
  enabled: false
"""


def write_instance_yaml(
    dagster_home: Path,
    database_name: str = DAGSTER_DATABASE_NAME,
    *,
    fast: bool | None = None,
    ssl: Mapping[str, str] | None = None,
) -> Path:
    """Write ``dagster_home/dagster.yaml`` atomically; return its path.

    ``fast`` chooses the run launcher; by default the run path of this process's settings
    and installed packages (:func:`run_path`). ``ssl``: see :func:`instance_yaml`.
    """
    dagster_home.mkdir(parents=True, exist_ok=True)
    path = dagster_home / "dagster.yaml"
    content = instance_yaml(database_name, fast=run_path().fast if fast is None else fast, ssl=ssl)
    if path.exists() and path.read_text() == content:
        return path
    temporary = path.with_suffix(f".tmp{os.getpid()}")
    temporary.write_text(content)
    temporary.replace(path)
    return path


def dbt_profile_environment(found: Endpoints) -> dict[str, str]:
    """The SHOPSTREAM_DB_* variables dbt's profile reads, from the endpoints' URL (its TLS
    parameters included: :func:`shopstream.database.ssl_environment`)."""
    environment = found.environment()
    return {**{name: environment[name] for name in DBT_PROFILE_VARIABLES}, **ssl_environment(found.database_url)}


def _manifest_fingerprint(environment: Mapping[str, str]) -> str:
    """Changes when a dbt source file, dbt's version or the target database changes.

    The database is part of it because dbt keys partial parsing on the profile: a manifest
    parsed for another database makes every run parse the whole project again.
    """
    digest = hashlib.sha256()
    for path in sorted(DBT_PROJECT_DIR.rglob("*")):
        relative = path.relative_to(DBT_PROJECT_DIR)
        if relative.parts[0] in ("target", "logs", "dbt_packages") or path.suffix not in DBT_SOURCE_SUFFIXES:
            continue
        digest.update(str(relative).encode())
        digest.update(path.read_bytes())
    for name in (
        "SHOPSTREAM_DB_HOST",
        "SHOPSTREAM_DB_PORT",
        "SHOPSTREAM_DB_USER",
        "SHOPSTREAM_DB_NAME",
        "SHOPSTREAM_DB_SSLMODE",
        "SHOPSTREAM_DB_SSLROOTCERT",
    ):
        digest.update(f"{name}={environment.get(name, '')}".encode())
    for package in ("dbt-core", "dbt-postgres"):
        digest.update(f"{package}={metadata.version(package)}".encode())
    return digest.hexdigest()


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def dbt_target_dir(settings: Settings) -> Path:
    """Where `shopstream up` keeps the dbt manifest and partial-parse state: under SHOPSTREAM_HOME."""
    return settings.home.resolve() / "dbt-target"


def default_dbt_target_dir() -> Path:
    """The target folder of a process started without DBT_TARGET_PATH (dbt's default)."""
    return DBT_PROJECT_DIR / (os.environ.get("DBT_TARGET_PATH") or "target")


def prepare_dbt_manifest(environment: Mapping[str, str], target: Path, progress: Progress = print) -> Path:
    """``dbt parse`` into ``target`` unless the manifest there is current.

    ``environment`` must hold the SHOPSTREAM_DB_* variables (parse reads the profile but
    does not connect). Runs hold a copy of the ``partial_parse.msgpack`` written here, so
    a current one also saves every dbt run a full parse.
    """
    missing = [name for name in DBT_PROFILE_VARIABLES if not environment.get(name)]
    if missing:
        raise DagsterSetupError(f"dbt's profile needs {', '.join(missing)}; run through `shopstream up`")
    manifest = target / "manifest.json"
    stamp = target / MANIFEST_STAMP
    with _file_lock(target / PREPARE_LOCK):
        fingerprint = _manifest_fingerprint(environment)
        if manifest.exists() and stamp.exists() and stamp.read_text() == fingerprint:
            return manifest
        progress("preparing the dbt manifest (dbt parse) ...")
        began = time.monotonic()
        parsed = subprocess.run(
            [
                venv_executable("dbt"),
                "parse",
                "--quiet",
                "--project-dir",
                str(DBT_PROJECT_DIR),
                "--profiles-dir",
                str(DBT_PROJECT_DIR),
                "--target-path",
                str(target),
            ],
            env={**os.environ, **environment, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"},
            cwd=DBT_PROJECT_DIR,
            capture_output=True,
            text=True,
            check=False,
        )
        if parsed.returncode != 0 or not manifest.exists():
            raise DagsterSetupError(
                f"`dbt parse` failed in {DBT_PROJECT_DIR} (exit {parsed.returncode}):\n"
                + (parsed.stdout + parsed.stderr).strip()[-3000:]
            )
        stamp.write_text(fingerprint)
        progress(f"dbt manifest ready in {time.monotonic() - began:.1f} s: {manifest}")
    return manifest


def current_parsed_project(target: Path, environment: Mapping[str, str]) -> bytes | None:
    """The parsed project (dbt's ``partial_parse.msgpack``) that :func:`prepare_dbt_manifest`
    wrote into ``target``, or None when it no longer describes the project's files, dbt's
    version or the database in ``environment``."""
    with _file_lock(target / PREPARE_LOCK):
        stamp = target / MANIFEST_STAMP
        if not stamp.exists() or stamp.read_text() != _manifest_fingerprint(environment):
            return None
        try:
            return (target / PARTIAL_PARSE_FILE).read_bytes()
        except FileNotFoundError:
            return None


def dagster_environment(settings: Settings, found: Endpoints, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of the webserver, the daemon and (inherited) every run worker."""
    base = os.environ if base is None else base
    return {
        **base,
        **found.environment(),
        **ssl_environment(found.database_url),
        "SHOPSTREAM_HOME": str(settings.home),
        # The daemon refuses a relative DAGSTER_HOME; the webserver silently uses a temporary one.
        "DAGSTER_HOME": str(settings.dagster_home.resolve()),
        # The manifest prepare_instance parsed for this database (read by defs/dbt/project.py).
        "DBT_TARGET_PATH": str(dbt_target_dir(settings)),
        # Run workers start dbt by name from PATH unless told otherwise: the venv comes first.
        "PATH": os.pathsep.join([str(VENV_BIN), base.get("PATH", os.defpath)]),
    }


def webserver_url(settings: Settings) -> str:
    return f"http://{settings.bind_address}:{settings.dagster_port}"


def webserver_command(settings: Settings) -> list[str]:
    return [
        venv_executable("dagster-webserver"),
        "-h",
        settings.bind_address,
        "-p",
        str(settings.dagster_port),
        "-w",
        str(WORKSPACE_FILE),
    ]


def daemon_command() -> list[str]:
    """``dagster-daemon run`` through :func:`run_daemon` (the same CLI, a shorter sensor loop)."""
    return [
        sys.executable,
        "-m",
        "shopstream_assets.runtime.dagster_instance",
        DAEMON_ENTRY,
        "run",
        "-w",
        str(WORKSPACE_FILE),
    ]


def sensor_loop_seconds(sensor_interval_seconds: int, dagster_loop_seconds: float) -> float:
    """How often the daemon should look at its sensors for the Bronze sensor to keep its interval."""
    if sensor_interval_seconds >= dagster_loop_seconds:
        return dagster_loop_seconds
    return FAST_SENSOR_LOOP_S


def run_daemon(argv: list[str]) -> None:
    """``dagster-daemon <argv>`` in this process, its sensor loop no longer than the sensor interval.

    dagster-daemon evaluates sensors in a loop with a floor of several seconds (a module
    constant with no setting), so a SHOPSTREAM_SENSOR_INTERVAL below it had no effect: a new
    Bronze batch waited for the loop before a dbt run was even requested. On the fast run path
    we shorten that loop to FAST_SENSOR_LOOP_S; an idle loop costs a few queries. The constant
    is private (dagster_private): on the stock path this is plain dagster-daemon.
    """
    path = run_path()
    print(f"dagster-daemon: {path.message}", file=sys.stderr, flush=True)
    sys.argv = ["dagster-daemon", *argv]
    if not path.fast:
        os.execvp(venv_executable("dagster-daemon"), sys.argv)
    from shopstream_assets.runtime.dagster_private import daemon_cli_main, sensor_loop_floor, set_sensor_loop

    try:
        interval = load_settings().sensor_interval_seconds
    except SettingsError:
        interval = None
    if interval is not None:
        set_sensor_loop(sensor_loop_seconds(interval, sensor_loop_floor()))
    sys.exit(daemon_cli_main())


def prepare_instance(settings: Settings, found: Endpoints, progress: Progress = print) -> Path:
    """dagster.yaml under DAGSTER_HOME and a current dbt manifest; returns DAGSTER_HOME."""
    dagster_home = settings.dagster_home.resolve()
    write_instance_yaml(dagster_home, ssl=ssl_parameters(found.dagster_database_url or found.database_url))
    prepare_dbt_manifest(dbt_profile_environment(found), dbt_target_dir(settings), progress=progress)
    return dagster_home


def main(argv: list[str] | None = None) -> None:
    """``python -m shopstream_assets.runtime.dagster_instance webserver|daemon``."""
    argv = sys.argv[1:] if argv is None else argv
    if argv not in (["webserver"], ["daemon"]):
        sys.exit("usage: python -m shopstream_assets.runtime.dagster_instance webserver|daemon")

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    try:
        settings = load_settings()
        found = endpoints(settings)
        prepare_instance(settings, found, progress=progress)
    except (SettingsError, DagsterSetupError, RuntimeError) as error:
        sys.exit(f"error: {error}")
    command = webserver_command(settings) if argv == ["webserver"] else daemon_command()
    if argv == ["webserver"]:
        progress(f"Dagster UI: {webserver_url(settings)}")
    os.chdir(REPO_ROOT)
    os.execvpe(command[0], command, dagster_environment(settings, found))


if __name__ == "__main__":
    if sys.argv[1:2] == [DAEMON_ENTRY]:
        run_daemon(sys.argv[2:])
    else:
        main()

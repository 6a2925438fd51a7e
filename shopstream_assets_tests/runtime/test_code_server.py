"""Dagster as a Kubernetes deployment runs it: the code location in its own `dagster api grpc` process,
the webserver and the daemon loading it over gRPC, Dagster's stock DefaultRunLauncher (the stock run
path, SHOPSTREAM_FAST_RUNS=0) asking that server for every run.

One daemon serves both runs: an on-demand materialization of the Bronze replay asset (dagster-pyspark),
launched through the webserver's GraphQL API as the UI's button does, lands the topic's events in
Bronze; the Bronze sensor then launches a dbt refresh that brings Gold up to them. Both runs are
processes the code server started (their gRPC origin is its port), and once the sensor has folded in
every batch, Silver and Gold equal a full refresh and the pandas reference."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml

from shopstream import database
from shopstream.embedded import free_port
from shopstream.settings import Settings, load_settings
from shopstream_assets.defs.dbt.project import DBT_TIMING_TAG_PREFIX
from shopstream_assets.defs.streaming.assets import BRONZE_KEY
from shopstream_assets.runtime.code_server import (
    CODE_SERVER_WAIT_S,
    LOCATION_NAME,
    CodeServerAddress,
    CodeServerError,
    code_server_command,
    code_server_listens,
    on_workspace,
    write_grpc_workspace,
)
from shopstream_assets.runtime.dagster_instance import (
    WORKSPACE_FILE,
    daemon_command,
    dbt_target_dir,
    webserver_command,
    webserver_url,
    write_instance_yaml,
)
from shopstream_assets.runtime.warm_run_launcher import PID_TAG
from shopstream_assets_tests.conftest import make_test_home, produce_events
from shopstream_assets_tests.dbt.reference_checks import assert_silver_and_gold_match
from shopstream_assets_tests.defs.dagster_processes import (
    LOCATIONS,
    LOOP_TIMEOUT_S,
    STAGING,
    caught_up,
    graphql,
    launch_to_success_s,
    materialize_through_the_ui,
    prepared_dagster_environment,
    sensor_runs,
    wait,
    wait_for_gold_after_a_successful_run,
)
from shopstream_assets_tests.waiting import wait_until
from shopstream_cli.stack import SHOPSTREAM

# The tag DefaultRunLauncher writes on a run it asked a code server to start (dagster/_core/storage/tags.py).
GRPC_INFO_TAG = ".dagster/grpc_info"
EVENTS = 500


def _served_by(run: dg.DagsterRun) -> int | None:
    """The port of the code server that started ``run``."""
    info = run.tags.get(GRPC_INFO_TAG)
    return json.loads(info).get("port") if info else None


def _location_loaded(url: str) -> bool:
    try:
        entries = graphql(url, LOCATIONS)["workspaceOrError"].get("locationEntries", [])
    except OSError:  # the webserver is still starting (URLError, a reset connection)
        return False
    return any(entry["name"] == LOCATION_NAME and entry["loadStatus"] == "LOADED" for entry in entries)


@pytest.mark.slow
def test_code_server_serves_an_on_demand_replay_and_the_sensor_refresh(
    process_env: Settings,
    shopstream_env: dict[str, str],
    database_url: str,
    kafka_bootstrap: str,
    dagster_instance: dg.DagsterInstance,
    tmp_path: Path,
    spawn_process: Callable[..., Any],
) -> None:
    env = prepared_dagster_environment(
        process_env,
        shopstream_env,
        database_url,
        kafka_bootstrap,
        SHOPSTREAM_FAST_RUNS="0",
        SHOPSTREAM_DAGSTER_PORT=str(free_port()),
    )
    settings = load_settings(env)
    instance_file = write_instance_yaml(process_env.dagster_home, database.url_parts(database_url).database, fast=False)
    assert "class: DefaultRunLauncher" in instance_file.read_text()
    code_server = CodeServerAddress("127.0.0.1", free_port())
    workspace = write_grpc_workspace(process_env.dagster_home, code_server)
    logs = tmp_path / "logs"

    # `shopstream dagster code-server` as compose runs it, in a SHOPSTREAM_HOME of its own as in its own
    # container; the dbt manifest the test prepared is current there, so it parses nothing again.
    server_home = make_test_home(tmp_path / "code-server-home")
    dbt_target_dir(load_settings({"SHOPSTREAM_HOME": str(server_home)})).symlink_to(dbt_target_dir(process_env))
    server = spawn_process(
        [*SHOPSTREAM, "dagster", "code-server", "--host", code_server.host, "--port", str(code_server.port)],
        env={**env, "SHOPSTREAM_HOME": str(server_home)},
        name="code-server",
    )
    produce_events(kafka_bootstrap, process_env.topic, EVENTS)  # while the code server loads
    # As a deployment's readiness probe: webserver and daemon start once the code server serves.
    wait_until(
        lambda: code_server_listens(code_server),
        what="the code server to listen",
        timeout=CODE_SERVER_WAIT_S,
        interval=0.5,
        alive=server,
        details=lambda: (logs / "code-server.log").read_text()[-3000:],
    )
    spawn_process(on_workspace(daemon_command(), workspace), env=env, name="dagster-daemon")
    spawn_process(on_workspace(webserver_command(settings), workspace), env=env, name="dagster-webserver")

    # The UI's "Materialize" on bronze/clickstream_events, once the webserver has the location from the server.
    url = webserver_url(settings)
    wait("the webserver to load the code location from the code server", lambda: _location_loaded(url), 120, logs)
    replay_id, status = materialize_through_the_ui(url, LOCATION_NAME, BRONZE_KEY, LOOP_TIMEOUT_S, logs)
    assert status == "SUCCESS"
    replay = dagster_instance.get_run_by_id(replay_id)
    assert replay is not None and replay.asset_selection == {BRONZE_KEY}
    (replayed,) = dagster_instance.get_records_for_run(
        replay_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
    ).records
    materialization = replayed.event_log_entry.asset_materialization
    assert materialization is not None and materialization.asset_key == BRONZE_KEY
    counts = materialization.metadata
    assert counts["source"].value == "replay"
    assert counts["rows_written"].value + counts["rejects"].value + counts["duplicates"].value == EVENTS

    # The replay's batches reach the sensor, whose dbt run brings Gold up to them.
    gold = wait_for_gold_after_a_successful_run(
        "a successful sensor-launched dbt run on the replayed batches and Gold rows",
        dagster_instance,
        database_url,
        logs,
    )
    assert gold > 0
    wait("the sensor's runs to fold in every Bronze batch", lambda: caught_up(dagster_instance, database_url),
          LOOP_TIMEOUT_S, logs)  # fmt: skip
    assert_silver_and_gold_match(database_url, tmp_path)

    # Every run was started by the code server (DefaultRunLauncher over gRPC), none by a warm worker,
    # and dbt ran as its own process (no in-process timings).
    succeeded = [
        record for record in sensor_runs(dagster_instance) if record.dagster_run.status == dg.DagsterRunStatus.SUCCESS
    ]
    print(
        "code server, stock run path, launch -> SUCCESS s:",
        [round(launch_to_success_s(dagster_instance, record), 1) for record in succeeded],
    )
    assert succeeded
    for run in [replay, *(record.dagster_run for record in succeeded)]:
        assert _served_by(run) == code_server.port, run.tags
        assert PID_TAG not in run.tags
    for record in succeeded:
        assert not any(name.startswith(DBT_TIMING_TAG_PREFIX) for name in record.dagster_run.tags)
        assert not record.dagster_run.asset_check_selection
    assert "as SHOPSTREAM_FAST_RUNS=0 asks" in (logs / "dagster-daemon.log").read_text()
    staged = dagster_instance.get_latest_materialization_event(STAGING)
    assert staged is not None and staged.asset_materialization.metadata["rows_affected"].value > 0


def test_the_grpc_workspace_names_the_code_server_under_the_in_process_location_s_name(tmp_path: Path) -> None:
    written = write_grpc_workspace(tmp_path, CodeServerAddress.parse("dagster-code-server:3030"))
    (entry,) = yaml.safe_load(written.read_text())["load_from"]
    assert entry == {"grpc_server": {"host": "dagster-code-server", "port": 3030, "location_name": LOCATION_NAME}}
    # Runs, schedules and sensor history keep their location's name whichever way the code is loaded.
    (in_process,) = yaml.safe_load(WORKSPACE_FILE.read_text())["load_from"]
    assert in_process["python_module"]["location_name"] == LOCATION_NAME


def test_the_webserver_and_the_daemon_load_the_given_workspace(tmp_path: Path) -> None:
    workspace = tmp_path / "workspace-grpc.yaml"
    settings = load_settings({"SHOPSTREAM_HOME": str(tmp_path)})
    for command in (webserver_command(settings), daemon_command()):
        replaced = on_workspace(command, workspace)
        assert replaced[replaced.index("-w") + 1] == str(workspace) and str(WORKSPACE_FILE) not in replaced
        assert len(replaced) == len(command)


def test_the_code_server_serves_the_definitions_module_where_asked() -> None:
    command = code_server_command("0.0.0.0", 3030)
    assert command[1:3] == ["api", "grpc"]
    for flag, value in (("--module-name", "shopstream_assets.definitions"), ("--host", "0.0.0.0"), ("--port", "3030")):
        assert command[command.index(flag) + 1] == value
    assert not code_server_listens(CodeServerAddress("127.0.0.1", free_port()))


@pytest.mark.parametrize("text", ["dagster-code-server", "host:0", "host:70000", "http://host:3030", ":3030"])
def test_a_code_server_address_is_host_colon_port(text: str) -> None:
    with pytest.raises(CodeServerError, match="HOST:PORT"):
        CodeServerAddress.parse(text)

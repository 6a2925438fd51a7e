"""The code location loads, and the graph is topic -> Bronze -> Silver -> Gold -> dashboard."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

from shopstream_assets.defs.streaming.sensors import SENSOR_NAME, sensor_minimum_interval
from shopstream_assets.lib.settings import load_settings

TOPIC = dg.AssetKey(["kafka", "ecommerce_clickstream"])
BRONZE = dg.AssetKey(["bronze", "clickstream_events"])
DASHBOARD = dg.AssetKey(["dashboard", "shopstream"])
DBT_MODELS = Path(__file__).resolve().parents[2] / "dbt_project" / "models"
# One name per thing: a model file's name is its relation's and its asset key's.
SILVER = {
    dg.AssetKey(["silver", path.stem])
    for folder in ("staging", "intermediate")
    for path in (DBT_MODELS / folder).glob("*.sql")
}
GOLD = {dg.AssetKey(["gold", path.stem]) for path in (DBT_MODELS / "marts").glob("*.sql")}


def _ancestors(graph: dg.AssetGraph, key: dg.AssetKey) -> set[dg.AssetKey]:
    seen: set[dg.AssetKey] = set()
    frontier = [key]
    while frontier:
        for parent in graph.get(frontier.pop()).parent_keys:
            if parent not in seen:
                seen.add(parent)
                frontier.append(parent)
    return seen


def test_definitions_load_with_the_expected_graph(defs: dg.Definitions) -> None:
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()

    assert graph.get_all_asset_keys() == {TOPIC, BRONZE, DASHBOARD, *SILVER, *GOLD}
    assert graph.get(BRONZE).parent_keys == {TOPIC}
    assert graph.get(dg.AssetKey(["silver", "stg_clickstream_events"])).parent_keys == {BRONZE}
    for model in SILVER | GOLD:
        assert BRONZE in _ancestors(graph, model), (
            f"{model.to_user_string()} is not downstream of Bronze"
        )
        assert graph.get(model).group_name == model.path[0]
    assert _ancestors(graph, DASHBOARD) >= SILVER | GOLD
    # The topic and the dashboard are in the lineage but nothing Dagster can materialize.
    assert not graph.get(TOPIC).is_materializable and not graph.get(DASHBOARD).is_materializable
    assert graph.get(BRONZE).is_materializable


def test_dbt_assets_carry_pool_checks_freshness_and_descriptions(defs: dg.Definitions) -> None:
    from shopstream_assets.defs.dbt.assets import DBT_OP_NAME  # needs the manifest `defs` prepared

    graph = defs.resolve_asset_graph()
    dbt_assets_def = graph.get(dg.AssetKey(["gold", "mart_daily_metrics"])).assets_def
    assert dbt_assets_def.op.name == DBT_OP_NAME
    assert dbt_assets_def.op.pool == "dbt"
    for model in GOLD:
        assert isinstance(graph.get(model).freshness_policy, dg.FreshnessPolicy), model
    for model in SILVER:
        assert graph.get(model).freshness_policy is None
    check_keys_by_asset: dict[dg.AssetKey, set[str]] = {}
    for check_key in graph.asset_check_keys:
        check_keys_by_asset.setdefault(check_key.asset_key, set()).add(check_key.name)
    assert {"row_count", "reject_rate", "consumer_lag"} <= check_keys_by_asset[BRONZE]
    assert any(
        name.startswith("unique_stg_clickstream_events_event_id")
        for name in check_keys_by_asset[dg.AssetKey(["silver", "stg_clickstream_events"])]
    )
    for key in graph.get_all_asset_keys():
        assert graph.get(key).description, (
            f"{key.to_user_string()} has no description (the UI's text)"
        )


def test_sensor_and_schedules_defaults(defs: dg.Definitions) -> None:
    from shopstream_assets.defs.dbt.assets import DBT_OP_NAME  # needs the manifest `defs` prepared

    sensor = defs.resolve_sensor_def(SENSOR_NAME)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert sensor.minimum_interval_seconds == sensor_minimum_interval(
        load_settings().sensor_interval_seconds
    )
    assert sensor_minimum_interval(5) == 4 and sensor_minimum_interval(1) == 1
    rebuild = defs.resolve_schedule_def("gold_full_rebuild")
    assert rebuild.default_status == dg.DefaultScheduleStatus.STOPPED
    (request,) = rebuild.evaluate_tick(dg.build_schedule_context()).run_requests
    assert request.run_config["ops"] == {DBT_OP_NAME: {"config": {"full_refresh": True}}}
    # Bronze's cheap checks often; the dbt tests, which hold the dbt pool, hourly.
    assert defs.resolve_schedule_def("bronze_checks_every_10_minutes").cron_schedule == "*/10 * * * *"
    assert defs.resolve_schedule_def("dbt_tests_hourly").cron_schedule == "17 * * * *"
    graph = defs.resolve_asset_graph()
    bronze_checks = defs.resolve_job_def("bronze_quality_checks").asset_layer.asset_graph
    dbt_tests = defs.resolve_job_def("data_quality_checks").asset_layer.asset_graph
    assert bronze_checks.asset_check_keys and all(
        key.asset_key == dg.AssetKey(["bronze", "clickstream_events"])
        for key in bronze_checks.asset_check_keys
    )
    assert dbt_tests.asset_check_keys == graph.asset_check_keys - bronze_checks.asset_check_keys


def test_dbt_timings_read_from_dbt_json_log(defs: dg.Definitions, tmp_path: Path) -> None:
    from shopstream_assets.defs.dbt.assets import read_dbt_timings  # needs the manifest

    def line(name: str, ts: str, **data: object) -> str:
        return json.dumps({"data": data, "info": {"name": name, "ts": f"2026-11-25T12:00:{ts}Z"}})

    earlier_invocation = line("MainReportVersion", "00.000000")
    log = tmp_path / "dbt.log"
    log.write_text(
        "\n".join(
            [
                earlier_invocation,
                line("MainReportVersion", "03.000000"),
                line("PartialParsingEnabled", "04.000000"),
                line("FoundStats", "04.500000"),
                line("LogModelResult", "05.000000", execution_time=0.4, node_info={"node_name": "a"}),
                line("LogModelResult", "06.000000", execution_time=1.2, node_info={"node_name": "b"}),
                line("CommandCompleted", "06.500000"),
            ]
        )
        + "\n"
    )
    invoked_at = datetime(2026, 11, 25, 12, 0, 1, tzinfo=UTC).timestamp()
    timings = read_dbt_timings(log, len(earlier_invocation) + 1, invoked_at)
    assert timings is not None and timings.partial_parse
    assert (timings.startup_s, timings.parse_s, timings.models_s) == (2.0, 1.5, 2.0)
    assert timings.slowest_models == [("b", 1.2), ("a", 0.4)]
    assert read_dbt_timings(tmp_path / "missing.log", 0, invoked_at) is None

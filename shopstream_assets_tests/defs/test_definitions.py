"""The code location loads, and the graph is topic -> Bronze -> Silver -> Gold -> dashboard."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from shopstream.settings import load_settings
from shopstream_assets.defs.streaming.sensors import SENSOR_NAME, sensor_minimum_interval

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
    # The Overview's intraday grain (issue 33): one name for the key, the relation and the file.
    hourly = {dg.AssetKey(["gold", f"mart_hourly_segment_{part}"]) for part in ("metrics", "sessions")}
    assert hourly <= GOLD
    assert graph.get(BRONZE).parent_keys == {TOPIC}
    assert graph.get(dg.AssetKey(["silver", "stg_clickstream_events"])).parent_keys == {BRONZE}
    for model in SILVER | GOLD:
        assert BRONZE in _ancestors(graph, model), f"{model.to_user_string()} is not downstream of Bronze"
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
        assert graph.get(key).description, f"{key.to_user_string()} has no description (the UI's text)"


def test_sensor_and_schedules_defaults(defs: dg.Definitions) -> None:
    from shopstream_assets.defs.dbt.assets import DBT_OP_NAME  # needs the manifest `defs` prepared

    sensor = defs.resolve_sensor_def(SENSOR_NAME)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert sensor.minimum_interval_seconds == sensor_minimum_interval(load_settings().sensor_interval_seconds)
    assert sensor_minimum_interval(5) == 4 and sensor_minimum_interval(1) == 1
    rebuild = defs.resolve_schedule_def("gold_full_rebuild")
    assert rebuild.default_status == dg.DefaultScheduleStatus.STOPPED
    (request,) = rebuild.evaluate_tick(dg.build_schedule_context()).run_requests
    assert request.run_config["ops"] == {DBT_OP_NAME: {"config": {"full_refresh": True}}}
    # Bronze's cheap checks often; the dbt tests, which hold the dbt pool, hourly on Gold and
    # daily on everything (the Silver tests read all of history).
    assert defs.resolve_schedule_def("bronze_checks_every_10_minutes").cron_schedule == "*/10 * * * *"
    assert defs.resolve_schedule_def("dbt_tests_hourly").cron_schedule == "17 0-2,4-23 * * *"
    assert defs.resolve_schedule_def("dbt_tests_daily").cron_schedule == "17 3 * * *"
    assert defs.resolve_schedule_def("dbt_tests_daily").default_status == dg.DefaultScheduleStatus.RUNNING
    graph = defs.resolve_asset_graph()
    bronze_checks = defs.resolve_job_def("bronze_quality_checks").asset_layer.asset_graph
    hourly_tests = defs.resolve_job_def("data_quality_checks").asset_layer.asset_graph.asset_check_keys
    daily_tests = defs.resolve_job_def("data_quality_checks_full").asset_layer.asset_graph.asset_check_keys
    assert bronze_checks.asset_check_keys and all(
        key.asset_key == dg.AssetKey(["bronze", "clickstream_events"]) for key in bronze_checks.asset_check_keys
    )
    assert daily_tests == graph.asset_check_keys - bronze_checks.asset_check_keys
    assert all(key.asset_key.path[0] == "gold" for key in hourly_tests)
    assert {key for key in daily_tests if key.asset_key.path[0] == "gold"} == hourly_tests


def test_dbt_timings_from_its_events() -> None:
    from shopstream_assets.runtime.dbt_in_process import dbt_timings

    def event(name: str, at: float, **data: object) -> dict[str, object]:
        return {"info": {"name": name}, "data": data, "received_at": at}

    events = [
        event("MainReportVersion", 3.0),
        event("FoundStats", 4.5),
        event("LogModelResult", 5.0, execution_time=0.4, node_info={"node_name": "a"}),
        event("LogModelResult", 6.0, execution_time=1.2, node_info={"node_name": "b"}),
    ]
    timings = dbt_timings(events, invoked_at=1.0, first_event_at=3.0, last_event_at=6.5, manifest_reused=True)
    assert timings is not None and timings.manifest_reused
    assert (timings.startup_s, timings.parse_s, timings.models_s) == (2.0, 1.5, 2.0)
    assert timings.slowest_models == [("b", 1.2), ("a", 0.4)]
    assert timings.tags("p/")["p/manifest_reused"] == "true"
    # dbt stopped before it had a manifest (a broken profile, say): nothing to time.
    assert dbt_timings(events[:1], invoked_at=1.0, first_event_at=3.0, last_event_at=3.0, manifest_reused=False) is None

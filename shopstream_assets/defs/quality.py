"""Every asset check on a clock: Bronze's checks often, Gold's dbt tests hourly, all of them daily.

Neither the stream nor the Bronze sensor's dbt runs execute them (the sensor's runs are
models only, for freshness). Three jobs, because they cost the refresh loop very differently:

* Bronze's row-count, reject-rate and consumer-lag checks are a few queries and a broker
  call, take no pool, and run every 10 minutes: a stalled stream shows within minutes.
* The dbt tests run inside the dbt op, so they take the ``dbt`` pool (limit 1) like any dbt
  run and never overlap a refresh -- and for as long as the tests take, Gold does not
  refresh. Every 10 minutes that put a Gold freshness spike into every benchmark window;
  hourly keeps the spike rare. The sensor's refresh
  queues behind it and then covers the whole backlog in one run.
* The tests on Silver (dbt tag ``full_scan``: every event, every session) read all of
  history, so an hourly run of them would hold the slot longer each day. Hourly runs the
  rest (Gold, whose size follows days, products and users, not events); the Silver tests
  run once a day, with every other test, at an hour of their own.
"""

import dagster as dg
from dagster_dbt import build_dbt_asset_selection

from shopstream_assets.defs.dbt.assets import shopstream_dbt_models
from shopstream_assets.defs.streaming.assets import BRONZE_KEY

# dbt_project.yml tags the staging and intermediate tests.
FULL_SCAN_TAG = "full_scan"

bronze_checks = dg.AssetSelection.checks_for_assets(BRONZE_KEY)

bronze_quality_job = dg.define_asset_job(
    name="bronze_quality_checks",
    selection=bronze_checks,
    description="Bronze's row-count, reject-rate and consumer-lag checks, without materializing.",
)

dbt_checks = dg.AssetSelection.all_asset_checks() - bronze_checks
full_scan_checks = build_dbt_asset_selection([shopstream_dbt_models], dbt_select=f"tag:{FULL_SCAN_TAG}")

data_quality_job = dg.define_asset_job(
    name="data_quality_checks",
    selection=dbt_checks - full_scan_checks,
    description="The dbt tests whose cost does not grow with events (Gold's), as asset checks, without materializing.",
)

full_data_quality_job = dg.define_asset_job(
    name="data_quality_checks_full",
    selection=dbt_checks,
    description="Every dbt test on Silver and Gold as asset checks, the full-history scans included.",
)

bronze_quality_schedule = dg.ScheduleDefinition(
    name="bronze_checks_every_10_minutes",
    job=bronze_quality_job,
    cron_schedule="*/10 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)

data_quality_schedule = dg.ScheduleDefinition(
    name="dbt_tests_hourly",
    job=data_quality_job,
    # Off the hour: the daily full rebuild runs at 02:30; not at 03:17, when every test runs.
    cron_schedule="17 0-2,4-23 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)

full_data_quality_schedule = dg.ScheduleDefinition(
    name="dbt_tests_daily",
    job=full_data_quality_job,
    cron_schedule="17 3 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)

"""Every asset check on a clock: Bronze's checks often, the dbt tests hourly.

Neither the stream nor the Bronze sensor's dbt runs execute them (the sensor's runs are
models only, for freshness). Two jobs, because they cost the refresh loop very differently:

* Bronze's row-count, reject-rate and consumer-lag checks are a few queries and a broker
  call, take no pool, and run every 10 minutes: a stalled stream shows within minutes.
* The dbt tests run inside the dbt op, so they take the ``dbt`` pool (limit 1) like any dbt
  run and never overlap a refresh -- and for as long as the tests take, Gold does not
  refresh. Every 10 minutes that put a Gold freshness spike into every benchmark window;
  hourly keeps the spike rare. The sensor's refresh
  queues behind it and then covers the whole backlog in one run.
"""

import dagster as dg

from shopstream_assets.defs.streaming.assets import BRONZE_KEY

bronze_checks = dg.AssetSelection.checks_for_assets(BRONZE_KEY)

bronze_quality_job = dg.define_asset_job(
    name="bronze_quality_checks",
    selection=bronze_checks,
    description="Bronze's row-count, reject-rate and consumer-lag checks, without materializing.",
)

data_quality_job = dg.define_asset_job(
    name="data_quality_checks",
    selection=dg.AssetSelection.all_asset_checks() - bronze_checks,
    description="Every dbt test on Silver and Gold as asset checks, without materializing.",
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
    # Off the hour: the daily full rebuild runs at 02:30.
    cron_schedule="17 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)

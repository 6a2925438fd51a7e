"""Every asset check on a clock: Bronze's checks and the dbt tests.

Neither the stream nor the Bronze sensor's dbt runs execute them (the sensor's runs are
models only, for freshness), so this job does, every 10 minutes. The dbt tests take the
``dbt`` pool like any dbt run, so they never overlap a refresh.
"""

import dagster as dg

data_quality_job = dg.define_asset_job(
    name="data_quality_checks",
    selection=dg.AssetSelection.all_asset_checks(),
    description="Bronze's row-count, reject-rate and consumer-lag checks and every dbt test, without materializing.",
)

data_quality_schedule = dg.ScheduleDefinition(
    name="data_quality_every_10_minutes",
    job=data_quality_job,
    cron_schedule="*/10 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)

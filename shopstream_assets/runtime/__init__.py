"""What dagster.yaml loads: the instance configuration, the warm run launcher and dbt in process."""

"""What dagster.yaml loads: the instance configuration, the warm run launcher and dbt in process;
which of them runs (``run_path``), and the fences around every private Dagster, dagster-dbt and dbt
name they use (``*_private``)."""

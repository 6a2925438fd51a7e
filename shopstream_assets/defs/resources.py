"""Resources every ShopStream definition shares, resolved from the SHOPSTREAM_* settings.

Endpoints are looked up when a run or a sensor tick uses them, not when the code location
loads: the UI opens (and shows the graph) even while PostgreSQL or Kafka is down.
"""

import os
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
import psycopg
from dagster_dbt import DbtCliResource
from dagster_pyspark import LazyPySparkResource

from shopstream import database
from shopstream.kafka_clients import client_config
from shopstream.services import Endpoints, endpoints
from shopstream.settings import KafkaSecurity, Settings, load_settings, parse_kafka_security
from shopstream_assets.defs.dbt.project import shopstream_dbt_project
from shopstream_assets.runtime.dagster_dbt_private import InstalledDbtVersion
from shopstream_assets.runtime.dagster_instance import dbt_profile_environment, venv_executable


def current_endpoints() -> tuple[Settings, Endpoints]:
    settings = load_settings()
    return settings, endpoints(settings)


class PostgresResource(dg.ConfigurableResource):
    """ShopStream's PostgreSQL (Bronze, Silver, Gold): SHOPSTREAM_DATABASE_URL or the embedded server."""

    database_url: str | None = None

    def url(self) -> str:
        return self.database_url or current_endpoints()[1].database_url

    @contextmanager
    def connect(self) -> Iterator[psycopg.Connection]:
        """An autocommit connection: the callers only read."""
        with database.connect(self.url(), autocommit=True) as conn:
            yield conn


class KafkaResource(dg.ConfigurableResource):
    """The clickstream topic and its broker: SHOPSTREAM_KAFKA_BOOTSTRAP / SHOPSTREAM_TOPIC or the embedded one.

    The client security settings are the SHOPSTREAM_KAFKA_* variables; a field set here (such
    as ``sasl_password=dg.EnvVar("...")``) replaces its variable, checked by the same rules.
    """

    bootstrap: str | None = None
    topic: str | None = None
    security_protocol: str | None = None
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    ssl_ca_location: str | None = None

    def bootstrap_servers(self) -> str:
        return self.bootstrap or current_endpoints()[1].kafka_bootstrap

    def topic_name(self) -> str:
        return self.topic or load_settings().topic

    def security(self) -> KafkaSecurity:
        """The security settings: this resource's fields over the SHOPSTREAM_KAFKA_* variables."""
        fields = {
            "SHOPSTREAM_KAFKA_SECURITY_PROTOCOL": self.security_protocol,
            "SHOPSTREAM_KAFKA_SASL_MECHANISM": self.sasl_mechanism,
            "SHOPSTREAM_KAFKA_SASL_USERNAME": self.sasl_username,
            "SHOPSTREAM_KAFKA_SASL_PASSWORD": self.sasl_password,
            "SHOPSTREAM_KAFKA_SSL_CA_LOCATION": self.ssl_ca_location,
        }
        variables = {**os.environ, **{name: value for name, value in fields.items() if value is not None}}
        return parse_kafka_security(variables, bootstrap=self.bootstrap_servers())

    def client_config(self, **extra: object) -> dict[str, object]:
        """librdkafka's configuration for this broker, security included (``shopstream.kafka_clients``)."""
        return client_config(self.bootstrap_servers(), self.security(), **extra)


class ShopstreamDbtCliResource(InstalledDbtVersion, DbtCliResource):
    """dbt from this venv, with the SHOPSTREAM_DB_* variables its profile reads set for the run.

    They are derived from the current endpoints at run start, so the profile always names the
    database the rest of the pipeline uses, however the process was started. Its version is
    the installed dbt-core's, not asked of a whole dbt start-up per run (InstalledDbtVersion).
    """

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        super().setup_for_execution(context)
        os.environ.update(dbt_profile_environment(current_endpoints()[1]))


class ShopstreamSparkResource(LazyPySparkResource):
    """The lazy dagster-pyspark session, built by the stream's own session factory.

    ``streaming.spark_session.build_spark_session`` adds the Kafka connector jars (resolving them on
    first use), UTC and quiet logs; ``spark_config`` adds to that. The session lives as long
    as the run worker process.
    """

    def _init_session(self) -> None:
        if self._spark_session is None:
            from streaming.spark_session import build_spark_session

            self._spark_session = build_spark_session(
                load_settings(), app_name="shopstream-dagster-replay", extra_conf=self.spark_config
            )


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(
        resources={
            "dbt": ShopstreamDbtCliResource(project_dir=shopstream_dbt_project, dbt_executable=venv_executable("dbt")),
            "pyspark": ShopstreamSparkResource(spark_config={}),
            "postgres": PostgresResource(),
            "kafka": KafkaResource(),
        },
        # One process per run, no process per step: a dbt run is one step, and a step
        # subprocess would load the code location again (seconds of event-to-Gold latency).
        executor=dg.in_process_executor,
    )

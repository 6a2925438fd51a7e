"""The SparkSession the stream and the replay run on: the Kafka connector, UTC, quiet logs; and the job's logging."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from shopstream.jars import SPARK_CONNECTOR, resolve_jars
from shopstream.jvm_archive import archive_path, sharing_options
from shopstream.settings import Settings
from streaming.job_errors import StreamJobError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger("shopstream.stream")

APP_NAME = "shopstream-bronze"
CONNECTOR_ARTIFACT = "spark-sql-kafka-0-10_2.13"
# JVM thread stack (-Xss) for the driver and the tasks: see build_spark_session.
TASK_THREAD_STACK = "16m"

# Spark's INFO chatter and a few harmless start-up warnings off; our own log says what happens.
LOG4J2_PROPERTIES = """\
rootLogger.level = warn
rootLogger.appenderRef.console.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{yyyy-MM-dd HH:mm:ss} %p spark %c{1}: %m%n%ex
logger.nativecode.name = org.apache.hadoop.util.NativeCodeLoader
logger.nativecode.level = error
logger.sparkutils.name = org.apache.spark.util.Utils
logger.sparkutils.level = error
logger.kafkaconfig.name = org.apache.kafka.clients
logger.kafkaconfig.level = error
logger.kafkadata.name = org.apache.spark.sql.kafka010
logger.kafkadata.level = error
logger.checkpoint.name = org.apache.spark.sql.execution.streaming
logger.checkpoint.level = error
# "Failed to cancel job group" when a query stops between batches
logger.dagscheduler.name = org.apache.spark.scheduler.DAGScheduler
logger.dagscheduler.level = error
"""


def build_spark_session(
    settings: Settings,
    *,
    master: str | None = None,
    app_name: str = APP_NAME,
    extra_conf: Mapping[str, str] | None = None,
    training_jvm_options: Sequence[str] = (),
) -> SparkSession:
    """A SparkSession with the Kafka connector, UTC, quiet logs and no console progress bar.

    ``training_jvm_options`` start the driver without its class-data archive, writing one instead
    (`shopstream test-setup`).
    """
    from pyspark.sql import SparkSession

    jars = connector_jars(settings)
    check_connector_version(jars)
    # Python workers (toArrow, any UDF) must run this interpreter, not whatever python3 is on PATH.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    # Spark's variant functions recurse once per nesting level, and JSON may nest 1,000 deep
    # before Jackson refuses it: with the JVM's default thread stacks, schema_of_variant on one
    # hostile, deeply nested message overflowed a task thread's stack and took the JVM down.
    # The parallel collector: less CPU per micro-batch than G1 here (its concurrent marking and
    # write barriers buy short pauses, which a batch job does not need).
    class_data = list(training_jvm_options) or sharing_options(driver_class_data_archive(settings))
    java_options = " ".join(
        [
            f"-Xss{TASK_THREAD_STACK}",
            "-XX:+UseParallelGC",
            *class_data,
            f"-Dlog4j2.configurationFile=file:{_log4j_config(settings)}",
        ]
    )
    builder = (
        SparkSession.builder.master(master or settings.spark_master)
        .appName(app_name)
        .config("spark.jars", ",".join(str(jar) for jar in jars))
        # Read when the driver JVM is launched. Local mode runs the tasks in it too: with the
        # default heap a good part of the drain went to GC.
        .config("spark.driver.memory", settings.spark_driver_memory)
        .config("spark.driver.extraJavaOptions", java_options)
        .config("spark.executor.extraJavaOptions", java_options)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "4")
    )
    for key, value in (extra_conf or {}).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


def driver_class_data_archive(settings: Settings) -> Path:
    """The driver JVM's class-data archive (shopstream/jvm_archive.py): its class path is pyspark's jars."""
    import pyspark

    return archive_path(settings.jars_dir, "spark-driver", f"{pyspark.__version__}:{Path(pyspark.__file__).parent}")


def connector_jars(settings: Settings) -> list[Path]:
    """The Kafka connector closure under SHOPSTREAM_HOME/jars/spark-connector (resolved if missing)."""
    jars = resolve_jars(SPARK_CONNECTOR, settings.jars_dir, progress=log.info)
    if not jars:
        raise StreamJobError(f"no jars in {settings.jars_dir / SPARK_CONNECTOR}; delete it and run again")
    return jars


def check_connector_version(jars: list[Path]) -> str:
    """The connector's version; raises unless it equals ``pyspark.__version__``."""
    import pyspark

    prefix = CONNECTOR_ARTIFACT + "-"
    versions = [jar.name.removeprefix(prefix).removesuffix(".jar") for jar in jars if jar.name.startswith(prefix)]
    if not versions:
        raise StreamJobError(f"{CONNECTOR_ARTIFACT} is not among the connector jars: {[jar.name for jar in jars]}")
    if versions[0] != pyspark.__version__:
        raise StreamJobError(
            f"Spark's Kafka connector is {CONNECTOR_ARTIFACT} {versions[0]} but pyspark is {pyspark.__version__}: "
            "they must be the same version. Set <spark.version> in streaming/jvm/pom.xml to pyspark's "
            "version (or install the pyspark matching the connector) and run again."
        )
    return versions[0]


def _log4j_config(settings: Settings) -> Path:
    path = settings.run_dir / "spark-log4j2.properties"
    if not path.exists() or path.read_text() != LOG4J2_PROPERTIES:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(LOG4J2_PROPERTIES)
    return path


def configure_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
    )
    # py4j logs every callback at INFO.
    logging.getLogger("py4j").setLevel(logging.WARNING)

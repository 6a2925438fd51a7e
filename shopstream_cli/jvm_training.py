"""Training runs for the JVMs' class-data archives (shopstream/jvm_archive.py).

One short, real run per JVM kind, whose classes the archive then holds: a Kafka broker that
takes a topic, simulator events and a consumer; a Spark driver that reads those events from
Kafka through the stream's own validation plan into Arrow, as a `shopstream stream` batch does
(a batch query: a driver that ran a streaming query hung as it wrote its archive at exit).
Each runs only where its archive is missing, in a scratch home that links the jars; a run
that fails leaves no archive (the JVMs then start as they would without).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from shopstream import jvm_archive
from shopstream.kafka_admin import ensure_topic
from shopstream.kafka_clients import spark_kafka_options
from shopstream.kafka_server import EmbeddedKafka
from shopstream.settings import Settings, load_settings

TRAINING_TOPIC = "class-data-training"
TRAINING_EVENTS = 2_000
JVM_EXIT_WAIT_S = 600  # writing the archive takes a while on a busy machine


def scratch_settings(settings: Settings, scratch: Path) -> Settings:
    """Settings for a home under ``scratch`` whose jars folder is ``settings``' own."""
    home = scratch / "home"
    home.mkdir(parents=True, exist_ok=True)
    settings.jars_dir.mkdir(parents=True, exist_ok=True)
    (home / "jars").symlink_to(settings.jars_dir.resolve(), target_is_directory=True)
    return load_settings({"SHOPSTREAM_HOME": str(home)})


def train_class_data_archives(settings: Settings, progress: Callable[[str], None] = print) -> list[Path]:
    """Train the Kafka broker's and the Spark driver's archives where missing; returns those written."""
    from streaming.spark_session import driver_class_data_archive

    kafka_archive = EmbeddedKafka(settings).class_data_archive()
    spark_archive = driver_class_data_archive(settings)
    if kafka_archive.is_file() and spark_archive.is_file():
        return []
    written: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="shopstream-class-data-") as scratch:
        scratch_home = scratch_settings(settings, Path(scratch))
        kafka = EmbeddedKafka(scratch_home)
        kafka_scratch: Path | None = None
        if not kafka_archive.is_file():
            kafka.extra_jvm_options, kafka_scratch = jvm_archive.training_options(kafka_archive)
        progress("training the JVMs' class-data archives (once; later starts map them) ...")
        bootstrap = kafka.start(progress=lambda message: None)
        try:
            _produce_training_events(bootstrap)
            if not spark_archive.is_file():
                options, spark_scratch = jvm_archive.training_options(spark_archive)
                _run_spark_training(scratch_home, bootstrap, options)
                if jvm_archive.publish(spark_scratch, spark_archive):
                    written.append(spark_archive)
        finally:
            kafka.stop(progress=lambda message: None)  # the broker writes its archive as it exits
        if kafka_scratch is not None and jvm_archive.publish(kafka_scratch, kafka_archive):
            written.append(kafka_archive)
    for archive in written:
        progress(f"class-data archive {archive.name}: {archive.stat().st_size / 2**20:.0f} MB")
    return written


def _produce_training_events(bootstrap: str) -> None:
    from streaming.producer import UNPACED_CLOCK_RATE, ClickstreamProducer, run
    from streaming.simulator import Simulator

    ensure_topic(bootstrap, TRAINING_TOPIC, 2)
    simulator = Simulator(1, events_per_second=UNPACED_CLOCK_RATE, bad_ratio=0.05)
    run(simulator, ClickstreamProducer(bootstrap, TRAINING_TOPIC), paced=False, events=TRAINING_EVENTS)


def _run_spark_training(settings: Settings, bootstrap: str, jvm_options: list[str]) -> None:
    """The Spark run, in a process of its own, until its driver JVM is gone (its archive written)."""
    answer = settings.home / "spark-training.json"
    request = {"home": str(settings.home), "bootstrap": bootstrap, "options": jvm_options, "answer": str(answer)}
    log = settings.home / "spark-training.log"
    with log.open("w") as output:
        finished = subprocess.run(
            [sys.executable, "-m", "shopstream_cli.jvm_training", json.dumps(request)],
            stdout=output,
            stderr=subprocess.STDOUT,
            check=False,
            timeout=600,
        )
    if finished.returncode != 0 or not answer.is_file():
        raise RuntimeError(f"the Spark training run failed: {log.read_text(errors='replace')[-2000:]}")
    driver = json.loads(answer.read_text())
    with contextlib.suppress(psutil.NoSuchProcess):
        process = psutil.Process(driver["pid"])
        try:
            process.wait(JVM_EXIT_WAIT_S)  # it exits once its parent's pipe closes, writing the archive
        except psutil.TimeoutExpired:
            process.kill()  # no archive then: `publish` finds none
            process.wait(JVM_EXIT_WAIT_S)


def _spark_training_main(request: dict[str, Any]) -> None:
    from streaming.spark_session import build_spark_session
    from streaming.transforms import parse_and_validate

    settings = load_settings({"SHOPSTREAM_HOME": str(request["home"])})
    spark = build_spark_session(settings, master="local[2]", training_jvm_options=request["options"])
    messages = (
        spark.read.format("kafka")
        .options(**spark_kafka_options(str(request["bootstrap"]), None))
        .option("subscribe", TRAINING_TOPIC)
        .option("includeHeaders", "true")
        .load()
    )
    parse_and_validate(messages).toArrow()
    driver = next(child for child in psutil.Process().children(recursive=True) if "java" in child.name())
    spark.stop()
    answer = {"pid": driver.pid}
    Path(request["answer"]).write_text(json.dumps(answer))


if __name__ == "__main__":
    _spark_training_main(json.loads(sys.argv[1]))

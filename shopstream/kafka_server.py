"""The embedded Apache Kafka: a real broker from its own Maven jars, no Docker.

When ``SHOPSTREAM_KAFKA_BOOTSTRAP`` is unset, ShopStream runs Apache Kafka 4.3.1 as one KRaft
node acting as broker and controller on 127.0.0.1, its logs under ``SHOPSTREAM_HOME/data/kafka``.
The broker outlives the command that started it; a second start finds it instead of starting a
twin. Its ports are chosen once and kept while free, so the bootstrap address stays stable.
"""

from __future__ import annotations

import base64
import contextlib
import subprocess
import time
import uuid
from pathlib import Path

import psutil

from shopstream.embedded import (
    LOOPBACK,
    Progress,
    ServiceError,
    ServiceStatus,
    free_port,
    port_open,
    read_state,
    resident_mb,
    terminate,
    write_state,
)
from shopstream.jars import KAFKA_BROKER, require_java, resolve_jars
from shopstream.settings import Settings

KAFKA_HEAP = "-Xmx512m"


class EmbeddedKafka:
    name = "kafka"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.data_dir = settings.data_dir / "kafka"
        self.config_dir = settings.run_dir / "kafka"
        self.state_path = settings.run_dir / "kafka.json"
        # The broker's log, which log4j rotates by size (SHOPSTREAM_LOG_MAX_SIZE, SHOPSTREAM_LOG_KEEP).
        self.log_path = settings.logs_dir / "kafka.log"
        # What the JVM prints outside log4j (a crash, an option it refuses): a few lines per start.
        self.console_path = settings.logs_dir / "kafka.console.log"

    @property
    def port(self) -> int | None:
        return read_state(self.state_path).get("port")

    @property
    def bootstrap(self) -> str:
        port = self.port
        if port is None:
            raise ServiceError("the embedded Kafka broker has never been started: run `shopstream services start`")
        return f"{LOOPBACK}:{port}"

    def pid(self) -> int | None:
        pid = read_state(self.state_path).get("pid")
        if pid is None:
            return None
        try:
            process = psutil.Process(pid)
            command_line = process.cmdline()
        except psutil.Error:
            return None
        if "kafka.Kafka" in command_line and process.status() != psutil.STATUS_ZOMBIE:
            return pid
        return None

    def _cluster_id(self) -> str:
        state = read_state(self.state_path)
        if "cluster_id" not in state:
            # Kafka wants 16 random bytes as 22 characters of url-safe base64.
            state["cluster_id"] = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            write_state(self.state_path, state)
        return state["cluster_id"]

    def _write_config(self, port: int, controller_port: int) -> Path:
        self.config_dir.mkdir(parents=True, exist_ok=True)
        properties = self.config_dir / "server.properties"
        properties.write_text(
            "\n".join(
                [
                    "# Written by shopstream services start; edit shopstream/kafka_server.py instead.",
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@{LOOPBACK}:{controller_port}",
                    f"listeners=PLAINTEXT://{LOOPBACK}:{port},CONTROLLER://{LOOPBACK}:{controller_port}",
                    f"advertised.listeners=PLAINTEXT://{LOOPBACK}:{port}",
                    "controller.listener.names=CONTROLLER",
                    "inter.broker.listener.name=PLAINTEXT",
                    "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                    f"log.dirs={self.data_dir}",
                    "num.partitions=6",
                    # One node: every internal topic has one replica.
                    "offsets.topic.replication.factor=1",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "share.coordinator.state.topic.replication.factor=1",
                    "share.coordinator.state.topic.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    # The 128 MiB default is allocated at start; a dev broker compacts little.
                    "log.cleaner.dedupe.buffer.size=8388608",
                    "log.retention.hours=168",
                    "auto.create.topics.enable=false",
                    "",
                ]
            )
        )
        log4j = self.config_dir / "log4j2.properties"
        log4j.write_text(self.log4j_properties())
        return properties

    def log4j_properties(self) -> str:
        """The broker's log4j2 configuration: one size-rotated file, the quiet loggers at WARN."""
        rotated = self.log_path.with_name(f"{self.log_path.name}.%i")
        return "\n".join(
            [
                "status = warn",
                "appender.file.type = RollingFile",
                "appender.file.name = FILE",
                f"appender.file.fileName = {self.log_path.resolve()}",
                f"appender.file.filePattern = {rotated.resolve()}",
                "appender.file.layout.type = PatternLayout",
                "appender.file.layout.pattern = [%d] %p %m (%c)%n",
                "appender.file.policies.type = Policies",
                "appender.file.policies.size.type = SizeBasedTriggeringPolicy",
                f"appender.file.policies.size.size = {self.settings.log_max_bytes}",
                # kafka.log.1 is the newest rotated file, as for every other ShopStream log.
                "appender.file.strategy.type = DefaultRolloverStrategy",
                "appender.file.strategy.fileIndex = min",
                f"appender.file.strategy.max = {self.settings.log_keep}",
                "rootLogger.level = INFO",
                "rootLogger.appenderRef.file.ref = FILE",
                # Per-partition chatter at INFO drowns what matters.
                "logger.log.name = kafka.log",
                "logger.log.level = WARN",
                "logger.cleaner.name = kafka.log.LogCleaner",
                "logger.cleaner.level = WARN",
                "logger.storage.name = org.apache.kafka.storage",
                "logger.storage.level = WARN",
                "",
            ]
        )

    def _log_tails(self) -> str:
        return "\n".join(
            f"{path}:\n{path.read_text(errors='replace')[-3000:]}"
            for path in (self.console_path, self.log_path)
            if path.exists()
        )

    def start(self, progress: Progress = print) -> str:
        if self.pid() is not None:
            self._wait_ready()
            return self.bootstrap
        java = require_java()
        jars = resolve_jars(KAFKA_BROKER, self.settings.jars_dir, progress=progress)
        if not jars:
            raise ServiceError(f"no Kafka jars under {self.settings.jars_dir / KAFKA_BROKER}")
        classpath = str(self.settings.jars_dir / KAFKA_BROKER / "*")
        state = read_state(self.state_path)
        port = free_port(state.get("port"))
        controller_port = free_port(state.get("controller_port"))
        if controller_port == port:
            controller_port = free_port()
        properties = self._write_config(port, controller_port)
        log4j = f"-Dlog4j2.configurationFile={self.config_dir / 'log4j2.properties'}"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.settings.logs_dir.mkdir(parents=True, exist_ok=True)
        format_command = [
            java,
            log4j,
            "-cp",
            classpath,
            "kafka.tools.StorageTool",
            "format",
            # One argument each: a URL-safe base64 id starts with "-" one time in 64, which
            # as a separate argument the parser took for an option.
            f"--cluster-id={self._cluster_id()}",
            f"--config={properties}",
            "--ignore-formatted",
        ]
        formatted = subprocess.run(format_command, capture_output=True, text=True, check=False)
        if formatted.returncode != 0:
            raise ServiceError(f"Kafka storage format failed: {formatted.stdout}{formatted.stderr}")
        progress(f"starting Apache Kafka on {LOOPBACK}:{port} ...")
        with self.console_path.open("ab") as log:
            process = subprocess.Popen(
                [java, KAFKA_HEAP, "-Xms128m", "-XX:+UseG1GC", log4j, "-cp", classpath, "kafka.Kafka", str(properties)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        state = read_state(self.state_path)
        state.update({"port": port, "controller_port": controller_port, "pid": process.pid})
        write_state(self.state_path, state)
        self._wait_ready(process)
        return self.bootstrap

    def _wait_ready(self, process: subprocess.Popen[bytes] | None = None, timeout: float = 90) -> None:
        from confluent_kafka.admin import AdminClient

        deadline = time.monotonic() + timeout
        host, port = self.bootstrap.split(":")
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise ServiceError(
                    f"Kafka exited with code {process.returncode} while starting; see {self.settings.logs_dir}:\n"
                    + self._log_tails()
                )
            if port_open(host, int(port)):
                admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0})
                with contextlib.suppress(Exception):
                    metadata = admin.list_topics(timeout=2)
                    if metadata.brokers:
                        return
            time.sleep(0.2)
        raise ServiceError(f"Kafka did not become ready within {timeout:.0f} s; see {self.log_path}")

    def stop(self, progress: Progress = print) -> bool:
        pid = self.pid()
        if pid is None:
            return False
        progress("stopping Kafka ...")
        terminate(pid, timeout=60, name="Kafka", progress=progress)
        return True

    def status(self) -> ServiceStatus:
        pid = self.pid()
        address = self.bootstrap if pid else None
        return ServiceStatus(self.name, pid is not None, pid, address, resident_mb(pid), True)

"""The embedded Apache Kafka: a real broker from its own Maven jars, no Docker.

When ``SHOPSTREAM_KAFKA_BOOTSTRAP`` is unset, ShopStream runs Apache Kafka 4.3.1 as one KRaft
node acting as broker and controller on 127.0.0.1, its logs under ``SHOPSTREAM_HOME/data/kafka``.
The broker outlives the command that started it; a second start finds it instead of starting a
twin. Its ports are chosen once and kept while free, so the bootstrap address stays stable.

Given ``scram_users``, the client listener is SASL_PLAINTEXT with SCRAM-SHA-512 instead, its
users created when the storage is formatted (``kafka-storage format --add-scram``): a broker
that refuses clients without credentials, as a managed cluster does (the test of the
SHOPSTREAM_KAFKA_* client settings runs one).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import secrets
import subprocess
import time
import uuid
from collections.abc import Mapping
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
    write_file_atomically,
    write_state,
)
from shopstream.jars import KAFKA_BROKER, require_java, resolve_jars
from shopstream.jvm_archive import archive_path, sharing_options
from shopstream.kafka_clients import client_config
from shopstream.settings import KafkaSecurity, Settings

KAFKA_HEAP = "-Xmx512m"
SCRAM_MECHANISM = "SCRAM-SHA-512"
SCRAM_ITERATIONS = 4096  # Kafka's minimum and default
# The user the broker authenticates as to itself (inter-broker traffic) on a SCRAM listener.
BROKER_USER = "shopstream-broker"


def scram_credential(user: str, password: str, *, salt: bytes | None = None) -> str:
    """An ``--add-scram`` argument holding the salted password, never the password itself, so it
    appears on no command line (RFC 5802's SaltedPassword: PBKDF2 with the mechanism's HMAC)."""
    salt = secrets.token_bytes(16) if salt is None else salt
    salted = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, SCRAM_ITERATIONS)
    encoded_salt, encoded_salted = base64.b64encode(salt).decode(), base64.b64encode(salted).decode()
    return (
        f'{SCRAM_MECHANISM}=[name={user},iterations={SCRAM_ITERATIONS},salt="{encoded_salt}",'
        f'saltedpassword="{encoded_salted}"]'
    )


class EmbeddedKafka:
    name = "kafka"
    label = "Kafka"
    node_id = 1
    heap = KAFKA_HEAP

    def __init__(self, settings: Settings, *, scram_users: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        # JVM options added to the broker's (`shopstream test-setup` trains its class-data archive with them).
        self.extra_jvm_options: list[str] = []
        # user -> password of the SCRAM-SHA-512 users; None: a plaintext listener.
        self.scram_users = dict(scram_users) if scram_users is not None else None
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

    def _broker_password(self) -> str:
        # Apart from kafka.json (readable, it holds only ports and ids), at mode 600.
        path = self.settings.run_dir / "kafka-broker-user.json"
        state = read_state(path)
        if "password" not in state:
            state["password"] = secrets.token_urlsafe(24)
            write_state(path, state, private=True)
        return state["password"]

    def client_security(self) -> KafkaSecurity:
        """What a client of this broker needs: nothing, or on a SCRAM listener the broker's own user."""
        if self.scram_users is None:
            return KafkaSecurity()
        return KafkaSecurity("SASL_PLAINTEXT", SCRAM_MECHANISM, BROKER_USER, self._broker_password())

    def _listener_lines(self, port: int, controller_port: int) -> list[str]:
        controller = f"CONTROLLER://{LOOPBACK}:{controller_port}"
        if self.scram_users is None:
            return [
                f"listeners=PLAINTEXT://{LOOPBACK}:{port},{controller}",
                f"advertised.listeners=PLAINTEXT://{LOOPBACK}:{port}",
                "inter.broker.listener.name=PLAINTEXT",
                "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            ]
        login = "org.apache.kafka.common.security.scram.ScramLoginModule"
        # The controller listener stays plaintext on loopback: only this node's own broker talks to it.
        return [
            f"listeners=SASL_PLAINTEXT://{LOOPBACK}:{port},{controller}",
            f"advertised.listeners=SASL_PLAINTEXT://{LOOPBACK}:{port}",
            "inter.broker.listener.name=SASL_PLAINTEXT",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT",
            f"sasl.enabled.mechanisms={SCRAM_MECHANISM}",
            f"sasl.mechanism.inter.broker.protocol={SCRAM_MECHANISM}",
            f"listener.name.sasl_plaintext.{SCRAM_MECHANISM.lower()}.sasl.jaas.config={login} required "
            f'username="{BROKER_USER}" password="{self._broker_password()}";',
        ]

    def _write_config(self, port: int, controller_port: int) -> Path:
        self.config_dir.mkdir(parents=True, exist_ok=True)
        properties = self.config_dir / "server.properties"
        # Mode 600: on a SCRAM listener it holds the broker user's password.
        write_file_atomically(
            properties,
            "\n".join(
                [
                    "# Written by shopstream services start; edit shopstream/kafka_server.py instead.",
                    "process.roles=broker,controller",
                    f"node.id={self.node_id}",
                    f"controller.quorum.voters={self.quorum_voters(controller_port)}",
                    *self._listener_lines(port, controller_port),
                    "controller.listener.names=CONTROLLER",
                    f"log.dirs={self.data_dir}",
                    "num.partitions=6",
                    *self.replication_lines(),
                    "group.initial.rebalance.delay.ms=0",
                    # The 128 MiB default is allocated at start; a dev broker compacts little.
                    "log.cleaner.dedupe.buffer.size=8388608",
                    "log.retention.hours=168",
                    "auto.create.topics.enable=false",
                    # The controller appends a no-op record to its metadata log every 500 ms by default,
                    # so that readers see it alive; on an idle dev broker those appends were a third of
                    # its CPU (docs/performance.md). Changes are still written the moment they happen.
                    "metadata.max.idle.interval.ms=10000",
                    "",
                ]
            ),
        )
        log4j = self.config_dir / "log4j2.properties"
        log4j.write_text(self.log4j_properties())
        return properties

    def quorum_voters(self, controller_port: int) -> str:
        """``controller.quorum.voters``: this node alone (a cluster's node names every node)."""
        return f"{self.node_id}@{LOOPBACK}:{controller_port}"

    def replication_lines(self) -> list[str]:
        # One node: every internal topic has one replica.
        return [
            "offsets.topic.replication.factor=1",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
        ]

    def choose_ports(self) -> tuple[int, int]:
        """(client port, controller port): the last ones while free, so the bootstrap stays stable."""
        state = read_state(self.state_path)
        port = free_port(state.get("port"))
        controller_port = free_port(state.get("controller_port"))
        if controller_port == port:
            controller_port = free_port()
        return port, controller_port

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
        self._wait_ready(self.launch(progress))
        return self.bootstrap

    def launch(self, progress: Progress = print) -> subprocess.Popen[bytes]:
        """Format the storage (once) and start the JVM without waiting for it to serve: a cluster's
        nodes answer only once a majority of its controllers runs."""
        java = require_java()
        jars = resolve_jars(KAFKA_BROKER, self.settings.jars_dir, progress=progress)
        if not jars:
            raise ServiceError(f"no Kafka jars under {self.settings.jars_dir / KAFKA_BROKER}")
        # The real path: homes that link one jars folder then share one class-data archive.
        classpath = str(self.settings.jars_dir.resolve() / KAFKA_BROKER / "*")
        class_data = sharing_options(self.class_data_archive(classpath))
        port, controller_port = self.choose_ports()
        properties = self._write_config(port, controller_port)
        log4j = f"-Dlog4j2.configurationFile={self.config_dir / 'log4j2.properties'}"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.settings.logs_dir.mkdir(parents=True, exist_ok=True)
        format_command = [
            java,
            *class_data,
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
        if self.scram_users is not None:
            users = {BROKER_USER: self._broker_password(), **self.scram_users}
            for user, password in users.items():
                format_command.append(f"--add-scram={scram_credential(user, password)}")
        formatted = subprocess.run(format_command, capture_output=True, text=True, check=False)
        if formatted.returncode != 0:
            raise ServiceError(f"Kafka storage format failed: {formatted.stdout}{formatted.stderr}")
        progress(f"starting Apache {self.label} on {LOOPBACK}:{port} ...")
        with self.console_path.open("ab") as log:
            jvm_options = [self.heap, "-Xms128m", "-XX:+UseG1GC", *class_data, *self.extra_jvm_options, log4j]
            process = subprocess.Popen(
                [java, *jvm_options, "-cp", classpath, "kafka.Kafka", str(properties)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        state = read_state(self.state_path)
        state.update({"port": port, "controller_port": controller_port, "pid": process.pid})
        write_state(self.state_path, state)
        return process

    def class_data_archive(self, classpath: str | None = None) -> Path:
        classpath = classpath or str(self.settings.jars_dir.resolve() / KAFKA_BROKER / "*")
        return archive_path(self.settings.jars_dir, KAFKA_BROKER, classpath)

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
                admin = AdminClient(client_config(self.bootstrap, self.client_security(), log_level=0))
                with contextlib.suppress(Exception):
                    metadata = admin.list_topics(timeout=2)
                    if metadata.brokers:
                        return
            time.sleep(0.2)
        raise ServiceError(f"Kafka did not become ready within {timeout:.0f} s; see {self.log_path}")

    def stop(self, progress: Progress = print, *, immediate: bool = False) -> bool:
        """SIGTERM and up to a minute to close its logs; ``immediate``: killed, for data thrown away next."""
        pid = self.pid()
        if pid is None:
            return False
        progress(f"stopping {self.label} ...")
        if immediate:
            with contextlib.suppress(psutil.NoSuchProcess):
                broker = psutil.Process(pid)
                broker.kill()
                broker.wait(30)
            return True
        terminate(pid, timeout=60, name="Kafka", progress=progress)
        return True

    def status(self) -> ServiceStatus:
        pid = self.pid()
        address = self.bootstrap if pid else None
        return ServiceStatus(self.name, pid is not None, pid, address, resident_mb(pid), True)

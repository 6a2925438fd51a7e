"""A local Kafka cluster of N KRaft nodes from the embedded broker's own jars (`services start --kafka-nodes N`).

Each node is a broker and a controller, as the single embedded broker is, with its own ports,
storage, log and pid under ``SHOPSTREAM_HOME`` (``run/kafka-cluster/``, ``data/kafka-cluster/``,
``logs/kafka-<n>.log``). The cluster keeps its id and every node's ports in
``run/kafka-cluster.json``: the controller quorum names every node's controller port, so a node
restarted alone must come back on the same ports. Topics default to three replicas and two
in-sync replicas, so a node's loss loses no acknowledged message.
"""

from __future__ import annotations

import base64
import contextlib
import time
import uuid
from typing import Any

import psutil

from shopstream.embedded import (
    LOOPBACK,
    Progress,
    ServiceError,
    ServiceStatus,
    free_port,
    port_open,
    read_state,
    write_state,
)
from shopstream.kafka_clients import client_config
from shopstream.kafka_server import EmbeddedKafka
from shopstream.settings import Settings

# Three nodes share two cores and a few GB with Spark and PostgreSQL: a dev node needs little heap.
NODE_HEAP = "-Xmx256m"
MAX_NODES = 9


def replication_factor(nodes: int) -> int:
    return min(nodes, 3)


def min_insync_replicas(nodes: int) -> int:
    # With three replicas, two must acknowledge: one node may be down and the producer still writes.
    return 2 if replication_factor(nodes) >= 3 else 1


class KafkaNode(EmbeddedKafka):
    """One node of a :class:`KafkaCluster`: the embedded broker's start, config and log, its own paths."""

    heap = NODE_HEAP

    def __init__(self, settings: Settings, cluster: KafkaCluster, node_id: int) -> None:
        super().__init__(settings)
        self.cluster = cluster
        self.node_id = node_id
        self.name = f"kafka-{node_id}"
        self.label = f"Kafka node {node_id}"
        folder = f"kafka-cluster/node-{node_id}"
        self.data_dir = settings.data_dir / folder
        self.config_dir = settings.run_dir / folder
        self.state_path = settings.run_dir / f"{folder}.json"
        self.log_path = settings.logs_dir / f"kafka-{node_id}.log"
        self.console_path = settings.logs_dir / f"kafka-{node_id}.console.log"

    def quorum_voters(self, controller_port: int) -> str:
        return self.cluster.quorum_voters()

    def replication_lines(self) -> list[str]:
        factor, min_isr = replication_factor(self.cluster.size), min_insync_replicas(self.cluster.size)
        return [
            f"default.replication.factor={factor}",
            f"min.insync.replicas={min_isr}",
            f"offsets.topic.replication.factor={factor}",
            f"transaction.state.log.replication.factor={factor}",
            f"transaction.state.log.min.isr={min_isr}",
            f"share.coordinator.state.topic.replication.factor={factor}",
            f"share.coordinator.state.topic.min.isr={min_isr}",
        ]

    def choose_ports(self) -> tuple[int, int]:
        return self.cluster.node_ports(self.node_id)

    def _cluster_id(self) -> str:
        return self.cluster.cluster_id()


class KafkaCluster:
    """N KRaft nodes on loopback; started, reported and stopped together (or a node alone, for tests)."""

    name = "kafka"

    def __init__(self, settings: Settings, size: int | None = None) -> None:
        self.settings = settings
        self.state_path = settings.run_dir / "kafka-cluster.json"
        stored = read_state(self.state_path).get("nodes")
        self.size = size or stored or 3
        if not 1 <= self.size <= MAX_NODES:
            raise ServiceError(f"a local Kafka cluster has 1 to {MAX_NODES} nodes: got {self.size}")
        self.nodes = [KafkaNode(settings, self, node_id) for node_id in range(1, self.size + 1)]

    def _state(self) -> dict[str, Any]:
        return read_state(self.state_path)

    def cluster_id(self) -> str:
        state = self._state()
        if "cluster_id" not in state:
            state["cluster_id"] = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            write_state(self.state_path, state)
        return state["cluster_id"]

    def _assign_ports(self) -> None:
        """Every node's (client, controller) ports, chosen before any node starts (the quorum names them
        all); the stored ones are kept while free, or while any node still runs on them."""
        state = self._state()
        stored: dict[str, list[int]] = state.get("ports", {})
        keep = stored and len(stored) == self.size and (self.running_nodes() or self._all_free(stored))
        if not keep:
            taken: set[int] = set()
            ports = {}
            for node in self.nodes:
                pair = []
                for preferred in stored.get(str(node.node_id), [None, None]):
                    port = free_port(preferred)
                    while port in taken:
                        port = free_port()
                    taken.add(port)
                    pair.append(port)
                ports[str(node.node_id)] = pair
            state["ports"] = ports
        state["nodes"] = self.size
        write_state(self.state_path, state)

    @staticmethod
    def _all_free(stored: dict[str, list[int]]) -> bool:
        return all(free_port(port) == port for pair in stored.values() for port in pair)

    def node_ports(self, node_id: int) -> tuple[int, int]:
        ports = self._state().get("ports", {}).get(str(node_id))
        if ports is None:
            self._assign_ports()
            ports = self._state()["ports"][str(node_id)]
        return ports[0], ports[1]

    def quorum_voters(self) -> str:
        return ",".join(f"{node.node_id}@{LOOPBACK}:{self.node_ports(node.node_id)[1]}" for node in self.nodes)

    @property
    def port(self) -> int | None:
        return self.nodes[0].port

    @property
    def bootstrap(self) -> str:
        ports = self._state().get("ports")
        if not ports:
            raise ServiceError(
                "the local Kafka cluster has never been started: run `shopstream services start --kafka-nodes N`"
            )
        return ",".join(f"{LOOPBACK}:{ports[str(node.node_id)][0]}" for node in self.nodes)

    def running_nodes(self) -> list[KafkaNode]:
        return [node for node in self.nodes if node.pid() is not None]

    def pid(self) -> int | None:
        """The first running node's pid; None when no node runs."""
        running = self.running_nodes()
        return running[0].pid() if running else None

    def start(self, progress: Progress = print, timeout: float = 120) -> str:
        """Start the nodes that do not run (all launched before any is waited for: none answers before a
        majority of controllers runs), then wait until every node is a broker of the cluster."""
        if len(self.running_nodes()) < self.size:
            self._assign_ports()
        launched = {node.node_id: node.launch(progress) for node in self.nodes if node.pid() is None}
        self.wait_ready(launched, timeout=timeout)
        return self.bootstrap

    def wait_ready(self, launched: dict[int, Any] | None = None, timeout: float = 120) -> None:
        from confluent_kafka.admin import AdminClient

        deadline = time.monotonic() + timeout
        wanted = {node.node_id for node in self.nodes}
        seen: set[int] = set()
        while time.monotonic() < deadline:
            for node_id, process in (launched or {}).items():
                if process.poll() is not None:
                    node = self.nodes[node_id - 1]
                    raise ServiceError(
                        f"Kafka node {node_id} exited with code {process.returncode} while starting:\n"
                        + node._log_tails()
                    )
            if any(port_open(LOOPBACK, int(address.rsplit(":", 1)[1])) for address in self.bootstrap.split(",")):
                admin = AdminClient(client_config(self.bootstrap, self.nodes[0].client_security(), log_level=0))
                with contextlib.suppress(Exception):
                    seen = set(admin.list_topics(timeout=2).brokers)
                    if seen >= wanted:
                        return
            time.sleep(0.3)
        raise ServiceError(
            f"the Kafka cluster did not form within {timeout:.0f} s (brokers seen: {sorted(seen)});"
            f" see {self.settings.logs_dir}/kafka-*.log"
        )

    def stop(self, progress: Progress = print, timeout: float = 60) -> bool:
        """SIGTERM to every node at once, then wait: stopped one by one, the last nodes lose their
        quorum and wait out their controlled shutdown."""
        processes = []
        for node in self.running_nodes():
            with contextlib.suppress(psutil.Error):
                processes.append(psutil.Process(node.pid() or 0))
        if not processes:
            return False
        progress(f"stopping the Kafka cluster ({len(processes)} nodes) ...")
        for process in processes:
            with contextlib.suppress(psutil.Error):
                process.terminate()
        _, alive = psutil.wait_procs(processes, timeout=timeout)
        for process in alive:
            progress(f"Kafka node pid {process.pid} did not stop within {timeout:.0f} s of SIGTERM; killing it")
            with contextlib.suppress(psutil.Error):
                process.kill()
        psutil.wait_procs(alive, timeout=10)
        return True

    def statuses(self) -> list[ServiceStatus]:
        return [node.status() for node in self.nodes]

    def status(self) -> ServiceStatus:
        running = self.running_nodes()
        address = self.bootstrap if running else None
        return ServiceStatus(self.name, len(running) == self.size, self.pid(), address, None, True)

"""Measuring helpers shared by the benchmarks: percentiles and per-component CPU and memory."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import psutil


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (fraction in [0, 1]); nan for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[rank]


@dataclass
class ComponentUsage:
    name: str
    cpu_seconds: float = 0.0
    peak_rss_mb: float = 0.0
    mean_rss_mb: float = 0.0
    samples: int = 0
    # Per root pid, the most CPU its tree has shown so far, and what it had already used when
    # the window opened (not the window's).
    _tree_cpu_by_root: dict[int, float] = field(default_factory=dict)
    _tree_cpu_before_by_root: dict[int, float] = field(default_factory=dict)

    def cpu_percent(self, wall_seconds: float) -> float:
        return 100.0 * self.cpu_seconds / wall_seconds if wall_seconds > 0 else 0.0


class ResourceSampler:
    """Samples CPU time and resident memory of named process trees in a background thread.

    ``components`` maps a name to a function returning the root pids of that component
    (looked up on every sample, so processes that start late or restart are counted). CPU is
    what each process used inside the window: a broker started minutes earlier brings its
    JVM start-up and warm-up with it, which is not the window's.
    """

    def __init__(self, components: dict[str, Callable[[], Sequence[int]]], interval: float = 1.0) -> None:
        self.components = components
        self.interval = interval
        self.usage = {name: ComponentUsage(name) for name in components}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.started_at = 0.0
        self.stopped_at = 0.0

    def __enter__(self) -> ResourceSampler:
        self.started_at = time.monotonic()
        self._sample_all()  # the window's baseline, before the caller starts anything
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self.stopped_at = time.monotonic()

    @property
    def wall_seconds(self) -> float:
        return (self.stopped_at or time.monotonic()) - self.started_at

    def _sample_all(self) -> None:
        for name, roots in self.components.items():
            self._sample(self.usage[name], roots())

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample_all()
        self._sample_all()

    @staticmethod
    def _sample(usage: ComponentUsage, roots: Sequence[int]) -> None:
        rss = 0.0
        trees: dict[int, list[psutil.Process]] = {}
        for root in roots:
            with contextlib.suppress(psutil.Error):
                process = psutil.Process(root)
                trees[root] = [process, *process.children(recursive=True)]
        # A root inside another root's tree (a match under a parent that does not match) is
        # counted with that tree, not twice.
        nested = {member.pid for members in trees.values() for member in members[1:]}
        for root, members in trees.items():
            if root in nested:
                continue
            with contextlib.suppress(psutil.Error):
                tree_cpu = 0.0
                for member in members:
                    with contextlib.suppress(psutil.Error):
                        times = member.cpu_times()
                        # children_*: what its exited children used once it reaped them (PostgreSQL's
                        # backends, Dagster's run workers, dbt), which no sample may have caught alive.
                        tree_cpu += times.user + times.system + times.children_user + times.children_system
                        rss += member.memory_info().rss / 2**20
                if root not in usage._tree_cpu_by_root:
                    # A root there at the first sample ran before the window; one found later
                    # started inside it. (Not create_time: boot time is known to a second.)
                    usage._tree_cpu_before_by_root[root] = tree_cpu if usage.samples == 0 else 0.0
                # A child that exited but is not reaped yet is in neither figure for a moment.
                usage._tree_cpu_by_root[root] = max(tree_cpu, usage._tree_cpu_by_root.get(root, 0.0))
        usage.cpu_seconds = sum(
            cpu - usage._tree_cpu_before_by_root[root] for root, cpu in usage._tree_cpu_by_root.items()
        )
        usage.samples += 1
        usage.peak_rss_mb = max(usage.peak_rss_mb, rss)
        usage.mean_rss_mb += (rss - usage.mean_rss_mb) / usage.samples


def pids_matching(*needles: str) -> Callable[[], list[int]]:
    """Root pids whose command line contains every needle (children are walked by the sampler)."""

    def find() -> list[int]:
        found = []
        for process in psutil.process_iter(["cmdline", "ppid"]):
            command_line = " ".join(process.info["cmdline"] or [])
            if all(needle in command_line for needle in needles):
                found.append(process.pid)
        # Keep only roots: a match whose parent also matches is counted through the parent.
        matched = set(found)
        roots = []
        for pid in found:
            with contextlib.suppress(psutil.Error):
                if psutil.Process(pid).ppid() not in matched:
                    roots.append(pid)
        return roots

    return find


class CpuMeter:
    """CPU-seconds of a Spark stream (this process + its JVM) and of a PostgreSQL server we run
    (``postgres_pid``, its postmaster; None when it is not ours), and the 1-minute load average."""

    def __init__(self, postgres_pid: int | None) -> None:
        self._me = psutil.Process()
        self._postgres = psutil.Process(postgres_pid) if postgres_pid else None
        self._start = self._read()
        self._started_at = time.monotonic()
        self._end: tuple[tuple[float, float], float] | None = None
        self._load: list[float] = []

    def freeze(self) -> tuple[tuple[float, float], float]:
        """End the window now (the phase's load ended): :meth:`text` reports it, not what follows."""
        self.sample_load()
        self._end = (self._read(), time.monotonic())
        return self._end

    @staticmethod
    def _seconds(members: list[psutil.Process]) -> float:
        total = 0.0
        for member in members:
            try:
                times = member.cpu_times()
                total += times.user + times.system
            except psutil.Error:
                continue
        return total

    def _read(self) -> tuple[float, float]:
        # This process and its JVM only: the producers are children of this process too.
        jvms = [child for child in self._me.children(recursive=True) if "java" in child.name()]
        stream = self._seconds([self._me, *jvms])
        if self._postgres is None:
            return stream, float("nan")
        # Backends that already exited (the sink's closes when a phase ends) are in the
        # postmaster's children_* times once reaped; live ones are read directly. A backend
        # reaped between the two reads would be in neither (read right after a drain's
        # connections closed, that lost nearly all of the drain's PostgreSQL time), so the
        # two are read again until the set of backends did not change around them.
        for _ in range(100):
            try:
                before = {child.pid for child in self._postgres.children(recursive=True)}
                reaped = self._postgres.cpu_times()
                live = self._seconds(self._postgres.children(recursive=True))
                after = {child.pid for child in self._postgres.children(recursive=True)}
            except psutil.Error:
                return stream, float("nan")
            if after == before:
                break
            time.sleep(0.01)
        return stream, reaped.user + reaped.system + reaped.children_user + reaped.children_system + live

    def sample_load(self) -> None:
        self._load.append(os.getloadavg()[0])

    def text(self, events: int) -> str:
        """The window's load, the stream's share of a core, and CPU-seconds per 100k of its ``events``."""
        reading, ended_at = self._end or self.freeze()
        stream, postgres = (now - then for now, then in zip(reading, self._start, strict=True))
        per = 100_000 / max(events, 1)
        load = sum(self._load) / len(self._load)
        core = stream / max(ended_at - self._started_at, 1e-9)
        postgres_text = "" if postgres != postgres else f", PostgreSQL {postgres * per:.2f}"
        cost = f"CPU-s per 100k events: stream {stream * per:.2f}{postgres_text}"
        return f"[load {load:.1f}; stream {core:.2f} of a core; {cost}]"

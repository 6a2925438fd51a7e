"""`shopstream bench e2e`: the whole pipeline under a steady load, with a report.

It runs the freshness benchmark's loop (producer -> Kafka -> Spark stream -> Bronze ->
Bronze sensor -> dbt -> Gold, on a database, topic and Dagster instance of its own) with
the Dagster webserver and the dashboard beside it and a headless browser watching the
dashboard's Live Stream page, samples CPU and memory of every component, prints one
summary line and writes ``docs/benchmarks.md`` with a table and a chart.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from shopstream.command import fail, finite
from shopstream.embedded import ServiceError, free_port
from shopstream.postgres_server import EmbeddedPostgres
from shopstream.processes import spawn, stop_group
from shopstream.services import endpoints
from shopstream.settings import Settings, SettingsError, load_settings
from shopstream_cli.bench.freshness import FreshnessResult, run_freshness_benchmark
from shopstream_cli.bench.measure import ComponentUsage, ResourceSampler, percentile, pids_matching

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCS = REPO_ROOT / "docs"
CHROMIUM = "/usr/bin/chromium"

# The reference system's published figures (its README, "Performance").
REFERENCE = {
    "throughput_events_per_s": 1_000 / 60,
    "average_latency_s": 4.2,
    "memory_mb": {"broker": 800, "postgresql": 600, "spark": 2500, "dashboard": 250},
    "cpu_percent": {"broker": 15, "postgresql": 10, "spark": 45, "dashboard": 5},
}


@dataclass(frozen=True)
class E2EResult:
    rate: float
    seconds: float
    freshness: FreshnessResult
    usage: dict[str, ComponentUsage]
    wall_seconds: float

    @property
    def sustained_events_per_s(self) -> float:
        return len(self.freshness.bronze_latency_s) / self.seconds if self.seconds else 0.0


def _components(settings: Settings) -> dict[str, object]:
    """Root processes of each component, found by what their command lines contain."""
    postgres_data = str(EmbeddedPostgres(settings).data_dir)
    return {
        "producer": pids_matching("streaming.produce_command"),
        "broker": pids_matching("kafka.Kafka"),
        "spark": pids_matching("stream_command"),
        "postgresql": pids_matching("postgres", "-D", postgres_data),
        "dagster": pids_matching("dagster-"),
        "dashboard": pids_matching("streamlit", "run"),
    }


@contextlib.contextmanager
def _viewer(url: str, stop: threading.Event) -> Iterator[None]:
    """A headless Chromium keeping the Live Stream page open, as a person watching it would."""
    if not Path(CHROMIUM).exists():
        yield
        return

    def watch() -> None:
        from playwright.sync_api import sync_playwright

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM,
                args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
            )
            page = browser.new_page()
            with contextlib.suppress(Exception):
                page.goto(f"{url}/live_stream", timeout=60_000)
            stop.wait()
            browser.close()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(30)


def run_e2e_benchmark(settings: Settings, *, rate: float, seconds: float, warmup: float) -> E2EResult:
    found = endpoints(settings)
    env = {**os.environ, **found.environment(), "SHOPSTREAM_HOME": str(settings.home)}
    dashboard_port, dagster_port = free_port(), free_port()
    logs = settings.home / "bench" / "e2e-logs"
    shopstream = [sys.executable, "-m", "shopstream_cli.cli"]
    # The UI and the dashboard run on the user's database: they are measured for their own cost.
    side_processes = [
        spawn([*shopstream, "dashboard", "--port", str(dashboard_port)], env=env, log_path=logs / "dashboard.log"),
        spawn(
            [*shopstream, "dagster", "webserver"],
            env={**env, "SHOPSTREAM_DAGSTER_PORT": str(dagster_port)},
            log_path=logs / "dagster-webserver.log",
        ),
    ]
    stop_viewer = threading.Event()
    try:
        with (
            _viewer(f"http://127.0.0.1:{dashboard_port}", stop_viewer),
            ResourceSampler(_components(settings), interval=2.0) as sampler,
        ):
            freshness = run_freshness_benchmark(settings, rate=rate, seconds=seconds, warmup=warmup)
    finally:
        for process in side_processes:
            stop_group(process, timeout=30)
    return E2EResult(rate, seconds, freshness, sampler.usage, sampler.wall_seconds)


def _ms(values: list[float], fraction: float) -> str:
    return f"{percentile(values, fraction):.2f} s" if values else "n/a"


def summary_line(result: E2EResult) -> str:
    fresh = result.freshness
    return (
        f"e2e: {result.sustained_events_per_s:,.0f} events/s into Bronze at {result.rate:,.0f}/s offered; "
        f"event->Bronze p50 {_ms(fresh.bronze_latency_s, 0.5)} p95 {_ms(fresh.bronze_latency_s, 0.95)} "
        f"p99 {_ms(fresh.bronze_latency_s, 0.99)}; event->Gold p50 {_ms(fresh.gold_latency_s, 0.5)} "
        f"p95 {_ms(fresh.gold_latency_s, 0.95)} p99 {_ms(fresh.gold_latency_s, 0.99)}; "
        f"{len(fresh.dbt_run_s)} dbt runs, p50 {_ms(fresh.dbt_run_s, 0.5)}"
    )


def write_report(result: E2EResult, docs: Path = DOCS) -> Path:
    """docs/benchmarks.md and the chart it shows (docs/benchmarks.png)."""
    from plotly.subplots import make_subplots

    docs.mkdir(parents=True, exist_ok=True)
    fresh = result.freshness
    load = fresh.load_averages
    load_text = f"{sum(load) / len(load):.1f} (min {min(load):.1f}, max {max(load):.1f})" if load else "n/a"
    lines = [
        "# Benchmarks",
        "",
        f"Written by `shopstream bench e2e --rate {result.rate:g} --duration {result.seconds:g}` on "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC: {os.cpu_count()} cores, {platform.machine()}, "
        f"1-minute load average while measuring {load_text}.",
        "",
        "![latency and resources](benchmarks.png)",
        "",
        "| figure | ShopStream | reference system |",
        "|---|---|---|",
        f"| sustained events/s into Bronze | {result.sustained_events_per_s:,.0f} | "
        f"{REFERENCE['throughput_events_per_s']:.0f} (1,000/min) |",
        f"| event -> Bronze p50 / p95 / p99 | {_ms(fresh.bronze_latency_s, 0.5)} / "
        f"{_ms(fresh.bronze_latency_s, 0.95)} / {_ms(fresh.bronze_latency_s, 0.99)} | - |",
        f"| event -> Gold p50 / p95 / p99 | {_ms(fresh.gold_latency_s, 0.5)} / {_ms(fresh.gold_latency_s, 0.95)} / "
        f"{_ms(fresh.gold_latency_s, 0.99)} | {REFERENCE['average_latency_s']} s average (to dashboard) |",
        f"| dbt runs (sensor) p50 / max | {_ms(fresh.dbt_run_s, 0.5)} / {max(fresh.dbt_run_s):.1f} s | - |"
        if fresh.dbt_run_s
        else "| dbt runs | none finished | - |",
        f"| events measured / never reached Gold | {fresh.events:,} / {fresh.unreached:,} | - |",
        "",
        "| component | CPU (% of one core, mean) | memory mean / peak (MB) | reference CPU | reference memory |",
        "|---|---|---|---|---|",
    ]
    for name, usage in result.usage.items():
        reference_cpu = REFERENCE["cpu_percent"].get(name)
        reference_mb = REFERENCE["memory_mb"].get(name)
        lines.append(
            f"| {name} | {usage.cpu_percent(result.wall_seconds):.0f}% | "
            f"{usage.mean_rss_mb:,.0f} / {usage.peak_rss_mb:,.0f} | "
            f"{f'{reference_cpu}%' if reference_cpu is not None else '-'} | "
            f"{f'{reference_mb:,}' if reference_mb is not None else '-'} |"
        )
    lines += [
        "",
        "CPU is the component's whole process tree (the Spark driver with its JVM, PostgreSQL with its "
        "backends, Dagster's daemon, webserver and run workers). The reference system's figures are "
        "from its README (Intel i5-3210M, 12 GB); it ran Redpanda rather than Apache Kafka.",
        "",
        f"Summary line: `{summary_line(result)}`",
        "",
    ]
    report = docs / "benchmarks.md"
    report.write_text("\n".join(lines))

    figure = make_subplots(
        rows=1, cols=2, subplot_titles=("Latency percentiles (s)", "Memory per component (MB, mean)")
    )
    for label, values in (("event -> Bronze", fresh.bronze_latency_s), ("event -> Gold", fresh.gold_latency_s)):
        if values:
            fractions = (0.5, 0.95, 0.99)
            figure.add_bar(
                x=["p50", "p95", "p99"], y=[percentile(values, f) for f in fractions], name=label, row=1, col=1
            )
    figure.add_bar(
        x=list(result.usage),
        y=[usage.mean_rss_mb for usage in result.usage.values()],
        name="memory",
        showlegend=False,
        row=1,
        col=2,
    )
    figure.update_layout(width=1100, height=420, template="plotly_white", barmode="group")
    figure.write_image(docs / "benchmarks.png")
    return report


def e2e_benchmark_command(
    rate: Annotated[
        float, typer.Option("--rate", min=1.0, callback=finite, help="Events per second the producer sends.")
    ] = 1_000,
    duration: Annotated[float, typer.Option("--duration", min=10.0, callback=finite, help="Measured seconds.")] = 180,
    warmup: Annotated[float, typer.Option("--warmup", min=0.0, callback=finite, help="Seconds before measuring.")] = 60,
    docs: Annotated[Path, typer.Option("--docs", help="Where benchmarks.md and its chart go.")] = DOCS,
) -> None:
    """Run the full pipeline under load; print one line and write docs/benchmarks.md."""
    try:
        settings = load_settings()
        if shutil.which("chromium") is None and not Path(CHROMIUM).exists():
            typer.echo("note: no chromium: the chart cannot be rendered and no browser watches the dashboard", err=True)
        result = run_e2e_benchmark(settings, rate=rate, seconds=duration, warmup=warmup)
    except (SettingsError, ServiceError) as error:
        raise fail(error) from None
    report = write_report(result, docs)
    typer.echo(summary_line(result))
    typer.echo(f"report: {report}")


__all__ = ["e2e_benchmark_command", "run_e2e_benchmark", "write_report"]

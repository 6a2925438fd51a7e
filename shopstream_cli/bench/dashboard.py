"""`shopstream bench dashboard`: each dashboard page's query time over a large Bronze.

The benchmark fills a database of its own with simulator history (10M Bronze rows by
default, through the stream's writer on its bulk path) plus a few minutes of "live"
traffic through the same writer message by message (with late, duplicate and broken
messages, so the Live Stream page has rejects), builds Silver and Gold with the real dbt
project, then times every query each page runs (caches
cleared, median of several runs) and each page's full render through Streamlit's AppTest.
Targets: every page's queries under 200 ms, a full page render under 1 s. With ``--sizes``
each size is measured in turn (or, with ``--rounds``, all held at once and measured in
alternating passes) and the queries are shown side by side (``dashboard_sizes``): the
largest size's within 1.3x of the smallest's.

:func:`seed_shop` is also how the dashboard tests fill their database, so the tests and the
benchmark see data made the same way: the simulator, the stream's validation rules and
writer, and dbt.
"""

from __future__ import annotations

import contextlib
import logging
import math
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as time_of_day
from pathlib import Path
from typing import Annotated

import psycopg
import typer

from shopstream import database
from shopstream.command import finite
from shopstream.settings import environment_overridden
from shopstream_cli.bench.dashboard_sizes import Renders, Timings, median_of_passes, parse_sizes, side_by_side
from shopstream_cli.bench.dbt import benchmark_admin_url, dbt_environment, run_dbt
from streaming.migrations import migrate

REPO_ROOT = Path(__file__).resolve().parents[2]
PAGES_DIR = REPO_ROOT / "dashboard" / "app_pages"
PAGES = ("overview", "user_behavior", "live_stream")
QUERY_TARGET_MS = 200.0
RENDER_TARGET_MS = 1000.0
DEFAULT_TOPIC = "bench-clickstream"


@dataclass(frozen=True)
class SeedSummary:
    history_rows: int
    live_messages: int
    first_event: datetime
    load_seconds: float
    dbt_seconds: float


def _say(message: str) -> None:
    typer.echo(message, err=True)


def seed_shop(
    database_url: str,
    *,
    topic: str = DEFAULT_TOPIC,
    history_rows: int = 30_000,
    history_days: float = 14.0,
    live_messages: int = 3_000,
    live_rate: float = 12.0,
    bad_ratio: float = 0.05,
    seed: int = 20_260_103,
    chunk: int = 250_000,
    live_batch: int = 500,
    build_gold: bool = True,
    progress: Callable[[str], None] = _say,
) -> SeedSummary:
    """Fill a migrated database: history by the writer's bulk path, recent traffic message by message, then dbt.

    The history spans ``history_days`` and ends where the live traffic starts; the live
    traffic (``live_rate`` events/s, ``bad_ratio`` broken messages) ends about now, so the
    Live Stream page's last minutes are populated. Both share one topic's offsets.
    """
    from streaming.bronze_load import (
        KafkaPositions,
        bulk_load_valid_messages,
        write_messages,
    )  # pyarrow: only when a benchmark runs
    from streaming.simulator import Simulator

    now = datetime.now(UTC).replace(microsecond=0)
    live_start = now - timedelta(seconds=live_messages / live_rate)
    history_span = timedelta(days=history_days)
    history_start = live_start - history_span
    positions = KafkaPositions(topic)
    started = time.perf_counter()
    with database.connect(database_url, autocommit=True) as conn:
        history = Simulator(seed, start=history_start, events_per_second=history_rows / history_span.total_seconds())
        loaded = 0
        while loaded < history_rows:
            batch = history.take(min(chunk, history_rows - loaded))
            bulk_load_valid_messages(conn, batch.keys, batch.values, positions)
            loaded += len(batch)
            rate = loaded / max(time.perf_counter() - started, 1e-9)
            progress(f"  bronze history: {loaded:,}/{history_rows:,} rows ({rate:,.0f} rows/s)")
        live = Simulator(seed + 1, start=live_start, events_per_second=live_rate, bad_ratio=bad_ratio)
        sent = 0
        while sent < live_messages:
            batch = live.take(min(live_batch, live_messages - sent))
            write_messages(conn, batch.keys, batch.values, positions)
            sent += len(batch)
        progress(f"  bronze live: {sent:,} messages through the stream's writer")
        conn.execute("vacuum analyze bronze.clickstream_events")
        conn.execute("vacuum analyze bronze.ingest_batches")
    load_seconds = time.perf_counter() - started
    dbt_seconds = 0.0
    if build_gold:
        dbt_seconds = build_silver_and_gold(database_url, progress=progress)
    return SeedSummary(history_rows, live_messages, history_start, load_seconds, dbt_seconds)


def build_silver_and_gold(database_url: str, *, progress: Callable[[str], None] = _say) -> float:
    """``dbt run`` of the real project, then what autovacuum would have done soon after.

    Vacuumed, not only analyzed: a freshly built table of tens of millions of rows draws an
    autovacuum that runs for minutes, and the queries measured beside it would time the vacuum.
    """
    with tempfile.TemporaryDirectory(prefix="shopstream-dashboard-dbt-") as target:
        progress("  dbt run")
        result = run_dbt(["run"], dbt_environment(database_url), target_path=Path(target)).check()
    with database.connect(database_url, autocommit=True) as conn:
        relations = conn.execute(
            "select schemaname || '.' || tablename from pg_tables where schemaname in ('silver', 'gold')"
        ).fetchall()
        for (relation,) in relations:
            conn.execute(f"vacuum analyze {relation}")
        # The vacuums dirty every page of the fresh tables (hint bits, visibility map); left to the
        # checkpointer, gigabytes are written out over the next minutes, beside the measured queries.
        # A role without pg_checkpoint (an external server): the server's own checkpoint will come.
        with contextlib.suppress(psycopg.errors.InsufficientPrivilege):
            conn.execute("checkpoint")
    return result.seconds


# ---------------------------------------------------------------------------------------
# Measuring


@contextmanager
def dashboard_environment(dashboard_url: str, topic: str) -> Iterator[None]:
    """Point the in-process dashboard code at ``dashboard_url`` and ``topic``."""
    with environment_overridden({"SHOPSTREAM_DASHBOARD_DATABASE_URL": dashboard_url, "SHOPSTREAM_TOPIC": topic}):
        yield


def page_queries(first_day: date, last_day: date, topic: str) -> dict[str, list[tuple[str, Callable[[], object]]]]:
    """Every query each page runs on its first render, as (label, call)."""
    from dashboard import overview_data, periods, queries
    from dashboard.periods import Filters

    period = Filters(last_day - timedelta(days=6), last_day)
    filtered = Filters(period.start, period.end, countries=("Nigeria",), devices=("Mobile",))
    by_category = Filters(period.start, period.end, categories=("Electronics",))
    # Every day Gold holds: the largest period a user can pick.
    whole = Filters(first_day, last_day, countries=("Nigeria",), categories=("Fashion",))
    # Intraday: the newest day by the hour, and its noon hour under a country filter.
    one_day = Filters.of(periods.days(last_day, last_day))
    noon = datetime.combine(last_day, datetime.min.time(), tzinfo=UTC) + timedelta(hours=12)
    last_hour = Filters.of(periods.hours_holding(noon, noon), countries=("Nigeria",))
    # Each preset as the period control resolves it at the newest data (a reused database's data
    # may end before now): what one page view with that preset runs.
    newest = min(datetime.now(UTC), datetime.combine(last_day, time_of_day(23, 59), tzinfo=UTC))
    presets = {
        preset: Filters.of(periods.resolve(preset, newest)) for preset in periods.PRESETS if preset != periods.CUSTOM
    }
    by_preset = {
        f"overview, {preset.lower()}": [
            ("trend counts", lambda filters=filters: overview_data.trend_counts(filters)),
            ("previous period", lambda filters=filters: overview_data.trend_counts(filters.previous())),
            ("funnel", lambda filters=filters: overview_data.funnel(filters)),
            ("top products", lambda filters=filters: overview_data.top_products(filters)),
        ]
        for preset, filters in presets.items()
    }
    return {
        "overview": [
            ("data bounds", overview_data.data_bounds),
            ("filter options", overview_data.filter_options),
            ("daily counts", lambda: overview_data.daily_counts(period)),
            ("previous period", lambda: overview_data.daily_counts(period.previous())),
            ("funnel", lambda: overview_data.funnel(period)),
            ("top products", lambda: overview_data.top_products(period)),
        ],
        "overview, country+device filter": [
            ("daily counts", lambda: overview_data.daily_counts(filtered)),
            ("previous period", lambda: overview_data.daily_counts(filtered.previous())),
            ("funnel", lambda: overview_data.funnel(filtered)),
            ("top products", lambda: overview_data.top_products(filtered)),
        ],
        "overview, category filter": [
            ("daily counts", lambda: overview_data.daily_counts(by_category)),
            ("previous period", lambda: overview_data.daily_counts(by_category.previous())),
            ("funnel", lambda: overview_data.funnel(by_category)),
            ("top products", lambda: overview_data.top_products(by_category)),
        ],
        "overview, whole history": [
            ("daily counts", lambda: overview_data.daily_counts(whole)),
            ("funnel", lambda: overview_data.funnel(whole)),
            ("top products", lambda: overview_data.top_products(whole)),
        ],
        "overview, one day by hour": [
            ("hourly counts", lambda: overview_data.trend_counts(one_day)),
            ("previous period", lambda: overview_data.trend_counts(one_day.previous())),
            ("funnel", lambda: overview_data.funnel(one_day)),
            ("top products", lambda: overview_data.top_products(one_day)),
        ],
        "overview, last hour, filtered": [
            ("hourly counts", lambda: overview_data.trend_counts(last_hour)),
            ("previous period", lambda: overview_data.trend_counts(last_hour.previous())),
            ("funnel", lambda: overview_data.funnel(last_hour)),
        ],
        "overview, drill-down": [
            ("funnel step", lambda: overview_data.drill_events(period, event_type="purchase")),
            ("product", lambda: overview_data.drill_events(filtered, product_id="P001")),
            ("day", lambda: overview_data.drill_events(Filters(last_day, last_day))),
            ("hour", lambda: overview_data.drill_events(last_hour)),
            ("7 days page 20", lambda: overview_data.drill_events(period, page=19)),
            ("7 days last page", lambda: overview_data.drill_events(period, page=overview_data.DRILL_MAX_PAGES - 1)),
        ],
        **by_preset,
        "user_behavior": [
            ("rfm tiers", queries.rfm_tiers),
            ("hot leads", lambda: queries.hot_leads(10_000)),
            ("lifecycle stages", queries.lifecycle_stages),
            ("rfm scores", queries.rfm_scores),
            ("rfm users", queries.rfm_users),
        ],
        "live_stream": [
            ("events per second", lambda: queries.events_per_second(5)),
            ("ingest summary", lambda: queries.ingest_summary(topic)),
            ("gold status", queries.gold_status),
            ("committed offsets", lambda: queries.committed_offsets(topic)),
            ("rejects by reason", lambda: queries.rejects_by_reason(topic)),
            ("latest events", queries.latest_events),
            ("last batches", lambda: queries.last_batches(topic)),
        ],
    }


def _median_ms(call: Callable[[], object], repeats: int) -> float:
    import streamlit as st

    from dashboard.db import DataUnavailable

    timings = []
    for _ in range(repeats):
        st.cache_data.clear()
        started = time.perf_counter()
        try:
            call()
        except DataUnavailable:  # the statement timeout: reported as inf, not a crash
            return math.inf
        timings.append(1000.0 * (time.perf_counter() - started))
    return statistics.median(timings)


def render_ms(page: str, repeats: int) -> float:
    """Median wall time of one full AppTest run of ``page`` with cold query caches."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    timings = []
    for _ in range(repeats):
        st.cache_data.clear()
        app = AppTest.from_file(str(PAGES_DIR / f"{page}.py"), default_timeout=60)
        started = time.perf_counter()
        app.run()
        timings.append(1000.0 * (time.perf_counter() - started))
        if app.exception:
            raise RuntimeError(f"page {page} raised: {app.exception[0].message}")
    return statistics.median(timings)


def measure(
    dashboard_url: str, topic: str, repeats: int
) -> tuple[dict[str, list[tuple[str, float]]], dict[str, float]]:
    """(per page: (query, median ms)), (page -> median full render ms)."""
    # Streamlit warns on every cached call made outside `streamlit run`.
    from streamlit.logger import set_log_level

    set_log_level(logging.ERROR)
    from dashboard import overview_data

    with dashboard_environment(dashboard_url, topic):
        first_day, last_day = overview_data.data_bounds()
        if first_day is None or last_day is None:
            raise RuntimeError("Gold has no daily metrics: nothing to measure")
        timings = {
            page: [(label, _median_ms(call, repeats)) for label, call in calls]
            for page, calls in page_queries(first_day, last_day, topic).items()
        }
        renders = {page: render_ms(page, repeats) for page in PAGES}
    return timings, renders


def report(timings: dict[str, list[tuple[str, float]]], renders: dict[str, float]) -> str:
    lines = ["| page | queries (median, cold cache) | all queries | full render |", "|---|---|---:|---:|"]
    for page, queries_ms in timings.items():
        total = sum(ms for _, ms in queries_ms)
        detail = ", ".join(f"{label} {ms:.0f}" if math.isfinite(ms) else f"{label} >15 s" for label, ms in queries_ms)
        render = renders.get(page)
        shown_total = f"{total:.0f} ms" if math.isfinite(total) else "> 15 s (statement timeout)"
        lines.append(f"| {page} | {detail} | {shown_total} | {f'{render:.0f} ms' if render else '–'} |")
    return "\n".join(lines)


def _reader_url(admin_url: str, name: str) -> str:
    """The read-only role on the benchmark database when it exists (as the dashboard runs)."""
    from shopstream.postgres_server import EmbeddedPostgres
    from shopstream.settings import load_settings

    settings = load_settings()
    if settings.dashboard_database_url:
        return database.with_database(settings.dashboard_database_url, name)
    if settings.database_url is None and EmbeddedPostgres(settings).port is not None:
        return database.with_database(EmbeddedPostgres(settings).reader_url(), name)
    return database.with_database(admin_url, name)


def _database_name(rows: int) -> str:
    return f"shopstream_bench_dashboard_{rows}"


def _seed_size(admin_url: str, rows: int, *, days: float, live_messages: int, seed: int) -> None:
    """A new benchmark database of ``rows`` Bronze rows and the Gold built from them."""
    name = _database_name(rows)
    url = database.with_database(admin_url, name)
    database.drop_database(admin_url, name)
    database.ensure_database(admin_url, name)
    migrate(url)
    _say(f"{rows:,} Bronze rows over {days:g} days into database {name}")
    summary = seed_shop(
        url, topic=DEFAULT_TOPIC, history_rows=rows, history_days=days, live_messages=live_messages, seed=seed
    )
    _say(f"  loaded in {summary.load_seconds:.0f} s; dbt run {summary.dbt_seconds:.0f} s")


def _measure_size(admin_url: str, rows: int, repeats: int) -> tuple[Timings, Renders]:
    started = time.perf_counter()
    timings, renders = measure(_reader_url(admin_url, _database_name(rows)), DEFAULT_TOPIC, repeats)
    _say(f"  {rows:,} rows measured in {time.perf_counter() - started:.0f} s")
    return timings, renders


def bench_sizes(
    admin_url: str,
    sizes: list[int],
    *,
    rounds: int,
    days: float,
    live_messages: int,
    repeats: int,
    seed: int,
    reuse: bool,
    keep: bool,
) -> dict[int, tuple[Timings, Renders]]:
    """Seed a database per size (unless ``reuse``), measure them in ``rounds`` alternating passes (small
    to large, then large to small, ...), drop them (unless ``keep``); each figure is the median of its passes.

    Measured one after the other, a size's figures also carry what the machine did in its minute
    (a checkpoint, another process): alternated, both sizes see the same.
    """
    try:
        for rows in sizes:
            if reuse:
                migrate(database.with_database(admin_url, _database_name(rows)))  # re-grants the reader role
            else:
                _seed_size(admin_url, rows, days=days, live_messages=live_messages, seed=seed)
        passes: dict[int, list[tuple[Timings, Renders]]] = {rows: [] for rows in sizes}
        for round_index in range(rounds):
            if rounds > 1:
                _say(f"  round {round_index + 1}/{rounds}")
            for rows in sizes if round_index % 2 == 0 else sizes[::-1]:
                passes[rows].append(_measure_size(admin_url, rows, repeats))
        return {rows: median_of_passes(passes[rows]) for rows in sizes}
    finally:
        if not keep:
            for rows in sizes:
                database.drop_database(admin_url, _database_name(rows))


def _print_size(size: int, timings: Timings, renders: Renders) -> None:
    typer.echo(report(timings, renders))
    # Every group counts, the filtered Overviews included: the target is per page view.
    worst_page = max(timings, key=lambda page: sum(ms for _, ms in timings[page]))
    worst_queries = sum(ms for _, ms in timings[worst_page])
    worst_render = max(renders.values())
    typer.echo(
        f"\n{size:,} Bronze rows: slowest page's queries {worst_queries:.0f} ms ({worst_page}; target < "
        f"{QUERY_TARGET_MS:.0f} ms), slowest full render {worst_render:.0f} ms (target < {RENDER_TARGET_MS:.0f} ms)"
    )


def dashboard_benchmark_command(
    rows: Annotated[int, typer.Option(min=1, help="Bronze history rows (the target is stated for 10M).")] = 10_000_000,
    sizes: Annotated[
        str | None,
        typer.Option(
            help="Bronze sizes to compare side by side, comma-separated (e.g. 5000000,50000000); replaces --rows."
        ),
    ] = None,
    days: Annotated[float, typer.Option(min=0.01, callback=finite, help="Days the history spans.")] = 7.0,
    live_messages: Annotated[int, typer.Option(min=0, help="Recent messages through the stream's writer.")] = 5_000,
    repeats: Annotated[int, typer.Option(min=1, help="Timed runs per query and per page (median).")] = 5,
    seed: Annotated[int, typer.Option(help="Simulator seed.")] = 20_260_103,
    database_url: Annotated[
        str | None,
        typer.Option(help="Server to use (a role that may create databases); default: the services'."),
    ] = None,
    reuse: Annotated[bool, typer.Option(help="Measure existing benchmark databases of these sizes.")] = False,
    keep: Annotated[bool, typer.Option(help="Keep the benchmark database for --reuse.")] = False,
    rounds: Annotated[
        int,
        typer.Option(
            min=1,
            help="Hold every size's database at once and measure them in this many alternating passes (each"
            " figure the median of its passes); 1: one size after the other, one database at a time.",
        ),
    ] = 1,
) -> None:
    """Time every dashboard page's queries and full render over ROWS Bronze rows and the Gold built from them;
    with --sizes, over each size in turn (one database at a time) or alternated (--rounds), then side by side."""
    row_counts = parse_sizes(sizes) if sizes is not None else [rows]
    admin_url = benchmark_admin_url(database_url)
    options = {
        "days": days,
        "live_messages": live_messages,
        "repeats": repeats,
        "seed": seed,
        "reuse": reuse,
        "keep": keep,
    }
    if rounds > 1:
        results = bench_sizes(admin_url, row_counts, rounds=rounds, **options)
        for size, (timings, renders) in results.items():
            _print_size(size, timings, renders)
    else:
        results = {}
        for size in row_counts:  # one database at a time, each size's table as soon as it is measured
            results |= bench_sizes(admin_url, [size], rounds=1, **options)
            _print_size(size, *results[size])
    if len(results) > 1:
        passes = f"medians of {rounds} alternating passes" if rounds > 1 else "measured one size after the other"
        typer.echo(f"\nSide by side ({passes}):\n" + side_by_side(results))

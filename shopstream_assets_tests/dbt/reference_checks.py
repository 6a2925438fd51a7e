"""Every Silver and Gold relation dbt builds, against two independent answers from the same Bronze.

(a) The pandas reference (``gold_reference``), which follows the definitions in
``dbt_project/models/*/_*.yml``, not the SQL. (b) A full refresh of the models, built in a
database of its own from a copy of Bronze, so the live relations (and a pipeline still
attached to them) are not touched: incremental runs, late events and recoveries must leave
exactly what a build from nothing gives.

The relations and their keys come from the dbt manifest of that full refresh (every model,
keyed by its unique index), not from a hand list: a new model without a pandas reference
fails here until it has one. A model dbt never full-refreshes (``full_refresh=false``: the
run log ``gold.refresh_log``) is a log of runs, not a function of the data, and is left out.

Call these once the pipeline has caught up and stopped writing: Bronze, the pandas
reference and the live relations are read in one repeatable-read transaction, but a dbt run
replacing a table meanwhile would still show up as a difference.

Shown to fail (issue 29), each on a deliberately broken model, then reverted:
- mart_user_behavior's Dormant rule moved from ``recency_days > 14`` to ``>= 14``: the pandas
  comparison fails in ``dbt/test_dbt_project.py`` (17 users 14 days away, "got 'Dormant',
  expected 'Repeat Buyer'"); dbt's own unit tests pass. A full refresh runs the same SQL, so
  only the pandas reference can see a wrong definition, and only on history long enough.
- mart_product_daily left out of incremental updates (its cursor pushed past every batch):
  both comparisons fail after the sensor's recovery run in ``e2e/test_dbt_fault.py`` (136
  missing rows, 288 values), where the mart_daily_metrics check alone held.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psycopg

from shopstream import database
from shopstream_assets_tests.dbt import gold_reference as reference
from shopstream_assets_tests.dbt.dbt_runs import run_dbt_in_process
from streaming.migrations import migrate

# The reference keeps money in integer cents as <column>_cents; where the relation's column
# is not simply the name without the suffix, it is named here.
RENAMES = {
    "cart_value_cents": "cart_value",
    "abandoned_cart_cents": "abandoned_cart_value",
    "price_cents": "product_price",
    "line_cents": "line_revenue",
}
FULL_REFRESH_LABEL = "a full refresh from the same Bronze"
SHOWN_DIFFERENCES = 8  # per relation; the counts say how many there are in all

Key = tuple[Any, ...]


@dataclass(frozen=True)
class Relation:
    name: str  # schema.table
    key: tuple[str, ...]  # the columns of its unique index


def model_relations(manifest: Mapping[str, Any]) -> list[Relation]:
    """Every model a full refresh rebuilds from the data, keyed by its unique index."""
    relations = []
    for node in manifest["nodes"].values():
        if node["resource_type"] != "model" or node["config"].get("full_refresh") is False:
            continue
        unique = [tuple(index["columns"]) for index in node["config"].get("indexes", []) if index.get("unique")]
        name = f"{node['schema']}.{node['name']}"
        assert len(unique) == 1, f"{name} needs exactly one unique index to be compared row for row: {unique}"
        relations.append(Relation(name, unique[0]))
    return sorted(relations, key=lambda relation: relation.name)


# ---------------------------------------------------------------------------------------
# Differences, readable


@dataclass
class TableDiff:
    """How one relation differs from what was expected; empty when it does not."""

    relation: str
    expected_label: str
    rows: tuple[int, int] = (0, 0)  # (actual, expected)
    missing: list[Key] = field(default_factory=list)  # expected keys the relation lacks
    extra: list[Key] = field(default_factory=list)  # keys the relation has and should not
    changed: list[tuple[Key, str, Any, Any]] = field(default_factory=list)  # key, column, got, expected
    uncovered: list[str] = field(default_factory=list)  # columns nobody computed an expectation for

    def __bool__(self) -> bool:
        return bool(self.missing or self.extra or self.changed or self.uncovered)

    def text(self) -> str:
        lines = [f"{self.relation} differs from {self.expected_label} ({self.rows[0]} rows vs {self.rows[1]})"]
        if self.uncovered:
            lines.append(f"  columns without an expectation: {', '.join(self.uncovered)}")
        for title, keys in (("missing", self.missing), ("unexpected", self.extra)):
            if keys:
                shown = ", ".join(repr(key) for key in keys[:SHOWN_DIFFERENCES])
                lines.append(f"  {len(keys)} {title} rows, keys: {shown}")
        if self.changed:
            columns = sorted({column for _, column, _, _ in self.changed})
            lines.append(f"  {len(self.changed)} values differ, in columns: {', '.join(columns)}")
            for key, column, got, want in self.changed[:SHOWN_DIFFERENCES]:
                lines.append(f"    {key!r} {column}: got {got!r}, expected {want!r}")
        return "\n".join(lines)


def _plain(value: Any) -> Any:
    """A key value as PostgreSQL returns it, whatever pandas made of it."""
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _to_cents(value: Any) -> Any:
    return None if value is None else int(value * 100)


def _unchanged(value: Any) -> Any:
    return value


def _actual_column(column: str) -> tuple[str, Callable[[Any], Any]]:
    """The relation's column for a reference column, and how to bring its value to the reference's unit."""
    if column.endswith("_cents"):
        return RENAMES.get(column, column.removesuffix("_cents")), _to_cents
    return RENAMES.get(column, column), _unchanged


def diff_against_reference(relation: Relation, actual: pd.DataFrame, expected: pd.DataFrame) -> TableDiff:
    """Row for row by key: every column the relation has must be one the reference computes, and equal
    (money in cents exactly, floats to 1e-9 relative)."""
    diff = TableDiff(relation.name, "the pandas reference", (len(actual), len(expected)))
    if expected.empty and len(expected.columns) == 0:  # the reference had no row to shape
        diff.extra = [tuple(row) for row in actual[list(relation.key)].itertuples(index=False)]
        return diff
    mapped = {_actual_column(column)[0]: column for column in expected.columns}
    diff.uncovered = [column for column in actual.columns if column not in mapped]
    # Plain tuples: indexing pandas rows cell by cell costs seconds on a few thousand rows.
    actual_names, expected_names = list(actual.columns), list(expected.columns)
    got_rows = _rows_by_key(actual_names, actual.itertuples(index=False, name=None), relation.key)
    want_rows = _rows_by_key(expected_names, expected.itertuples(index=False, name=None), relation.key)
    diff.missing = sorted((k for k in want_rows if k not in got_rows), key=repr)
    diff.extra = sorted((k for k in got_rows if k not in want_rows), key=repr)
    compared = []  # (reference position, relation position or None, conversion, relation column)
    for position, column in enumerate(expected_names):
        actual_column, convert = _actual_column(column)
        found = actual_names.index(actual_column) if actual_column in actual_names else None
        compared.append((position, found, convert, actual_column))
    for row_key in sorted(want_rows.keys() & got_rows.keys(), key=repr):
        got_row, want_row = got_rows[row_key], want_rows[row_key]
        for position, found, convert, actual_column in compared:
            want = want_row[position]
            if found is None:
                diff.changed.append((row_key, actual_column, "<no such column>", _plain(want)))
                continue
            got = convert(got_row[found])
            if not reference.same_value(want, got):
                diff.changed.append((row_key, actual_column, got, _plain(want)))
    return diff


def _rows_by_key(columns: Sequence[str], rows: Iterable[tuple], key: Sequence[str]) -> dict[Key, tuple]:
    positions = [list(columns).index(column) for column in key]
    return {tuple(_plain(row[position]) for position in positions): row for row in rows}


def diff_rows(relation: Relation, columns: Sequence[str], actual: Sequence[tuple], expected: Sequence[tuple],
              expected_label: str) -> TableDiff:  # fmt: skip
    """Two readings of the same relation (same query, same types): every value equal, row for row by key."""
    diff = TableDiff(relation.name, expected_label, (len(actual), len(expected)))
    got_rows = _rows_by_key(columns, actual, relation.key)
    want_rows = _rows_by_key(columns, expected, relation.key)
    diff.missing = sorted((k for k in want_rows if k not in got_rows), key=repr)
    diff.extra = sorted((k for k in got_rows if k not in want_rows), key=repr)
    for row_key in sorted(want_rows.keys() & got_rows.keys(), key=repr):
        for column, got, want in zip(columns, got_rows[row_key], want_rows[row_key], strict=True):
            if got != want:
                diff.changed.append((row_key, column, got, want))
    return diff


# ---------------------------------------------------------------------------------------
# Reading relations


def read_rows(conn: psycopg.Connection, relation: Relation) -> tuple[list[str], list[tuple]]:
    with conn.cursor() as cursor:
        cursor.execute(f"select * from {relation.name} order by {', '.join(relation.key)}")
        return [column.name for column in cursor.description], cursor.fetchall()


def read_table(conn: psycopg.Connection, relation: Relation) -> pd.DataFrame:
    columns, rows = read_rows(conn, relation)
    return pd.DataFrame(rows, columns=columns, dtype=object)


def snapshot(conn: psycopg.Connection, relations: Sequence[Relation]) -> dict[str, tuple[list[str], list[tuple]]]:
    return {relation.name: read_rows(conn, relation) for relation in relations}


def diff_snapshots(
    actual: Mapping[str, tuple[list[str], list[tuple]]],
    expected: Mapping[str, tuple[list[str], list[tuple]]],
    relations: Sequence[Relation],
    expected_label: str,
) -> dict[str, TableDiff]:
    diffs = {}
    for relation in relations:
        columns, rows = actual[relation.name]
        expected_columns, expected_rows = expected[relation.name]
        diff = diff_rows(relation, columns, rows, expected_rows, expected_label)
        if columns != expected_columns:
            diff.uncovered = [f"columns {columns} vs {expected_columns}"]
        diffs[relation.name] = diff
    return diffs


def diff_against_pandas(conn: psycopg.Connection, relations: Sequence[Relation]) -> dict[str, TableDiff]:
    """Every relation against the pandas reference from the Bronze ``conn`` sees; a relation the
    reference does not compute is a difference too."""
    expected_tables = reference.reference_tables(conn)
    diffs = {}
    for relation in relations:
        if relation.name not in expected_tables:
            diff = TableDiff(relation.name, "the pandas reference")
            diff.uncovered = ["the whole relation: gold_reference computes no such table"]
            diffs[relation.name] = diff
            continue
        expected = expected_tables[relation.name]
        diffs[relation.name] = diff_against_reference(relation, read_table(conn, relation), expected)
    return diffs


# ---------------------------------------------------------------------------------------
# A full refresh from the same Bronze, in a database of its own


def copy_bronze_events(source: psycopg.Connection, target_url: str) -> int:
    """bronze.clickstream_events as ``source`` sees it, into the same (migrated) table of ``target_url``."""
    copied = 0
    with database.connect(target_url) as target:
        with (
            source.cursor().copy("copy bronze.clickstream_events to stdout (format binary)") as out,
            target.cursor().copy("copy bronze.clickstream_events from stdin (format binary)") as into,
        ):
            for data in out:
                into.write(data)
                copied += len(data)
        target.commit()
    return copied


def full_refresh_database_name() -> str:
    """One per test process, so its parse of the project (which names the database) serves every check
    the process makes; pytest-xdist workers are processes, so two never share it."""
    return f"t_full_refresh_{os.getpid()}"


def build_full_refresh(full_refresh_url: str, work_dir: Path) -> dict[str, Any]:
    """`dbt run --full-refresh` of every model in that database, in this process; returns its manifest.

    dbt is parsed once per process and database and then handed the parsed project, as the
    Dagster run worker is (``dbt_runs``).
    """
    target_path = work_dir / f"full-refresh-{uuid.uuid4().hex[:8]}"
    return run_dbt_in_process(["run", "--full-refresh"], full_refresh_url, target_path).manifest()


@dataclass
class SilverGoldCheck:
    """The outcome of :func:`check_silver_and_gold`: per relation, its difference from each answer."""

    relations: list[Relation]
    against_full_refresh: dict[str, TableDiff]
    against_pandas: dict[str, TableDiff]
    seconds: dict[str, float]  # per phase

    def failures(self) -> list[str]:
        return [
            diff.text()
            for relation in self.relations
            for diff in (self.against_full_refresh[relation.name], self.against_pandas[relation.name])
            if diff
        ]

    def timing(self) -> str:
        phases = ", ".join(f"{phase} {seconds:.1f} s" for phase, seconds in self.seconds.items())
        return f"{sum(self.seconds.values()):.1f} s ({phases})"


class _Phases(dict[str, float]):
    @contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        began = time.monotonic()
        try:
            yield
        finally:
            self[phase] = self.get(phase, 0.0) + time.monotonic() - began


def check_silver_and_gold(database_url: str, work_dir: Path) -> SilverGoldCheck:
    """Every Silver and Gold relation of ``database_url`` against a full refresh from its Bronze and
    against the pandas reference (needs a role that may create databases)."""
    phases = _Phases()
    name = full_refresh_database_name()
    full_refresh_url = database.with_database(database_url, name)
    try:
        with phases.timed("Bronze copied"):
            database.drop_database(database_url, name)  # what an interrupted check left
            database.ensure_database(database_url, name)
            migrate(full_refresh_url)
        with database.connect(database_url) as live:
            # One snapshot for the Bronze copy, the pandas reference and the live relations.
            live.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            live.read_only = True
            with phases.timed("Bronze copied"):
                copy_bronze_events(live, full_refresh_url)
            with phases.timed("full refresh"):
                manifest = build_full_refresh(full_refresh_url, work_dir)
            relations = model_relations(manifest)
            with phases.timed("compared"):
                live_rows = snapshot(live, relations)
            with phases.timed("pandas"):
                against_pandas = diff_against_pandas(live, relations)
            live.rollback()
        with phases.timed("compared"), database.connect(full_refresh_url) as rebuilt:
            full_refresh_rows = snapshot(rebuilt, relations)
            against_full_refresh = diff_snapshots(live_rows, full_refresh_rows, relations, FULL_REFRESH_LABEL)
    finally:
        database.drop_database(database_url, name)
    return SilverGoldCheck(relations, against_full_refresh, against_pandas, dict(phases))


def assert_silver_and_gold_match(database_url: str, work_dir: Path) -> SilverGoldCheck:
    check = check_silver_and_gold(database_url, work_dir)
    failures = check.failures()
    assert not failures, "\n".join(failures)
    return check

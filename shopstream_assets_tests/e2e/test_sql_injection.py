"""User-facing input reaches PostgreSQL only as parameters or COPY data, never as SQL text.

The dashboard's filters are tested in shopstream_assets_tests/dashboard/test_queries.py
(test_filter_values_reach_postgresql_only_as_parameters). Here: event contents, the topic
name from settings and from `shopstream produce --topic`, and a static check that no code
formats a runtime value into SQL text beyond the reviewed, constant-only places.
"""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest

from shopstream import database
from shopstream.settings import SettingsError, load_settings
from shopstream_assets_tests.e2e.helpers import CLI, fetch
from shopstream_assets_tests.streaming.conftest import good_event
from streaming.bronze_batch import write_batch
from streaming.bronze_load import KafkaPositions, validated_table
from streaming.events import EVENT_FIELDS, encode_event

REPO_ROOT = Path(__file__).resolve().parents[2]
ATTACKS = (
    "x'; drop table bronze.clickstream_events; --",
    'x"); delete from bronze.ingest_batches; --',
    "' or '1'='1",
    "$$; drop schema gold cascade; $$",
    "\\'; truncate bronze.clickstream_rejects; --",
)
BRONZE_TABLES = "select array_agg(tablename::text order by tablename) from pg_tables where schemaname = 'bronze'"
# Every attack's drop or truncate would take one of these away.
ALL_BRONZE_TABLES = [
    (
        [
            "clickstream_events",
            "clickstream_rejects",
            "ingest_batches",
            "ingest_batches_hourly",
            "ingest_offsets",
            "ingest_totals",
            "reject_totals",
        ],
    )
]

# Calls that run SQL, and where a runtime value may be formatted into their text because it
# is a module constant or a catalog name; each was read and found free of user input.
SQL_CALLS = {"execute", "executemany", "copy", "stream", "read_sql", "read_sql_query"}
REVIEWED_FORMATTED_SQL = {
    # vacuum analyze {relation}: names read from pg_tables (silver/gold), not from a user
    ("shopstream_cli/bench/dashboard.py", "build_silver_and_gold"),
    # vacuum analyze {relation}: a constant tuple
    ("shopstream_cli/bench/dbt.py", "bench_size"),
}


def _formatted_sql_calls(path: Path) -> list[tuple[str, int]]:
    """(enclosing function, line) of every SQL call whose text is built by f-string, % or +/format."""
    tree = ast.parse(path.read_text())
    found: list[tuple[str, int]] = []
    # Names bound to psycopg's sql.SQL(...): their .format() quotes identifiers and literals itself.
    composed = {
        target.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        and isinstance(node.value, ast.Call)
        and ast.unparse(node.value.func).endswith("SQL")
        for target in node.targets
        if isinstance(target, ast.Name)
    }

    def is_composed(receiver: ast.AST) -> bool:
        if isinstance(receiver, ast.Name):
            return receiver.id in composed
        return isinstance(receiver, ast.Call) and ast.unparse(receiver.func).endswith("SQL")

    def visit(node: ast.AST, function: str) -> None:
        for child in ast.iter_child_nodes(node):
            name = child.name if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) else function
            if isinstance(child, ast.Call) and isinstance(child.func, ast.Attribute) and child.args:
                text = child.args[0]
                # + and % build strings; / joins paths (shutil.copy(folder / name, ...) is not SQL).
                concatenated = isinstance(text, ast.BinOp) and isinstance(text.op, ast.Add | ast.Mod)
                formatted = (
                    isinstance(text, ast.JoinedStr)
                    or concatenated
                    or (
                        isinstance(text, ast.Call)
                        and isinstance(text.func, ast.Attribute)
                        and text.func.attr in {"format", "replace"}
                        and not is_composed(text.func.value)
                    )
                )
                if child.func.attr in SQL_CALLS and formatted:
                    found.append((function, child.lineno))
            visit(child, name)

    visit(tree, "<module>")
    return found


def test_the_static_check_sees_formatting_and_ignores_paths(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "def by_fstring(cursor, table):\n    cursor.execute(f'select * from {table}')\n"
        "def by_plus(cursor, table):\n    cursor.execute('select * from ' + table)\n"
        "def by_percent(cursor, table):\n    cursor.execute('select * from %s' % table)\n"
        "def by_format(cursor, table):\n    cursor.execute('select * from {}'.format(table))\n"
        "def by_parameters(cursor, value):\n    cursor.execute('select %s', (value,))\n"
        "def by_path(shutil, folder):\n    shutil.copy(folder / 'a', folder / 'b')\n"
    )
    assert [function for function, _ in _formatted_sql_calls(sample)] == [
        "by_fstring",
        "by_plus",
        "by_percent",
        "by_format",
    ]


def test_no_sql_text_is_formatted_from_runtime_values() -> None:
    unexpected = []
    reviewed_seen = set()
    for folder in ("shopstream", "streaming", "dashboard", "shopstream_assets", "shopstream_cli"):
        for path in sorted((REPO_ROOT / folder).rglob("*.py")):
            relative = str(path.relative_to(REPO_ROOT))
            for function, line in _formatted_sql_calls(path):
                if (relative, function) in REVIEWED_FORMATTED_SQL:
                    reviewed_seen.add((relative, function))
                else:
                    unexpected.append(f"{relative}:{line} in {function}()")
    assert not unexpected, "SQL text built from values; use parameters or psycopg.sql: " + ", ".join(unexpected)
    # A reviewed place that no longer formats SQL leaves the list, so it cannot excuse new code of the same name.
    assert reviewed_seen == REVIEWED_FORMATTED_SQL, f"stale reviewed entries: {REVIEWED_FORMATTED_SQL - reviewed_seen}"
    print(f"\nSQL text is formatted from values only in {len(reviewed_seen)} reviewed, constant-only places")


@pytest.mark.parametrize("attack", ATTACKS)
def test_a_topic_name_carrying_sql_is_refused_by_settings(attack: str) -> None:
    with pytest.raises(SettingsError, match="SHOPSTREAM_TOPIC must be"):
        load_settings({"SHOPSTREAM_TOPIC": attack})


def test_event_fields_carrying_sql_are_stored_verbatim(database_url: str) -> None:
    """Every string field of an event holds an attack; COPY stores it as data."""
    strings = [field.name for field in EVENT_FIELDS if field.json_type == "string"]
    keys: list[bytes] = []
    values: list[bytes] = []
    for index, attack in enumerate(ATTACKS):
        event = good_event(**{name: attack for name in strings if name not in ("event_timestamp", "event_type")})
        event["event_id"] = f"{attack}#{index}"
        keys.append(b"k%d" % index)
        values.append(encode_event(event))
    table = validated_table(keys, values, KafkaPositions("t-injection", partitions=1))
    with database.connect(database_url, autocommit=True) as conn:
        result = write_batch(conn, table, topic="t-injection")
    assert (result.rows_written, result.rejects) == (len(ATTACKS), 0)
    stored = {row[0] for row in fetch(database_url, "select user_id from bronze.clickstream_events")}
    assert stored == set(ATTACKS)
    assert fetch(database_url, BRONZE_TABLES) == ALL_BRONZE_TABLES
    assert fetch(database_url, "select count(*) from pg_namespace where nspname = 'gold'") == [(1,)]


def test_produce_topic_option_carrying_sql_fails_cleanly(shopstream_env: dict[str, str], database_url: str) -> None:
    """`--topic` is checked by the same rule as SHOPSTREAM_TOPIC; the error names the option, nothing reaches SQL."""
    attack = ATTACKS[0]
    result = subprocess.run(
        [*CLI, "produce", "--topic", attack, "--events", "1", "--quiet"],
        env=shopstream_env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
    )
    assert result.returncode == 2, result.stderr
    assert "--topic must be 1-249 characters" in result.stderr, result.stderr
    assert fetch(database_url, BRONZE_TABLES) == ALL_BRONZE_TABLES

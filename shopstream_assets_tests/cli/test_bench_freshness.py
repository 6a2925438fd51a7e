"""`shopstream bench freshness`, short: the whole loop measured, every figure produced and consistent."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from shopstream import database
from shopstream.services import Endpoints
from shopstream_cli.bench.freshness import BENCH_DATABASE, TARGET_P95_S

RATE = 100
SECONDS = 10
LATENCY = re.compile(r"p50 +([\d.]+) s +p95 +([\d.]+) s +max +([\d.]+) s +\(n=([\d,]+)\)")


def _latencies(output: str, name: str) -> tuple[float, float, float, int]:
    line = next(line for line in output.splitlines() if line.strip().startswith(name))
    found = LATENCY.search(line)
    assert found, line
    p50, p95, worst, samples = found.groups()
    return float(p50), float(p95), float(worst), int(samples.replace(",", ""))


@pytest.mark.slow
def test_a_short_bench_freshness_measures_every_event_into_gold(
    servers: Endpoints, admin_database_url: str, test_home: Path
) -> None:
    """Producer, stream and daemon for 10 s at 100 events/s: every event measured into Bronze and Gold.

    Sane, not fast: the verdict and exit code follow the printed p95, whatever it is. A Gold reach
    time taken before the batch committed would put Gold's percentiles below Bronze's and fail it.
    """
    env = {key: value for key, value in os.environ.items() if not key.startswith("SHOPSTREAM_")}
    env.update(servers.environment())
    env.update({"SHOPSTREAM_HOME": str(test_home), "SHOPSTREAM_SPARK_MASTER": "local[2]"})
    command = [sys.executable, "-m", "shopstream_cli.cli", "bench", "freshness"]
    # A generous drain: a loaded box may take a minute or more to start the stream and the first run.
    options = ["--rate", str(RATE), "--seconds", str(SECONDS), "--warmup", "0", "--drain", "300"]
    try:
        result = subprocess.run([*command, *options], env=env, capture_output=True, text=True, timeout=600)
        bench_url = database.with_database(admin_database_url, BENCH_DATABASE)
        with database.connect(bench_url) as conn:
            (bronze_rows,) = conn.execute("select count(*) from bronze.clickstream_events").fetchone()
    finally:
        database.drop_database(admin_database_url, BENCH_DATABASE)
    output = result.stdout
    summary = re.search(
        r"freshness: ([\d,]+) events at ([\d,]+)/s, (\d+) dbt runs \((\d+) failed\), ([\d,]+) never reached Gold; "
        r"p95 ([\d.]+) s, target <= (\d+) s (met|missed)",
        output,
    )
    assert summary, output[-3000:] + result.stderr[-3000:]
    events, rate, runs, failed, unreached = (int(summary[i].replace(",", "")) for i in range(1, 6))
    p95, verdict = float(summary[6]), summary[8]

    # Every event the producer sent was measured, all of them reached Gold, by runs that succeeded.
    assert events == bronze_rows > 0 and rate == RATE
    assert unreached == 0 and runs >= 1 and failed == 0
    bronze = _latencies(output, "event -> Bronze")
    gold = _latencies(output, "event -> Gold")
    assert bronze[3] == gold[3] == events
    for p50, p95_line, worst, _ in (bronze, gold):
        assert 0 < p50 <= p95_line <= worst
    # An event is in Gold only after its batch committed to Bronze.
    assert gold[0] >= bronze[0] and gold[1] >= bronze[1] and gold[2] >= bronze[2]
    assert p95 == gold[1]
    dbt_run = _latencies(output, "dbt run (run worker)")
    assert dbt_run[3] == runs and dbt_run[0] > 0
    reused = re.search(r"dbt ran on the prepared manifest \(no parse\) in (\d+) of (\d+) runs", output)
    assert reused and 0 <= int(reused[1]) <= int(reused[2]) <= runs and int(reused[2]) >= 1
    # The verdict and the exit code follow the figure printed, fast box or slow.
    assert verdict == ("met" if p95 <= TARGET_P95_S else "missed")
    assert result.returncode == (0 if verdict == "met" else 1), result.stderr[-3000:]

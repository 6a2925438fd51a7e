"""One Spark action per batch, its Arrow rows handed to the sink as Spark's tasks finish.

The private path goes through :mod:`streaming.pyspark_private`; when the installed pyspark
lacks a name it needs, the stock ``DataFrame.toArrow()`` collects the batch instead (same
rows, handed over only after Spark's last task), and the log says so once.

Either way the whole batch passes through the driver: :func:`messages_per_collection` is how
many messages one action may hold, whatever they carry (docs/memory.md).
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from streaming import pyspark_private

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger("shopstream.stream")

# The most Arrow bytes one collected row can take: an accepted event whose every free-text
# field is at its length limit in 4-byte characters, read from a topic with the longest name
# Kafka allows. A reject is smaller: it keeps a bounded prefix of its value
# (streaming/reject_payload.py). docs/memory.md has the measure.
LARGEST_ROW_BYTES = 10_300
# Spark's defaults for the two settings the budget comes from.
DEFAULT_MAX_RESULT_SIZE = "1g"
DEFAULT_DRIVER_MEMORY = "1g"
_SIZE = re.compile(r"([0-9]+)([a-z]*)")
_UNITS = {"b": 0, "k": 1, "kb": 1, "m": 2, "mb": 2, "g": 3, "gb": 3, "t": 4, "tb": 4, "p": 5, "pb": 5}


def messages_per_collection(spark: SparkSession) -> int:
    """The most messages one action may collect: that many of the largest rows stay within the driver's budget.

    An action's task results all pass through the driver, counted against
    ``spark.driver.maxResultSize`` (0: no limit): beyond it Spark aborts the job, and a
    micro-batch's offsets are in the checkpoint by then, so every restart would take the same
    batch. Half of that limit leaves room for the results' serialization. In local mode the
    driver's heap also runs the tasks and holds a task's result twice while handing it over
    (serialized, then as Arrow buffers): a quarter of ``spark.driver.memory``. The smaller wins.
    """
    conf = spark.sparkContext.getConf()
    max_result_size = spark_size_bytes(conf.get("spark.driver.maxResultSize", DEFAULT_MAX_RESULT_SIZE) or "")
    heap = spark_size_bytes(conf.get("spark.driver.memory", DEFAULT_DRIVER_MEMORY) or "", default_unit="m")
    budget = heap // 4 if max_result_size == 0 else min(max_result_size // 2, heap // 4)
    return max(1, budget // LARGEST_ROW_BYTES)


def within_driver_memory(spark: SparkSession, requested: int, batches: str) -> int:
    """``requested`` messages per batch, or fewer: as many as the driver holds when each is as large as a row can be.

    A batch is collected into the driver whole, so its message count bounds its bytes only
    through the largest row: the bound holds whatever the messages carry (docs/memory.md).
    """
    limit = messages_per_collection(spark)
    if requested <= limit:
        return requested
    log.info(
        "%s of at most %s messages (not %s): that many rows of the largest size, %s bytes, fit half of"
        " spark.driver.maxResultSize and a quarter of spark.driver.memory",
        batches,
        f"{limit:,}",
        f"{requested:,}",
        f"{LARGEST_ROW_BYTES:,}",
    )
    return limit


def spark_size_bytes(text: str, *, default_unit: str = "b") -> int:
    """A Spark size setting (``1g``, ``512m``, ``1073741824``) in bytes, read as Spark reads it (powers of 1,024)."""
    match = _SIZE.fullmatch(text.strip().lower())
    if match is None or (match.group(2) or default_unit) not in _UNITS:
        raise ValueError(f"not a Spark size: {text!r} (expected a number with b, k, m, g, t or p)")
    return int(match.group(1)) * 1024 ** _UNITS[match.group(2) or default_unit]


class SparkChunks:
    """The record batches of one Spark action, iterated as they arrive (see :func:`arrow_chunks`)."""

    def __init__(self) -> None:
        self._arrived: queue.SimpleQueue[pa.RecordBatch | BaseException | None] = queue.SimpleQueue()
        self.last_arrival: float | None = None  # time.perf_counter() when Spark's last rows came
        self.spark_failed = False
        self.abandoned = False

    def arrive(self, batch: pa.RecordBatch) -> None:
        self.last_arrival = time.perf_counter()
        self._arrived.put(batch)

    def fail(self, error: BaseException) -> None:
        self._arrived.put(error)

    def end(self) -> None:
        self._arrived.put(None)

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        while (item := self._arrived.get()) is not None:
            if isinstance(item, BaseException):
                self.spark_failed = True
                raise item
            yield item


@contextmanager
def arrow_chunks(frame: DataFrame) -> Iterator[SparkChunks]:
    """``frame``'s rows as Arrow record batches, each handed over as soon as Spark has it.

    The one action of a batch, taken as ``toArrow()`` takes it (the same JVM call,
    ``collectAsArrowToPython``, whose rows are never read twice), but ``toArrow()`` returns only
    after the last task: this yields each task's batches when it finishes, so the sink writes
    them while Spark still computes the rest. Batches come in the order tasks finish.

    A thread of its own reads the socket into memory at once (a batch's worth, as
    ``toArrow()`` holds): Spark writes each finished task's rows from its scheduler thread,
    so a reader that waited for PostgreSQL would stop Spark from starting its next tasks.
    """
    if missing := pyspark_private.missing_at_first_use(frame):
        with _stock_arrow_chunks(frame, missing) as chunks:
            yield chunks
        return
    import pyarrow as pa

    schema = pyspark_private.arrow_schema(frame.schema)
    port, secret, server = pyspark_private.collect_as_arrow_to_python(frame)
    chunks = SparkChunks()

    def read_everything() -> None:
        try:
            with pyspark_private.load_arrow_stream(port, secret) as stream:
                for item in stream:
                    # Read to the end even when the sink gave up, so Spark's job ends normally.
                    if isinstance(item, pa.RecordBatch) and not chunks.abandoned:
                        chunks.arrive(item.cast(schema))
            # The socket also ends, without an error, when Spark aborts the job after some tasks
            # handed over their rows (a task that failed, results beyond spark.driver.maxResultSize):
            # only the job's result says the rows are all there. The sink, which commits once the
            # chunks end, must see the failure instead of the end.
            pyspark_private.raise_job_failure(server)
        except BaseException as error:  # noqa: BLE001 -- handed to the consumer, which raises it
            chunks.fail(error)
        finally:
            chunks.end()

    reader = threading.Thread(target=read_everything, name="shopstream-arrow-reader", daemon=True)
    reader.start()
    sink_failed = False
    try:
        yield chunks
    except BaseException:
        sink_failed = not chunks.spark_failed
        chunks.abandoned = True
        raise
    finally:
        reader.join()
        try:
            pyspark_private.raise_job_failure(server)
        except Exception:
            # After the sink's own failure, the sink's error is the one to report.
            if not sink_failed:
                raise


# The lists of missing names already reported: the fallback is said once, not once a batch.
_REPORTED: set[tuple[str, ...]] = set()


@contextmanager
def _stock_arrow_chunks(frame: DataFrame, missing: list[str]) -> Iterator[SparkChunks]:
    """``frame.toArrow()``'s batches, all at once after Spark's last task: the path without private names."""
    import pyspark

    if tuple(missing) not in _REPORTED:
        _REPORTED.add(tuple(missing))
        log.warning(
            "pyspark %s lacks %s: collecting each batch with DataFrame.toArrow(), which hands the rows over "
            "only after Spark's last task (slower, same rows)",
            pyspark.__version__,
            ", ".join(missing),
        )
    table = frame.toArrow()
    chunks = SparkChunks()
    for batch in table.to_batches():
        chunks.arrive(batch)
    chunks.end()
    yield chunks

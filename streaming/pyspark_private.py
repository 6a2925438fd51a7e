"""Every private PySpark (and Spark JVM) name the project uses, in one place, and a check that they exist.

Why at all: a micro-batch takes ONE action, collected as Arrow. ``DataFrame.toArrow()`` returns
only after Spark's last task, so PostgreSQL would wait for all of Spark and Spark for all of
PostgreSQL. The same JVM call ``toArrow()`` makes, read through the same private helpers,
hands over each task's Arrow batches as the task finishes, and the sink writes them while
Spark still computes the rest (:mod:`streaming.arrow_collection`).

None of these names is a public API: an upgrade may rename or drop them. When any is missing
the stream and the replay collect with the stock ``DataFrame.toArrow()`` instead (same rows,
slower), and say so once. ``shopstream_assets_tests/streaming/test_pyspark_private.py`` fails
naming the names the installed pyspark lacks.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, types

PRIVATE_NAMES: tuple[str, ...] = (
    # The classic DataFrame's JVM Dataset: the only way to reach collectAsArrowToPython.
    "pyspark.sql.DataFrame._jdf",
    # What toArrow() calls: runs the job and serves each task's Arrow batches on a local
    # socket as the task ends (private[sql] in Scala, public in the bytecode).
    "org.apache.spark.sql.classic.Dataset.collectAsArrowToPython",
    # The socket server collectAsArrowToPython returns: getResult() raises the job's failure.
    "org.apache.spark.security.SocketAuthServer.getResult",
    # Connects to that socket with its secret and deserializes the stream.
    "pyspark.util._load_from_socket",
    # The deserializer toArrow() uses for that stream (record batches, then the batch order).
    "pyspark.sql.pandas.serializers.ArrowCollectSerializer",
    # Spark's schema as Arrow's, as toArrow() casts to it (UTC timestamps).
    "pyspark.sql.pandas.types.to_arrow_schema",
    # Turns getResult()'s Py4JJavaError into the Spark exception toArrow() would raise.
    "pyspark.errors.exceptions.captured.unwrap_spark_exception",
)

_JVM_PREFIX = "org.apache."


def missing_private_names(frame: DataFrame) -> list[str]:
    """The names of :data:`PRIVATE_NAMES` the installed pyspark (and its JVM, seen through ``frame``) lacks."""
    return [name for name in PRIVATE_NAMES if not _exists(name, frame)]


# Checked once per list of names: the JVM comes with pyspark, so neither changes in a process.
_MISSING: dict[tuple[str, ...], list[str]] = {}


def missing_at_first_use(frame: DataFrame) -> list[str]:
    """:func:`missing_private_names`, asked once per process (a micro-batch does not pay the check)."""
    if PRIVATE_NAMES not in _MISSING:
        _MISSING[PRIVATE_NAMES] = missing_private_names(frame)
    return _MISSING[PRIVATE_NAMES]


def _exists(name: str, frame: DataFrame) -> bool:
    owner_name, _, attribute = name.rpartition(".")
    if name.startswith(_JVM_PREFIX):
        return _jvm_method_exists(frame, owner_name, attribute)
    owner = _python_object(owner_name)
    if owner is None:
        return False
    if hasattr(owner, attribute):
        return True
    # An attribute set in __init__ (DataFrame._jdf) exists only on an instance.
    return isinstance(owner, type) and isinstance(frame, owner) and hasattr(frame, attribute)


def _python_object(dotted: str) -> Any:
    """The module, or the attribute of the longest importable module prefix, named ``dotted``; None if absent."""
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        try:
            found: Any = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for attribute in parts[split:]:
            found = getattr(found, attribute, None)
            if found is None:
                return None
        return found
    return None


def _jvm_method_exists(frame: DataFrame, class_name: str, method: str) -> bool:
    from py4j.protocol import Py4JError

    jdf = getattr(frame, "_jdf", None)
    if jdf is None:
        return False
    try:
        jvm_class = jdf.getClass().getClassLoader().loadClass(class_name)
        # Class.getMethod(name, null): a method of no parameters, or NoSuchMethodException.
        jvm_class.getMethod(method, None)
    except Py4JError:
        return False
    return True


# The calls themselves. Imports stay inside: importing this module costs nothing.


def collect_as_arrow_to_python(frame: DataFrame) -> tuple[int, str, Any]:
    """Start ``frame``'s one action: (port, secret, the JVM socket server) to read its Arrow batches from."""
    port, secret, server = frame._jdf.collectAsArrowToPython()
    return port, secret, server


def load_arrow_stream(port: int, secret: str) -> AbstractContextManager[Iterator[pa.RecordBatch | list[int]]]:
    """The socket's record batches as tasks finish, then the list of their order."""
    from pyspark.sql.pandas.serializers import ArrowCollectSerializer
    from pyspark.util import _load_from_socket

    return _load_from_socket((port, secret), ArrowCollectSerializer())


def arrow_schema(schema: types.StructType) -> pa.Schema:
    """Spark's schema as ``toArrow()`` casts its table to it."""
    from pyspark.sql.pandas.types import to_arrow_schema

    return to_arrow_schema(schema, error_on_duplicated_field_names_in_struct=True, timezone="UTC")


def raise_job_failure(server: Any) -> None:
    """Wait for the action's end; its failure raised as the Spark exception ``toArrow()`` raises."""
    from pyspark.errors.exceptions.captured import unwrap_spark_exception

    with unwrap_spark_exception():
        server.getResult()

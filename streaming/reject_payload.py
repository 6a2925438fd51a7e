"""What a reject keeps of its message: a bounded prefix, the full length and a SHA-256 of the whole value.

A message may be as large as the broker allows (about 1 MB), and a micro-batch may hold
``maxOffsetsPerTrigger`` of them. The whole batch reaches the driver, so a reject that carried
its whole value would make the batch's memory grow with message sizes: 1,200 rejects of
900 KB once took the JVM down, and every restart took the same batch again. Spark therefore
cuts the value inside the task, before collection (:func:`spark_reject_columns`), and
Python's reference does the same (:func:`reject_fields`), so both sides store the same row.
The bound this gives a batch is in docs/memory.md.

``raw_value`` holds the first :data:`RAW_PREFIX_BYTES` bytes; ``raw_text`` their text when the
whole value is UTF-8, cut back to whole characters; ``raw_length`` the value's full length
in bytes and ``raw_sha256`` the SHA-256 of the whole value, so a cut reject can still be
told apart from another and matched with the message in Kafka.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from pyspark.sql import Column

# The largest power of two for which a batch of maxOffsetsPerTrigger worst-case rejects stays
# under Spark's spark.driver.maxResultSize: see docs/memory.md for the arithmetic.
RAW_PREFIX_BYTES = 1024

# A UTF-8 character is at most 4 bytes: a cut lands at most 3 bytes into one.
_LONGEST_UTF8_CHARACTER = 4


class RejectFields(NamedTuple):
    raw_value: bytes | None
    raw_text: str | None
    raw_length: int | None
    raw_sha256: bytes | None


def reject_fields(value: bytes | None) -> RejectFields:
    """The stored columns of a rejected message (Python's reference of :func:`spark_reject_columns`)."""
    if value is None:
        return RejectFields(None, None, None, None)
    prefix = value[:RAW_PREFIX_BYTES]
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    else:
        # The whole value is UTF-8, so only a character cut at the end can be broken: dropped.
        text = prefix.decode("utf-8", "ignore")
    return RejectFields(prefix, text, len(value), hashlib.sha256(value).digest())


def spark_reject_columns(value: Column, text: Column, is_utf8: Column) -> RejectFields:
    """``value``'s prefix, the prefix's whole-character text (when ``is_utf8``), its length and SHA-256, in Spark.

    Computed in the task: the driver never receives more than the prefix.
    """
    from pyspark.sql import functions as F

    prefix = F.substring(value, 1, RAW_PREFIX_BYTES)
    # Cut back by 0-3 bytes to the first prefix that is valid UTF-8: the end of a whole character.
    cut_text = F.coalesce(
        *(
            F.when(F.is_valid_utf8(shorter), shorter)
            for shorter in (
                F.substring(value, 1, RAW_PREFIX_BYTES - cut).cast("string") for cut in range(_LONGEST_UTF8_CHARACTER)
            )
        )
    )
    prefix_text = F.when(F.octet_length(value) <= RAW_PREFIX_BYTES, text).otherwise(cut_text)
    return RejectFields(
        raw_value=prefix,
        raw_text=F.when(is_utf8, prefix_text),
        raw_length=F.octet_length(value),
        raw_sha256=F.unhex(F.sha2(value, 256)),
    )

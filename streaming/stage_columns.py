"""Column references into the validation stages' results.

Shared by :mod:`streaming.parse_stages` and :mod:`streaming.verdict_stage`.
Each returns unresolved columns: cheap to build, and bound to whichever DataFrame a stage
selects from.
"""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F

from streaming.events import EVENT_FIELDS

CORRUPT_COLUMN = "_corrupt"

# One select list of :func:`streaming.transforms.parse_and_validate`.
Projection = list[Column | str]


def fields() -> dict[str, Column]:
    """from_json's value of each event field, and its corrupt-record column."""
    return {name: F.col(f"_parsed.{name}") for name in (*(f.name for f in EVENT_FIELDS), CORRUPT_COLUMN)}


def corrupt() -> Column:
    return F.col(f"_parsed.{CORRUPT_COLUMN}").isNotNull()


def price_not_finite() -> Column:
    price = F.col("_parsed.product_price")
    return F.isnan(price) | price.isin(float("inf"), float("-inf"))


def json_types() -> dict[str, Column]:
    """The JSON type of each field, from the type probe (null where no probe ran)."""
    return {f.name: F.col(f"_types.{f.name}") for f in EVENT_FIELDS}


def present(name: str) -> Column:
    # On a corrupt row a field can be present yet null in the parse: an integer beyond
    # BIGINT. Python treats that as a value, so the range rules apply to it.
    json_type = json_types()[name]
    return fields()[name].isNotNull() | (corrupt() & json_type.isNotNull() & (json_type != "VOID"))

"""Planner costs for the embedded PostgreSQL: the server is on an SSD and its data mostly in memory.

PostgreSQL's defaults (``random_page_cost`` 4, ``effective_cache_size`` 4GB) describe a spinning
disk and a small cache. With them, once Silver outgrows 4GB the planner prices each index probe of
an incremental dbt run as a disk seek and reads all of Silver instead: the sensor's refresh then
costs the history, not the new batches (docs/operations.md, "PostgreSQL's planner costs"). Given at
every start, so a cluster made before them gets them too.
"""

from __future__ import annotations

import psutil

RANDOM_PAGE_COST = 1.1  # the usual figure for SSDs and cloud volumes
CACHE_SHARE_OF_MEMORY = 0.5  # the OS page cache PostgreSQL can count on beside the other servers
MIN_EFFECTIVE_CACHE_MB = 1024


def effective_cache_mb(total_memory_bytes: int | None = None) -> int:
    """Half the machine's memory, in MB (at least 1GB)."""
    total = psutil.virtual_memory().total if total_memory_bytes is None else total_memory_bytes
    return max(MIN_EFFECTIVE_CACHE_MB, int(total * CACHE_SHARE_OF_MEMORY) // (1024 * 1024))


def planner_options(total_memory_bytes: int | None = None) -> dict[str, str]:
    """Server options (name -> value) for the planner's costs."""
    return {
        "random_page_cost": str(RANDOM_PAGE_COST),
        "effective_cache_size": f"{effective_cache_mb(total_memory_bytes)}MB",
    }

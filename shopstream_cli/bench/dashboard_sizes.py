"""`shopstream bench dashboard --sizes`: the same queries over Bronze of several sizes, side by side.

The issue's target is scale, not speed: every dashboard query over the largest size within
1.3x of the same query over the smallest. Each size is measured in a database of its own,
one after the other, so the disk holds one at a time; or, with ``--rounds``, all at once in
alternating passes (:func:`median_of_passes`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence

import typer

SCALE_TARGET = 1.3

# Per page: (query, median ms); and page -> median full render ms.
Timings = dict[str, list[tuple[str, float]]]
Renders = dict[str, float]


def median_of_passes(passes: Sequence[tuple[Timings, Renders]]) -> tuple[Timings, Renders]:
    """Each query's and each render's median over several passes of the same measurement."""
    first_timings, first_renders = passes[0]
    timings = {
        page: [
            (label, statistics.median(pass_timings[page][position][1] for pass_timings, _ in passes))
            for position, (label, _) in enumerate(queries)
        ]
        for page, queries in first_timings.items()
    }
    renders = {page: statistics.median(pass_renders[page] for _, pass_renders in passes) for page in first_renders}
    return timings, renders


def parse_sizes(sizes: str) -> list[int]:
    """Whole numbers above 0, comma-separated (underscores allowed, as in 5_000_000)."""
    try:
        counts = [int(size.strip().replace("_", "")) for size in sizes.split(",") if size.strip()]
    except ValueError:
        raise typer.BadParameter(f"--sizes must be whole numbers separated by commas: got {sizes!r}") from None
    if not counts or any(count < 1 for count in counts):
        raise typer.BadParameter(f"--sizes must be row counts of at least 1: got {sizes!r}")
    if len(set(counts)) != len(counts):
        raise typer.BadParameter(f"--sizes names a size twice: got {sizes!r}")
    return counts


def ratio(smallest: float, largest: float) -> float:
    """largest / smallest; inf when the smallest took no measurable time or either timed out."""
    if not (math.isfinite(smallest) and math.isfinite(largest)) or smallest <= 0:
        return math.inf
    return largest / smallest


def _ms(value: float) -> str:
    return f"{value:.1f} ms" if math.isfinite(value) else "> 15 s"


def _ratio(value: float) -> str:
    return f"{value:.2f}x" if math.isfinite(value) else "inf"


def side_by_side(results: Mapping[int, tuple[Timings, Renders]]) -> str:
    """Every query (and page render) per size, with the ratio largest / smallest size, and the worst
    query's ratio against the target."""
    sizes = sorted(results)
    smallest, largest = sizes[0], sizes[-1]
    lines = [
        "| page | query | " + " | ".join(f"{size:,} rows" for size in sizes) + f" | {largest:,} / {smallest:,} |",
        "|---|---|" + "---:|" * (len(sizes) + 1),
    ]
    worst: tuple[float, str] = (0.0, "")
    base_timings, base_renders = results[smallest]
    for page, queries in base_timings.items():
        for position, (label, _) in enumerate(queries):
            values = [results[size][0][page][position][1] for size in sizes]
            scale = ratio(values[0], values[-1])
            worst = max(worst, (scale, f"{page}: {label}"))
            lines.append(f"| {page} | {label} | " + " | ".join(map(_ms, values)) + f" | {_ratio(scale)} |")
    for page in base_renders:
        values = [results[size][1][page] for size in sizes]
        scale = ratio(values[0], values[-1])
        lines.append(f"| {page} | full render | " + " | ".join(map(_ms, values)) + f" | {_ratio(scale)} |")
    verdict = "within" if worst[0] <= SCALE_TARGET else "above"
    lines.append(
        f"\nWorst query ratio {largest:,} / {smallest:,} Bronze rows: {_ratio(worst[0])} ({worst[1]}); "
        f"{verdict} the target of {SCALE_TARGET:.1f}x"
    )
    return "\n".join(lines)

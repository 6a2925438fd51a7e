"""A shop already trading when a run starts: the sessions in flight at that moment.

A steady shop has sessions open at any moment, begun before it, their earlier events never
sent; opening them at the start is what makes the funnel's ratios hold from the first minute
(docs/simulator.md). :class:`streaming.simulator.Simulator` draws its session plans and asks
this module which are open and when each is next due.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any

from streaming.shop import EVENTS_PER_SESSION

# Sessions begun up to this long before the start may still be open at it. Longer ones are
# rare enough to leave out (docs/simulator.md); each candidate costs a session plan, so the
# horizon is the start-up cost.
IN_FLIGHT_HORIZON_MS = 900_000.0
EXACT_SHRINK_FLOOR = 0.05  # below: sessions shrink to a twentieth of their length
PILOT_SESSIONS = 1_000  # drawn first to measure session lengths (and used as candidates)


def shrunk_length(gaps: list[float], lead: float) -> float:
    """A session's length (ms) when each gap between its events shrinks by ``lead``."""
    return sum(gap - lead for gap in gaps if gap > lead)


def steady_lead(gap_lists: list[list[float]], sessions_per_ms: float, max_open: int) -> float:
    """How far ahead of the clock a shop bounded to ``max_open`` sessions serves them (ms).

    Open sessions are begun per ms times mean length; when that exceeds the bound, the model
    serves sessions early, which shrinks every gap by the lead. Bisection on the mean of
    sampled sessions' gaps (``gap_lists``): 0 when the bound is not reached.
    """
    lengths = [sum(gaps) for gaps in gap_lists]
    if sessions_per_ms * sum(lengths) / len(lengths) <= max_open:
        return 0.0
    low, high = 0.0, max(max(gaps, default=0.0) for gaps in gap_lists)
    for _ in range(25):
        lead = (low + high) / 2
        mean = sum(shrunk_length(gaps, lead) for gaps in gap_lists) / len(gap_lists)
        low, high = (lead, high) if sessions_per_ms * mean > max_open else (low, lead)
    return (low + high) / 2


def open_in_flight(
    new_session: Callable[[], list[Any]], random_: Callable[[], float], step_ms: float, max_open_sessions: int
) -> tuple[list[tuple[float, int, list[Any]]], int]:
    """The sessions a steady shop has in progress at the start: a heap of (due ms, push number,
    session plan) and the number of pushes.

    Sessions begin at the steady rate (events per ms over events per session) through the
    horizon before the start, each at a uniform moment; those still running at the start
    are open, their next event due when the plan says: open sessions weighted by their
    length, each at a uniform point of it. Above the open-session bound the model serves
    the earliest-due session before its time, running a steady ``lead`` ahead of the clock
    (gaps shorter than the lead pass at once, longer ones shrink by it): the same draw on
    those shrunk gaps, the lead chosen so the bound's number of sessions is open.
    """
    sessions_per_ms = 1.0 / (step_ms * EVENTS_PER_SESSION)
    pilot = [new_session() for _ in range(PILOT_SESSIONS)]
    gap_lists = [session[4][: len(session[3]) - 1] for session in pilot]
    lead = steady_lead(gap_lists, sessions_per_ms, max_open_sessions)
    # Shrunk sessions are shorter: so is the horizon that holds nearly all of them.
    shrink = sum(shrunk_length(gaps, lead) for gaps in gap_lists) / max(sum(map(sum, gap_lists)), 1.0)
    horizon = IN_FLIGHT_HORIZON_MS * shrink
    # Far above the bound (unpaced) the exact draw would cost more than it is worth to runs
    # that last seconds: only the cheap placement below is used.
    candidates = int(horizon * sessions_per_ms + random_()) if shrink >= EXACT_SHRINK_FLOOR else 0
    # At the bound, fill it: one session fewer and the model would open new ones at once, a
    # wave of first page views (sessions stay open far longer than events are apart). The
    # draw falls a little short of the bound, and far above it (unpaced) few sessions
    # outlast the lead: the rest are placed at a uniform point of their own length (cheap).
    open_sessions: list[tuple[float, int, list[Any]]] = []
    pushes = 0
    number = 0
    while len(open_sessions) < max_open_sessions and (number < candidates or lead > 0):
        exact = number < candidates
        session = pilot[number] if number < PILOT_SESSIONS else new_session()
        number += 1
        gaps = session[4]
        last = len(session[3]) - 1
        if exact:
            age, shrink_by = random_() * horizon, lead
        else:
            age, shrink_by = random_() * sum(gaps[:last]), 0.0
        elapsed, index = 0.0, 0
        while index < last and elapsed <= age:
            elapsed += max(0.0, gaps[index] - shrink_by)
            index += 1
        if elapsed <= age:  # over before the start (a one-page session always is)
            continue
        session[5] = index
        pushes += 1
        heapq.heappush(open_sessions, (lead + elapsed - age, pushes, session))
    return open_sessions, pushes

"""The suite's order for xdist: the long tests in even shares at the head of each worker's slice."""

from __future__ import annotations

from dataclasses import dataclass

from shopstream_assets_tests.conftest import DEFAULT_SLOW_SECONDS, EXPECTED_SECONDS, slow_tests_first_on_each_worker


@dataclass(frozen=True)
class _Collected:
    """What the ordering reads of a collected test: its name and whether it is marked slow."""

    name: str
    slow: bool = False
    module_name: str | None = None  # a `same_worker` module's name
    group: str | None = None  # a `same_worker("group")` mark's argument

    @property
    def module(self) -> object | None:
        return type("Module", (), {"__name__": self.module_name}) if self.module_name else None

    @property
    def originalname(self) -> str:
        return self.name

    def get_closest_marker(self, name: str) -> object | None:
        if name == "slow" and self.slow:
            return object()
        if name == "same_worker" and (self.module_name or self.group):
            return type("Mark", (), {"args": (self.group,) if self.group else ()})()
        return None


def test_long_tests_lead_each_slice_in_even_shares() -> None:
    known = [_Collected(name) for name in EXPECTED_SECONDS]
    new_slow = [_Collected(f"test_new_slow_{index}", slow=True) for index in range(3)]
    fast = [_Collected(f"test_fast_{index}") for index in range(300)]
    items = [*fast[:100], *known, *fast[100:200], *new_slow, *fast[200:]]
    workers = 3

    ordered = slow_tests_first_on_each_worker(items, workers)  # type: ignore[arg-type]

    assert sorted(item.name for item in ordered) == sorted(item.name for item in items)
    size, loads = len(items) // workers, []
    for worker in range(workers):
        chunk = ordered[worker * size : (worker + 1) * size]
        heads = [item for item in chunk if not item.name.startswith("test_fast_")]
        assert chunk[: len(heads)] == heads, "a long test behind a short one in its worker's slice"
        loads.append(sum(EXPECTED_SECONDS.get(item.name, DEFAULT_SLOW_SECONDS) for item in heads))
    # Longest first onto the least-loaded worker: no two loads differ by more than the longest test.
    assert max(loads) - min(loads) <= max(EXPECTED_SECONDS.values()), loads
    assert sum(loads) == sum(EXPECTED_SECONDS.values()) + 3 * DEFAULT_SLOW_SECONDS


def test_a_same_worker_module_s_long_tests_stay_on_one_worker() -> None:
    cluster = [_Collected(f"test_on_the_cluster_{index}", slow=True, module_name="test_cluster") for index in range(3)]
    others = [_Collected(f"test_long_{index}", slow=True) for index in range(5)]
    fast = [_Collected(f"test_fast_{index}") for index in range(60)]
    items = [*fast[:30], *cluster, *others, *fast[30:]]
    ordered = slow_tests_first_on_each_worker(items, 2)  # type: ignore[arg-type]
    halves = [ordered[: len(items) // 2], ordered[len(items) // 2 :]]
    holding = [half for half in halves if any(item in cluster for item in half)]
    assert len(holding) == 1 and [item for item in holding[0] if item in cluster] == cluster


def test_a_same_worker_group_s_long_tests_stay_on_one_worker_across_modules() -> None:
    shared = [
        _Collected(f"test_on_the_shared_servers_{index}", slow=True, module_name=f"test_module_{index}", group="stack")
        for index in range(3)
    ]
    others = [_Collected(f"test_long_{index}", slow=True) for index in range(5)]
    fast = [_Collected(f"test_fast_{index}") for index in range(60)]
    items = [*fast[:20], shared[0], *others, shared[1], *fast[20:40], shared[2], *fast[40:]]
    ordered = slow_tests_first_on_each_worker(items, 3)  # type: ignore[arg-type]
    size = len(items) // 3
    thirds = [ordered[worker * size : (worker + 1) * size] for worker in range(3)]
    holding = [third for third in thirds if any(item in shared for item in third)]
    assert len(holding) == 1 and [item for item in holding[0] if item in shared] == shared


def test_one_process_runs_the_long_tests_first_in_collection_order() -> None:
    items = [
        _Collected("test_fast_a"),
        _Collected("test_new_slow", slow=True),
        _Collected("test_fast_b"),
        _Collected("test_up_runs_the_pipeline_and_ctrl_c_leaves_no_process"),
    ]
    ordered = slow_tests_first_on_each_worker(items, 1)  # type: ignore[arg-type]
    assert [item.name for item in ordered] == [
        "test_new_slow",
        "test_up_runs_the_pipeline_and_ctrl_c_leaves_no_process",
        "test_fast_a",
        "test_fast_b",
    ]

"""The reorderer: partitions read at different speeds come out in event-time order."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from stream.ordering import FIRST, Reorderer


def key(ts: float, event_id: str = "e") -> tuple[float, str, str]:
    return (ts, "SRC", event_id)


def never_caught_up(partition: str) -> bool:
    return False


def always_caught_up(partition: str) -> bool:
    return True


def test_waits_for_a_partition_that_may_still_undercut() -> None:
    order: Reorderer[str] = Reorderer(max_idle_s=1.0)
    order.assign(["a", "b"], now=0.0)
    order.push("a", key(5), "a5", now=0.1)
    # b has shown nothing and is not caught up: a5 must wait
    assert order.release(now=0.2, caught_up=never_caught_up) == []
    order.push("b", key(3), "b3", now=0.3)
    # b3 is smallest; a is past 3 already
    assert [item for _, item in order.release(0.3, never_caught_up)] == ["b3"]
    order.push("b", key(7), "b7", now=0.4)
    assert [item for _, item in order.release(0.4, never_caught_up)] == ["a5"]
    assert len(order) == 1  # b7 waits for a


def test_a_caught_up_partition_holds_events_back_only_for_the_idle_time() -> None:
    order: Reorderer[str] = Reorderer(max_idle_s=0.5)
    order.assign(["a", "b"], now=0.0)
    order.push("a", key(5), "a5", now=0.1)
    assert order.release(0.4, always_caught_up) == []  # b quiet for 0.4 s only
    assert [item for _, item in order.release(0.5, always_caught_up)] == ["a5"]
    # quiet long enough, but still behind its log: wait
    order.push("a", key(6), "a6", now=0.6)
    assert order.release(5.0, never_caught_up) == []


def test_ties_in_time_are_broken_by_source_and_event_id() -> None:
    order: Reorderer[str] = Reorderer(max_idle_s=0.0)
    order.assign(["a", "b"], now=0.0)
    order.push("a", (1.0, "CUCC", "2"), "second", now=0.0)
    order.push("b", (1.0, "CMCC", "9"), "first", now=0.0)
    released = order.release(1.0, always_caught_up)
    assert [item for _, item in released] == ["first", "second"]


def test_revoked_partitions_drop_their_held_items() -> None:
    order: Reorderer[str] = Reorderer(max_idle_s=1.0)
    order.assign(["a", "b"], now=0.0)
    order.push("a", key(5), "a5", now=0.0)
    order.push("b", key(9), "b9", now=0.0)
    assert order.revoke(["b"]) == ["b9"]
    assert order.partitions == {"a"}
    assert [item for _, item in order.release(0.0, never_caught_up)] == ["a5"]


def test_late_items_are_released_and_counted() -> None:
    order: Reorderer[str] = Reorderer(max_idle_s=0.0)
    order.assign(["a"], now=0.0)
    order.push("a", key(5), "a5", now=0.0)
    assert order.release(0.0, always_caught_up) == [(key(5), "a5")]
    order.push("a", key(4), "a4", now=0.0)
    assert order.release(0.0, always_caught_up) == [(key(4), "a4")]
    assert order.late == 1
    assert order.released == key(5)


def test_items_with_the_first_key_go_straight_through() -> None:
    order: Reorderer[str] = Reorderer(max_idle_s=10.0)
    order.assign(["w", "a"], now=0.0)
    order.push("w", FIRST, "watch", now=0.0)
    assert order.release(0.0, never_caught_up) == [(FIRST, "watch")]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.lists(st.integers(0, 50), max_size=15), min_size=1, max_size=5),
    st.randoms(use_true_random=False),
)
def test_any_interleaving_of_in_order_partitions_comes_out_sorted(
    partitions: list[list[int]], rnd: random.Random
) -> None:
    """Whatever order the partitions are read in, the output is in key order."""
    streams = {
        f"p{n}": [key(ts, f"p{n}-{i:03d}") for i, ts in enumerate(sorted(times))]
        for n, times in enumerate(partitions)
    }
    order: Reorderer[str] = Reorderer(max_idle_s=1.0)
    order.assign(streams, now=0.0)
    out: list[tuple[float, str, str]] = []
    pending = {name: list(keys) for name, keys in streams.items()}
    now = 0.0
    while any(pending.values()):
        name = rnd.choice([n for n, keys in pending.items() if keys])
        k = pending[name].pop(0)
        now += 0.01
        order.push(name, k, k, now)
        # a partition is caught up once all of it has been read
        out += [item for _, item in order.release(now, lambda p: not pending[p])]
    out += [item for _, item in order.release(now + 2.0, lambda p: True)]
    everything = sorted(k for keys in streams.values() for k in keys)
    assert out == everything
    assert order.late == 0

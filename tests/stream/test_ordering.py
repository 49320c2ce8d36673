"""The merge: items from origins read at different speeds come out in event-time order."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from stream.ordering import FIRST, Key, Mark, Merge


def key(ts: float, event_id: str = "e") -> Key:
    return (ts, "SRC", event_id)


def test_waits_for_an_origin_that_has_not_reported() -> None:
    merge: Merge[str] = Merge(["a", "b"])
    merge.push(key(5), 0, "a5")
    merge.mark("a", Mark(key(5)))
    assert merge.release() == []  # b may still send something earlier
    merge.push(key(3), 0, "b3")
    merge.mark("b", Mark(key(3)))
    assert merge.release() == ["b3"]
    merge.push(key(7), 0, "b7")
    merge.mark("b", Mark(key(7)))
    assert merge.release() == ["a5"]
    assert len(merge) == 1  # b7 waits for a


def test_an_idle_origin_holds_nothing_back() -> None:
    merge: Merge[str] = Merge(["a", "b"])
    merge.push(key(5), 0, "a5")
    merge.mark("a", Mark(key(5)))
    merge.mark("b", Mark(FIRST, idle=True))
    assert merge.release() == ["a5"]
    merge.mark("b", Mark(FIRST, idle=False))  # b has something again
    merge.push(key(6), 0, "a6")
    merge.mark("a", Mark(key(6)))
    assert merge.release() == []


def test_every_origin_idle_releases_everything() -> None:
    merge: Merge[str] = Merge(["a", "b"])
    merge.push(key(9), 0, "a9")
    merge.push(key(1), 0, "a1")
    merge.mark("a", Mark(key(9), idle=True))
    merge.mark("b", Mark(FIRST, idle=True))
    assert merge.release() == ["a1", "a9"]
    assert merge.progress() == Mark(key(9), idle=True)


def test_marks_never_go_back() -> None:
    """A restarted origin repeats what it sent: its old mark still holds."""
    merge: Merge[str] = Merge(["a"])
    merge.mark("a", Mark(key(10)))
    merge.mark("a", Mark(key(4)))
    assert merge.marks["a"] == Mark(key(10))
    merge.mark("a", Mark(key(4), idle=True))
    assert merge.marks["a"] == Mark(key(10), idle=True)


def test_marks_of_unknown_origins_are_ignored() -> None:
    merge: Merge[str] = Merge(["a"])
    assert not merge.mark("z", Mark(key(1)))
    assert "z" not in merge.marks


def test_ties_in_time_are_broken_by_source_and_event_id_then_seq() -> None:
    merge: Merge[str] = Merge(["a", "b"])
    merge.push((1.0, "CUCC", "2"), 0, "second")
    merge.push((1.0, "CMCC", "9"), 1, "first, signal 1")
    merge.push((1.0, "CMCC", "9"), 0, "first, signal 0")
    merge.mark("a", Mark((1.0, "CUCC", "2")))
    merge.mark("b", Mark((1.0, "CUCC", "2")))
    assert merge.release() == ["first, signal 0", "first, signal 1", "second"]


def test_an_item_below_what_was_released_goes_at_once_and_counts_as_late() -> None:
    merge: Merge[str] = Merge(["a"])
    merge.push(key(5), 0, "a5")
    merge.mark("a", Mark(key(5)))
    assert merge.release() == ["a5"]
    merge.push(key(2), 0, "a2")
    assert merge.release() == ["a2"]
    assert merge.late == 1


def test_progress_is_the_bound_and_never_goes_back() -> None:
    merge: Merge[str] = Merge(["a", "b"])
    assert merge.progress() == Mark(FIRST)
    merge.mark("a", Mark(key(5)))
    merge.mark("b", Mark(key(8)))
    assert merge.progress() == Mark(key(5))
    merge.mark("a", Mark(key(20), idle=True))
    assert merge.progress() == Mark(key(8))


origins = st.lists(st.sampled_from("abc"), min_size=0, max_size=60)


@given(st.lists(st.integers(0, 1000), max_size=60), origins, st.randoms(use_true_random=False))
@settings(max_examples=200)
def test_origins_in_order_merge_into_global_order(
    times: list[int], owners: list[str], rnd: random.Random
) -> None:
    """However the origins' envelopes interleave, the merge releases in key order."""
    streams: dict[str, list[Key]] = {"a": [], "b": [], "c": []}
    for n, (ts, owner) in enumerate(zip(times, owners, strict=False)):
        streams[owner].append(key(ts, f"{n:03d}"))
    for keys in streams.values():
        keys.sort()
    merge: Merge[Key] = Merge(streams)
    released: list[Key] = []
    cursors = dict.fromkeys(streams, 0)
    while any(cursors[o] < len(streams[o]) for o in streams):
        origin = rnd.choice([o for o in streams if cursors[o] < len(streams[o])])
        step = rnd.randint(1, 3)
        chunk = streams[origin][cursors[origin] : cursors[origin] + step]
        cursors[origin] += len(chunk)
        for k in chunk:
            merge.push(k, 0, k)
        merge.mark(origin, Mark(chunk[-1]))
        released += merge.release()
    for origin in streams:  # all read to the end and quiet
        merge.mark(origin, Mark(merge.marks.get(origin, Mark(FIRST)).key, idle=True))
    released += merge.release()
    expected = sorted(k for keys in streams.values() for k in keys)
    assert released == expected
    assert merge.late == 0

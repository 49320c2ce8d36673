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


class View:
    """Ends as a stage's watch would see them: origin -> the end, if quiet."""

    def __init__(self, **quiet_ends: int) -> None:
        self.quiet_ends = quiet_ends

    def caught_up(self, origin: str, position: int) -> bool:
        return self.quiet_ends.get(origin) == position


def test_an_origin_read_to_its_quiet_end_holds_back_only_what_came_before_the_view() -> None:
    merge: Merge[str] = Merge(["a", "b"])
    merge.push(key(5), 0, "a5")
    merge.mark("a", Mark(key(5), position=10))
    merge.mark("b", Mark(FIRST, position=3))
    assert merge.release() == []  # without a view, b may still send something
    view = View(b=3)  # b ends at 3, where its reader is, and has been quiet
    before = merge.pushed
    merge.push(key(6), 0, "a6")  # came after the view was taken
    merge.mark("a", Mark(key(6), position=11))
    assert merge.release(view, before) == ["a5"]
    assert merge.release(View(b=3), merge.pushed) == ["a6"]


def test_an_origin_whose_end_moved_past_its_reader_holds_everything_back() -> None:
    """A reader that died said where it was; records written since are not read yet."""
    merge: Merge[str] = Merge(["a", "b"])
    merge.push(key(5), 0, "a5")
    merge.mark("a", Mark(key(5), position=10))
    merge.mark("b", Mark(key(1), position=3))
    assert merge.release(View(b=4), merge.pushed) == []  # b ends at 4 now
    assert merge.release(View(), merge.pushed) == []  # or is not quiet
    merge.mark("b", Mark(key(7), position=4))  # its new reader catches up
    assert merge.release(View(), merge.pushed) == ["a5"]


def test_every_origin_caught_up_releases_everything() -> None:
    merge: Merge[str] = Merge(["a", "b"])
    merge.push(key(9), 0, "a9")
    merge.push(key(1), 0, "a1")
    merge.mark("a", Mark(key(9), position=2))
    merge.mark("b", Mark(key(4), position=0))
    assert merge.release(View(a=2, b=0), merge.pushed) == ["a1", "a9"]
    assert merge.progress() == Mark(key(9))


def test_marks_never_go_back() -> None:
    """A restarted origin repeats what it sent: its old mark still holds."""
    merge: Merge[str] = Merge(["a"])
    merge.mark("a", Mark(key(10), position=7))
    merge.mark("a", Mark(key(4), position=3))
    assert merge.marks["a"] == Mark(key(10), position=7)


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


def test_progress_is_how_far_releases_went_and_never_goes_back() -> None:
    merge: Merge[str] = Merge(["a", "b"])
    assert merge.progress() == Mark(FIRST)
    merge.mark("a", Mark(key(5), position=1))
    merge.mark("b", Mark(key(8), position=1))
    merge.release()
    assert merge.progress() == Mark(key(5))
    merge.mark("a", Mark(key(20), position=2))
    merge.release(View(a=2), merge.pushed)
    assert merge.progress() == Mark(key(8))
    merge.release()
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
        merge.mark(origin, Mark(merge.marks.get(origin, Mark(FIRST)).key, position=0))
    released += merge.release(View(a=0, b=0, c=0), merge.pushed)
    expected = sorted(k for keys in streams.values() for k in keys)
    assert released == expected
    assert merge.late == 0


def test_blocking_names_the_origins_the_first_held_item_waits_for() -> None:
    merge: Merge[str] = Merge(["a", "b", "c"])
    assert merge.blocking(None) == []
    merge.push(key(5), 0, "a5")
    merge.mark("a", Mark(key(5), position=1))
    merge.mark("b", Mark(key(2), position=4))
    assert merge.blocking(None) == ["b", "c"]  # c never reported
    assert merge.blocking(View(b=4)) == ["c"]

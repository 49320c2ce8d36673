"""The outbox (what a sender has for each partition) and the state cache (what changed)."""

from __future__ import annotations

from datetime import date

import orjson

from rules.state import WatchEntry
from stream.cache import Row, StateCache
from stream.envelope import WatchItem, decode_envelope
from stream.ordering import FIRST, Mark
from stream.outbox import MAX_ITEMS, Outbox, Timing

TIMING = Timing(tick_s=0.1, heartbeat_s=1.0)
ENTRY = WatchEntry("all", date(2025, 1, 1), date(2030, 1, 1), "credit_punishment")


def item(n: int) -> WatchItem:
    return WatchItem("list/0", f"k:{n}", ENTRY)


def test_items_go_with_the_marks_and_quiet_partitions_get_marks_when_they_move() -> None:
    box = Outbox("identity", partitions=3, timing=TIMING)
    box.add(1, item(1))
    marks = {"in/0": Mark((5.0, "S", "1"))}
    sent = box.envelopes(marks, now=10.0)
    assert [p for p, _ in sent] == [0, 1, 2]  # the first time, every partition hears from us
    envelope = decode_envelope(dict(sent)[1], "identity")
    assert envelope.items == [item(1)] and envelope.marks == marks
    assert box.envelopes(marks, now=10.05) == []  # nothing new
    moved = {"in/0": Mark((6.0, "S", "2"))}
    assert box.envelopes(moved, now=10.05) == []  # moved, but the tick is not up
    assert [p for p, _ in box.envelopes(moved, now=10.2)] == [0, 1, 2]
    assert box.envelopes(moved, now=10.5) == []
    assert [p for p, _ in box.envelopes(moved, now=11.3)] == [0, 1, 2]  # the heartbeat


def test_many_items_are_split_and_only_the_last_envelope_carries_the_marks() -> None:
    box = Outbox("identity", partitions=1, timing=TIMING)
    for n in range(MAX_ITEMS * 2 + 3):
        box.add(0, item(n))
    marks = {"in/0": Mark(FIRST, 7)}
    envelopes = [decode_envelope(raw, "identity") for _, raw in box.envelopes(marks, now=1.0)]
    assert [len(e.items) for e in envelopes] == [MAX_ITEMS, MAX_ITEMS, 3]
    assert [e.marks for e in envelopes] == [{}, {}, marks]
    assert [i for e in envelopes for i in e.items] == [item(n) for n in range(MAX_ITEMS * 2 + 3)]
    assert len(box) == 0


class DictStore:
    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.reads = 0
        self.offset: int | None = None

    def get(self, key: bytes) -> bytes | None:
        self.reads += 1
        return self.data.get(key)

    def write(self, rows: list[Row], changelog_offset: int) -> None:
        self.data.update(rows)
        self.offset = changelog_offset


def counter_cache(store: DictStore, limit: int = 2) -> StateCache[list[int]]:
    return StateCache(store, orjson.loads, orjson.dumps, list, limit)


def test_the_cache_takes_what_changed_encoded_then_and_only_once() -> None:
    store = DictStore()
    store.data[b"a"] = b"[1]"
    cache = counter_cache(store)
    a = cache.get(b"a")
    a.append(2)
    cache.changed(b"a")
    cache.get(b"b").append(7)
    cache.changed(b"b")
    rows = cache.take()
    a.append(3)  # changed after the take: not in these rows
    assert sorted(rows) == [(b"a", b"[1,2]"), (b"b", b"[7]")]
    assert cache.take() == []
    assert cache.added == 1  # b was new
    cache.changed(b"a")
    assert cache.take() == [(b"a", b"[1,2,3]")]


def test_the_cache_keeps_busy_subjects_and_trims_clean_ones() -> None:
    store = DictStore()
    cache = counter_cache(store, limit=2)
    for key in (b"a", b"b", b"c"):
        cache.get(key)
        cache.changed(key)
    cache.take()
    cache.get(b"c")
    cache.changed(b"c")  # dirty again: never trimmed
    cache.get(b"a")  # used last
    cache.trim()
    assert list(cache.entries) == [b"c", b"a"]
    reads = store.reads
    cache.get(b"a")
    assert store.reads == reads  # from the cache, not the store

"""Event-time order across origins: items are released once every origin has passed them.

A stage receives items (events, signals) from several *origins*: an input
partition for the identity and outlet stages, an identity partition for the
agent stage. Each origin sends its items in key order and, with them, its
*mark*: the key up to which it has sent everything it will send to this
stage, and, for an input partition, the offset its reader will read next.
`Merge` holds the items and releases, in key order, those no origin can
still undercut.

An origin whose mark is behind holds everything back until it moves, unless
it has nothing more to send: its reader has read up to the partition's end
and the partition has been quiet for a while (like Kafka Streams'
`max.task.idle.ms`, KIP-353). The stage checks that against the end offsets
it asks Kafka for (an `Ends` view), not by the reader's word, so a reader
that died cannot leave a partition counted as done while new records arrive
in it. Only items that had arrived before that view was taken may go on its
strength: a record appended to the partition after the view was taken was
appended after them, and so (events reaching Kafka in event-time order)
sorts after them.

Marks only move forward: a mark from a restarted origin that re-sends what it
sent before says nothing new, so the larger key is kept. Which origins exist
is fixed when the merge is made; one that has not reported yet holds back
everything after the first key.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

Key = tuple[float, str, str]
T = TypeVar("T")

FIRST: Key = (float("-inf"), "", "")
NO_POSITION = -1


@dataclass(frozen=True, slots=True)
class Mark:
    """An origin's progress: everything up to `key` sent, and (an input) where its reader is."""

    key: Key
    position: int = NO_POSITION  # the next offset the reader reads; -1 if not an input


class Ends(Protocol):
    """A view of the input partitions' ends, taken at one moment."""

    def caught_up(self, origin: str, position: int) -> bool:
        """Whether `position` is the partition's end, and it has been quiet long enough."""
        ...


class Merge(Generic[T]):
    """Items from several in-order origins, released in global key order."""

    def __init__(self, origins: Iterable[str]) -> None:
        self.origins = frozenset(origins)
        self.marks: dict[str, Mark] = {}
        self.heap: list[tuple[Key, int, int, T]] = []
        self.released: Key = FIRST  # the largest key released so far
        self.passed: Key = FIRST  # every item up to this key has been released
        self.late = 0  # items released after a larger key had been
        self.pushed = 0  # items pushed so far: `release` takes a view valid up to a count

    def push(self, key: Key, seq: int, item: T) -> None:
        """Hold `item`; `seq` orders items of one key (several signals of one event)."""
        self.pushed += 1
        heapq.heappush(self.heap, (key, seq, self.pushed, item))

    def mark(self, origin: str, mark: Mark) -> bool:
        """Take an origin's mark; False if the origin is not one of this merge's."""
        if origin not in self.origins:
            return False
        old = self.marks.get(origin)
        if old is None:
            self.marks[origin] = mark
        else:
            key = mark.key if mark.key > old.key else old.key
            self.marks[origin] = Mark(key, max(mark.position, old.position))
        return True

    def bounds(self, ends: Ends | None) -> tuple[Key, Key | None]:
        """(strict, loose): the smallest mark; the smallest of origins not caught up (None: none).

        Items up to the strict bound may go at once; up to the loose one only
        if they arrived before `ends` was taken.
        """
        strict: Key | None = None
        loose: Key | None = None
        for origin in self.origins:
            mark = self.marks.get(origin)
            if mark is None:
                return FIRST, FIRST
            if strict is None or mark.key < strict:
                strict = mark.key
            done = ends is not None and ends.caught_up(origin, mark.position)
            if not done and (loose is None or mark.key < loose):
                loose = mark.key
        return strict or FIRST, loose

    def release(self, ends: Ends | None = None, before: int = 0) -> list[T]:
        """The items no origin can still undercut, in key order.

        `ends` was taken once the first `before` items had been pushed.
        """
        strict, loose = self.bounds(ends)
        heap = self.heap
        out: list[T] = []
        while heap:
            key, _, count, item = heap[0]
            if key > strict and (count > before or (loose is not None and key > loose)):
                break
            heapq.heappop(heap)
            if key < self.released:
                self.late += 1
            else:
                self.released = key
            out.append(item)
        self._note_passed(strict, loose if ends is not None else strict)
        return out

    def _note_passed(self, strict: Key, loose: Key | None) -> None:
        if self.heap and (loose is None or self.heap[0][0] <= loose):
            passed = strict  # something below the loose bound waits for a newer view
        elif loose is None:  # every origin is done: all any of them has shown is passed
            passed = max(mark.key for mark in self.marks.values())
        else:
            passed = loose
        self.passed = max(self.passed, passed, self.released)

    def progress(self) -> Mark:
        """This merge's own mark, for the stage after it: everything up to it was released."""
        return Mark(self.passed)

    def blocking(self, ends: Ends | None) -> list[str]:
        """The origins the first held item waits for (behind it, and not caught up)."""
        if not self.heap:
            return []
        head = self.heap[0][0]

        def holds(origin: str) -> bool:
            mark = self.marks.get(origin)
            if mark is None:
                return True
            return mark.key < head and not (ends and ends.caught_up(origin, mark.position))

        return sorted(origin for origin in self.origins if holds(origin))

    def waiting(self) -> bool:
        """Whether items wait that the strict bound does not release (a new view might)."""
        return bool(self.heap) and self.heap[0][0] > self.bounds(None)[0]

    def __len__(self) -> int:
        return len(self.heap)

"""Event-time order across origins: items are released once every origin has passed them.

A stage receives items (events, signals) from several *origins*: an input
partition for the identity and outlet stages, an identity partition for the
agent stage. Each origin sends its items in key order and, with them, its
*mark*: the key up to which it has sent everything it will send to this
stage (or that it is idle: caught up with its log and quiet for a while,
like Kafka Streams' `max.task.idle.ms`, KIP-353). `Merge` holds the items
and releases, in key order, those no origin can still undercut.

Marks only move forward: a mark from a restarted origin that re-sends what it
sent before says nothing new, so the larger key is kept. Which origins exist
is fixed when the merge is made; one that has not reported yet holds back
everything after the first key.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

Key = tuple[float, str, str]
T = TypeVar("T")

FIRST: Key = (float("-inf"), "", "")


@dataclass(frozen=True, slots=True)
class Mark:
    """An origin's progress: everything up to `key` sent; `idle`: nothing pending either."""

    key: Key
    idle: bool = False


class Merge(Generic[T]):
    """Items from several in-order origins, released in global key order."""

    def __init__(self, origins: Iterable[str]) -> None:
        self.origins = frozenset(origins)
        self.marks: dict[str, Mark] = {}
        self.heap: list[tuple[Key, int, int, T]] = []
        self.released: Key = FIRST  # the largest key released so far
        self.late = 0  # items released after a larger key had been
        self._count = 0

    def push(self, key: Key, seq: int, item: T) -> None:
        """Hold `item`; `seq` orders items of one key (several signals of one event)."""
        self._count += 1
        heapq.heappush(self.heap, (key, seq, self._count, item))

    def mark(self, origin: str, mark: Mark) -> bool:
        """Take an origin's mark; False if the origin is not one of this merge's."""
        if origin not in self.origins:
            return False
        old = self.marks.get(origin)
        if old is None or mark.key >= old.key:
            self.marks[origin] = mark
        elif old.idle != mark.idle:
            self.marks[origin] = Mark(old.key, mark.idle)
        return True

    def bound(self) -> Key | None:
        """The key up to which items may go; None when every origin is idle (no bound)."""
        bound: Key | None = None
        for origin in self.origins:
            mark = self.marks.get(origin)
            if mark is None:
                return FIRST
            if not mark.idle and (bound is None or mark.key < bound):
                bound = mark.key
        return bound

    def release(self) -> list[T]:
        """The items no origin can still undercut, in key order."""
        bound = self.bound()
        heap = self.heap
        out: list[T] = []
        while heap and (bound is None or heap[0][0] <= bound):
            key, _, _, item = heapq.heappop(heap)
            if key < self.released:
                self.late += 1
            else:
                self.released = key
            out.append(item)
        return out

    def progress(self) -> Mark:
        """This merge's own mark, for the stage after it: how far what it released goes."""
        bound = self.bound()
        if bound is None:
            known = max((mark.key for mark in self.marks.values()), default=FIRST)
            return Mark(max(known, self.released), idle=not self.heap)
        return Mark(max(bound, self.released))

    def __len__(self) -> int:
        return len(self.heap)

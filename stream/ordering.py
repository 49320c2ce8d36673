"""Event-time order across partitions, the way Kafka Streams picks records (KIP-353).

A worker reads several partitions of two topics at different speeds, so the
order records arrive in is not event-time order even when they were produced
in it. `Reorderer` holds records and releases the one with the smallest key
only when no assigned partition can still deliver a smaller one: every other
partition has already shown a key at least as large, or it is caught up with
its log and has been quiet for `max_idle_s`. Each partition is taken to be in
key order by itself (the contract asks producers to write in event-time order).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

Key = tuple[float, str, str]
P = TypeVar("P", bound=Hashable)

FIRST: Key = (float("-inf"), "", "")


@dataclass(order=True, slots=True)
class Held:
    key: Key
    arrival: int
    partition: Any = field(compare=False)
    item: Any = field(compare=False)


class Reorderer(Generic[P]):
    """Holds items from in-order partitions and releases them in global key order."""

    def __init__(self, max_idle_s: float) -> None:
        self.max_idle_s = max_idle_s
        self.heap: list[Held] = []
        self.last_key: dict[P, Key] = {}
        self.last_arrival: dict[P, float] = {}
        self.partitions: set[P] = set()
        self.released: Key = FIRST
        self.late = 0
        self._count = 0

    def assign(self, partitions: Iterable[P], now: float) -> None:
        """Start waiting on `partitions` (as if each had delivered something at `now`)."""
        for partition in partitions:
            if partition not in self.partitions:
                self.partitions.add(partition)
                self.last_arrival[partition] = now

    def revoke(self, partitions: Iterable[P]) -> list[Any]:
        """Stop waiting on `partitions`; return their held items, which are dropped."""
        gone = set(partitions) & self.partitions
        if not gone:  # filtering the heap costs as much as all it holds: only when needed
            return []
        self.partitions -= gone
        for partition in gone:
            self.last_key.pop(partition, None)
            self.last_arrival.pop(partition, None)
        dropped = [held.item for held in self.heap if held.partition in gone]
        self.heap = [held for held in self.heap if held.partition not in gone]
        heapq.heapify(self.heap)
        return dropped

    def push(self, partition: P, key: Key, item: Any, now: float) -> None:
        self.partitions.add(partition)
        self.last_arrival[partition] = now
        if key > self.last_key.get(partition, FIRST):
            self.last_key[partition] = key
        self._count += 1
        heapq.heappush(self.heap, Held(key, self._count, partition, item))

    def release(self, now: float, caught_up: Callable[[P], bool]) -> list[tuple[Key, Any]]:
        """The items no partition can still undercut, in key order."""
        out: list[tuple[Key, Any]] = []
        while self.heap:
            head = self.heap[0]
            if not all(
                self._passed(p, head.key, now, caught_up)
                for p in self.partitions
                if p != head.partition
            ):
                break
            heapq.heappop(self.heap)
            if head.key < self.released:
                self.late += 1
            else:
                self.released = head.key
            out.append((head.key, head.item))
        return out

    def _passed(self, partition: P, key: Key, now: float, caught_up: Callable[[P], bool]) -> bool:
        if self.last_key.get(partition, FIRST) >= key:
            return True
        quiet = now - self.last_arrival.get(partition, now)
        return quiet >= self.max_idle_s and caught_up(partition)

    def __len__(self) -> int:
        return len(self.heap)

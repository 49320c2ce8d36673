"""What a sender has for each partition of a topic, until it sends it as envelopes.

The input reader fills one outbox for the identity topic and one for the
outlet topic, the identity stage one for the agent topic. `envelopes` turns
what is pending into records: every partition with items gets them, with the
sender's marks in the last one; a partition with none gets the marks alone
when they moved and it has not heard from this sender for `tick_s`, or
when it has not heard anything for `heartbeat_s` (so a stage that restarts
learns every origin's mark again within that time).
"""

from __future__ import annotations

from dataclasses import dataclass

from stream.envelope import Envelope, Item, encode_envelope
from stream.ordering import Mark

MAX_ITEMS = 1_000  # per envelope: a few hundred KiB of events at most


@dataclass(frozen=True, slots=True)
class Timing:
    tick_s: float
    heartbeat_s: float


class Outbox:
    """Items waiting to go to the partitions of one topic."""

    def __init__(self, kind: str, partitions: int, timing: Timing) -> None:
        self.kind = kind
        self.partitions = partitions
        self.timing = timing
        self.items: dict[int, list[Item]] = {}
        self.sent_marks: dict[int, dict[str, Mark]] = {}
        self.sent_at: dict[int, float] = {}

    def add(self, partition: int, item: Item) -> None:
        self.items.setdefault(partition, []).append(item)

    def __len__(self) -> int:
        return sum(len(items) for items in self.items.values())

    def envelopes(self, marks: dict[str, Mark], now: float) -> list[tuple[int, bytes]]:
        """(partition, record) for everything due; `marks` is how far the sender has got."""
        out = []
        for partition in range(self.partitions):
            items = self.items.pop(partition, [])
            if not items and not self._due(partition, marks, now):
                continue
            # full envelopes first; the marks go with the last, after every item they cover
            cut = len(items) - ((len(items) - 1) % MAX_ITEMS + 1) if items else 0
            for start in range(0, cut, MAX_ITEMS):
                chunk = Envelope(self.kind, items[start : start + MAX_ITEMS])
                out.append((partition, encode_envelope(chunk)))
            last = Envelope(self.kind, items[cut:], dict(marks))
            out.append((partition, encode_envelope(last)))
            self.sent_marks[partition] = dict(marks)
            self.sent_at[partition] = now
        return out

    def _due(self, partition: int, marks: dict[str, Mark], now: float) -> bool:
        quiet = now - self.sent_at.get(partition, float("-inf"))
        if quiet >= self.timing.heartbeat_s:
            return True
        return quiet >= self.timing.tick_s and marks != self.sent_marks.get(partition)

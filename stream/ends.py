"""Where each input partition ends: what lets a stage stop waiting for a quiet one.

A stage merging input partitions must know when one that sends nothing has
nothing to send: its reader has read to the end, and the end has not moved
for `worker.order_idle_ms`. The reader's own view of the end is as old as its
last fetch, and a reader that died says nothing at all, so each worker asks
Kafka itself, every `worker.tick_ms`, with a consumer that belongs to no
group, and hands the stages a view (`Snapshot`) they check the readers'
marks against (stream/ordering.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from rules.config import Settings
from stream.security import aiokafka_options


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The input partitions' end offsets at one moment, and which had been quiet by then."""

    ends: dict[str, int]
    quiet: frozenset[str]

    def caught_up(self, origin: str, position: int) -> bool:
        return origin in self.quiet and self.ends.get(origin) == position


def _partition(origin: str) -> TopicPartition:
    topic, _, partition = origin.rpartition("/")
    return TopicPartition(topic, int(partition))


class EndWatch:
    """Polls the end offsets of the input partitions ("topic/partition" origins)."""

    def __init__(self, settings: Settings, origins: frozenset[str]) -> None:
        self.settings = settings
        self.partitions = {origin: _partition(origin) for origin in origins}
        self.idle_s = settings.worker.order_idle_ms / 1000
        self.seen: dict[str, tuple[int, float]] = {}  # origin -> (end, when first seen there)
        self.consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        settings = self.settings
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap.split(","),
            client_id=f"{settings.worker.app_id}-ends",
            group_id=None,
            enable_auto_commit=False,
            **aiokafka_options(settings.security),
        )
        await self.consumer.start()

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()

    async def poll(self) -> Snapshot:
        """Ask Kafka where every input partition ends now."""
        assert self.consumer is not None, "not started"
        ends = await self.consumer.end_offsets(list(self.partitions.values()))
        return self.note({origin: ends[tp] for origin, tp in self.partitions.items()})

    def note(self, ends: dict[str, int], now: float | None = None) -> Snapshot:
        """The snapshot of `ends`, read at `now`: quiet where the end has not moved for a while."""
        now = time.monotonic() if now is None else now
        quiet = set()
        for origin, end in ends.items():
            seen = self.seen.get(origin)
            if seen is None or seen[0] != end:
                self.seen[origin] = seen = (end, now)
            if now - seen[1] >= self.idle_s:
                quiet.add(origin)
        return Snapshot(ends, frozenset(quiet))

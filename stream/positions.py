"""Where a stage's partition starts, so that it reads its envelopes strictly in offset order.

The stages commit their offsets themselves (stream/flush.py): after the last
envelope all of whose items were screened, counting the envelopes in the
order faust's stream delivered them. That is only right if the stream
delivers every envelope, once, in offset order, and around a start or a
rebalance faust's does not (faust-streaming 0.15.3):

- its fetcher drops a record it could not hand on while the flow was
  suspended, and the stream skips one fetched under an older generation or
  before the flow resumed (`Consumer._drain_messages`, `Stream.__aiter__`);
  faust's own acknowledgements never pass such a gap, and the next
  rebalance reads it again, but the stages' commits would;
- after its seek to the committed offsets it delivers again what it had
  fetched before.

A worker restarted on an empty data directory showed it: one identity
partition's first envelope after the restart was the seventh, the five
before it (the holdings and watchlist entries) were never screened, and
every alert that needed them was missing.

So each partition of a stage knows the offset of the envelope it takes
next: at first the group's committed offset (or the partition's start, if
there is none), asked of Kafka when the partition's first envelope comes. An
envelope before it was read already and is dropped; one after it means
faust left some out: it is dropped too, and faust's consumer is sent back to
read from the expected one (`Consumer.seek_wait`, faust's public call).
"""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition

from rules.config import Settings
from stream.security import aiokafka_options


class Positions:
    """Asks Kafka where the worker's group stands on a partition, and where the partition starts."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.group = settings.worker.app_id
        self.admin: AIOKafkaAdminClient | None = None
        self.consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        settings = self.settings
        options = aiokafka_options(settings.security)
        client_id = f"{settings.worker.app_id}-positions"
        self.admin = AIOKafkaAdminClient(
            bootstrap_servers=settings.bootstrap.split(","), client_id=client_id, **options
        )
        await self.admin.start()
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap.split(","),
            client_id=client_id,
            group_id=None,
            enable_auto_commit=False,
            **options,
        )
        await self.consumer.start()

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()
        if self.admin is not None:
            await self.admin.close()

    async def start_offset(self, topic: str, partition: int) -> int:
        """The offset the group reads the partition from: its committed one, or the log's start."""
        assert self.admin is not None, "not started"
        tp = TopicPartition(topic, partition)
        offsets = await self.admin.list_consumer_group_offsets(self.group, partitions=[tp])
        committed = offsets.get(tp)
        if committed is not None and committed.offset >= 0:
            return max(committed.offset, await self.log_start(topic, partition))
        return await self.log_start(topic, partition)

    async def log_start(self, topic: str, partition: int) -> int:
        """The partition's first offset still in Kafka."""
        assert self.consumer is not None, "not started"
        tp = TopicPartition(topic, partition)
        starts = await self.consumer.beginning_offsets([tp])
        return int(starts[tp])

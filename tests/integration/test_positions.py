"""stream/positions.py against the real broker: where a stage's partition starts.

A stage takes its envelopes strictly in offset order from this offset (the
group's committed one, else the partition's first still in Kafka), so that
an envelope faust's stream leaves out is read again rather than committed
past. The worker-level proof is tests/integration/test_faults.py (a restart
on an empty data directory, where faust's stream skips envelopes).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import replace

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient
from kafka.structs import OffsetAndMetadata

from rules.config import Settings
from stream.positions import Positions


def test_a_partition_starts_at_the_committed_offset_or_the_first_left(
    kafka_bootstrap: str, kafka_admin: KafkaAdminClient, topic_factory: Callable[..., str]
) -> None:
    topic = topic_factory(partitions=3, prefix="positions")
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    for partition in range(3):
        for n in range(5):
            producer.send(topic, b"%d" % n, partition=partition)
    producer.flush()
    producer.close()
    group = f"positions-{uuid.uuid4().hex[:8]}"
    committer = KafkaConsumer(
        bootstrap_servers=kafka_bootstrap, group_id=group, enable_auto_commit=False
    )
    committer.commit({TopicPartition(topic, 0): OffsetAndMetadata(4, "", -1)})
    committer.close()
    # partition 2 lost its first three records (retention, say); partition 1 has no commit
    kafka_admin.delete_records({TopicPartition(topic, 2): 3})

    settings = Settings(bootstrap=kafka_bootstrap)
    settings = replace(settings, worker=replace(settings.worker, app_id=group))

    async def ask() -> list[tuple[int, int]]:
        positions = Positions(settings)
        await positions.start()
        try:
            return [
                (await positions.start_offset(topic, p), await positions.log_start(topic, p))
                for p in range(3)
            ]
        finally:
            await positions.stop()

    assert asyncio.run(ask()) == [(4, 0), (0, 0), (3, 3)]

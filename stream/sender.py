"""The worker's own producer: alerts, dead letters, envelopes and changelog records.

One aiokafka producer, idempotent (so retries neither repeat nor reorder
records in a partition) and acknowledged by every in-sync replica. Records
that belong together go as one produce batch (`send_rows`), which costs a few
microseconds a record instead of the tens a single `send` costs. A send that
Kafka never acknowledges (the brokers gone for longer than
`request_timeout_ms`) fails its future; the stages then stop the worker, so
that a restart reads again from the last commit rather than lose it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer

from rules.config import Settings
from stream.security import aiokafka_options

# Envelopes and state rows can be large; the worker's own topics are made to take them.
MAX_REQUEST_BYTES = 8 * 1024 * 1024
BATCH_BYTES = 1024 * 1024


class Sender:
    """Sends records and hands back futures that resolve once Kafka has them."""

    def __init__(self, settings: Settings, client_id: str) -> None:
        self.settings = settings
        self.client_id = client_id
        self._producer: AIOKafkaProducer | None = None

    @property
    def producer(self) -> AIOKafkaProducer:
        assert self._producer is not None, "the sender has not started"
        return self._producer

    async def start(self) -> None:
        """Connect (aiokafka makes its producer inside the running event loop)."""
        settings = self.settings
        self._producer = AIOKafkaProducer(
            bootstrap_servers=settings.bootstrap.split(","),
            client_id=self.client_id,
            acks="all",
            enable_idempotence=True,
            linger_ms=settings.worker.linger_ms,
            max_batch_size=BATCH_BYTES,
            max_request_size=MAX_REQUEST_BYTES,
            request_timeout_ms=settings.worker.delivery_timeout_ms,
            **aiokafka_options(settings.security),
        )
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()

    async def send(
        self, topic: str, value: bytes, key: bytes | None = None, partition: int | None = None
    ) -> asyncio.Future[Any]:
        """Queue one record; the future resolves to its metadata once Kafka has it."""
        future: asyncio.Future[Any] = await self.producer.send(
            topic, value=value, key=key, partition=partition
        )
        return future

    async def send_rows(
        self, topic: str, partition: int, rows: Sequence[tuple[bytes, bytes | None]]
    ) -> tuple[list[asyncio.Future[Any]], int]:
        """Queue `rows` to one partition in as few batches as fit; (futures, records in the last).

        The last batch's future resolves to its base offset: that plus the
        returned count, minus one, is the offset of the last row.
        """
        futures: list[asyncio.Future[Any]] = []
        batch = self.producer.create_batch()
        for key, value in rows:
            if batch.append(key=key, value=value, timestamp=None) is None:
                futures.append(await self.producer.send_batch(batch, topic, partition=partition))
                batch = self.producer.create_batch()
                if batch.append(key=key, value=value, timestamp=None) is None:
                    raise ValueError(f"a record of {len(value or b'')} bytes is too large to send")
        count = batch.record_count()
        if count:
            futures.append(await self.producer.send_batch(batch, topic, partition=partition))
        return futures, count

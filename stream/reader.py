"""The input reader: carriers', banks' and list keepers' records in, envelopes out.

It reads the input topics in batches with an aiokafka consumer of its own
(group `<app_id>-input`), which costs a fraction of faust's per-message path;
it holds no state, so its partitions need not follow the tables'. Each record
is validated and pseudonymised (a bad one goes to the dead-letter topic with
its reason), then routed: an event to its identity's partition of the
identity topic and, if outlet rules screen it, to its outlet's partition of
the outlet topic; a watchlist change or holdings snapshot to its identity's
partition; a police verdict, without its free-text note, to the cases.

Nothing is reordered here. Each input partition is an *origin*: the reader
sends, with the envelopes, how far it has read each one (its mark: the last
key, and the next offset to read), and the stages merge the origins back
into event-time order. Watchlist and holdings partitions are origins too,
whose items all sort first: until they are read to their end, no event goes
ahead of an entry or a snapshot that could concern it. Verdicts are not: the
cases take them in the order they come.

Offsets are committed once Kafka has every envelope and dead letter made
from the records before them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from rules.cases import verdict_row
from rules.deadletter import encode_dead_letter
from rules.disposition import parse_disposition
from rules.errors import InvalidEvent, InvalidRecord
from rules.event import EARLIEST_TIME, parse_event, pseudonymise
from rules.holdings import KEY_SEPARATOR, Snapshot, parse_holding
from rules.implicated import Opened, number_key, parse_implicated, report_of
from rules.replay import LATE, sort_key
from rules.watchlist import is_long, parse_watch, watch_identity
from stream.envelope import (
    Envelope,
    EventItem,
    HoldingItem,
    Item,
    OpenedItem,
    ReportItem,
    VerdictItem,
    WatchItem,
    encode_envelope,
)
from stream.ordering import FIRST, Mark
from stream.outbox import Outbox
from stream.partitioner import cached_partition_of, partitions_of
from stream.security import aiokafka_options

if TYPE_CHECKING:
    from stream.app import Wiring

log = logging.getLogger("duanka.reader")

# send what was read once the oldest of it has waited this long (or there is this much)
MAX_PENDING = 20_000


def origin_of(tp: Any) -> str:
    return f"{tp.topic}/{tp.partition}"


class InputReader:
    """Reads the input topics and feeds the identity and outlet stages."""

    def __init__(self, wiring: Wiring) -> None:
        self.w = wiring
        settings = wiring.settings
        self.topics = settings.topics
        self.identity_box = Outbox("identity", wiring.partitions, wiring.timing)
        self.outlet_box = Outbox("outlet", wiring.partitions, wiring.timing)
        self.number_box = Outbox("number", wiring.partitions, wiring.timing)
        self.marks: dict[str, Mark] = {}
        self.assigned: set[TopicPartition] = set()
        self.positions: dict[TopicPartition, int] = {}  # the next offset to read
        # partitions read from the record before their committed offset, for its key only
        self.peeking: dict[TopicPartition, int] = {}
        self.uncommitted: set[TopicPartition] = set()
        self.dead: list[tuple[bytes | None, bytes]] = []  # dead letters to send
        self.verdicts: list[Item] = []  # for the cases
        self.pending_since: float | None = None
        self.sent_offsets: dict[TopicPartition, int] = {}  # sent, not yet committed
        self.committed_at = 0.0
        self.commit_s = settings.worker.commit_ms / 1000
        self.linger_s = settings.worker.linger_ms / 1000
        self.sending = asyncio.Lock()
        self.consumer: AIOKafkaConsumer | None = None

    def make_consumer(self) -> AIOKafkaConsumer:
        settings = self.w.settings
        return AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap.split(","),
            group_id=f"{settings.worker.app_id}-input",
            client_id=f"{settings.worker.app_id}-input",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=10_000,
            heartbeat_interval_ms=1_000,
            rebalance_timeout_ms=10_000,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            # a steady trickle is fetched once per linger, not once per record
            fetch_min_bytes=256 * 1024,
            fetch_max_wait_ms=max(1, settings.worker.linger_ms),
            **aiokafka_options(settings.security),
        )

    async def run(self) -> None:
        """Read until cancelled."""
        consumer = self.consumer = self.make_consumer()
        topics = self.topics
        inputs = [
            *topics.inputs,
            topics.watchlist,
            topics.holdings,
            topics.dispositions,
            topics.implicated,
        ]
        consumer.subscribe(inputs, listener=Rebalance(self))
        await consumer.start()
        try:
            while True:
                batches = await consumer.getmany(
                    timeout_ms=self.w.settings.worker.tick_ms,
                    max_records=self.w.settings.worker.max_batch,
                )
                now = time.monotonic()
                arrived = time.time()
                for tp, records in batches.items():
                    self.route([self.take(tp, record, now, arrived) for record in records])
                    await asyncio.sleep(0)
                await self.find_positions(consumer)
                if self.due(now):
                    await self.send(now)
        finally:
            with contextlib.suppress(Exception):  # a clean stop commits what was sent
                await asyncio.wait_for(self.send(time.monotonic(), commit=True), 5.0)
            self.consumer = None
            await consumer.stop()

    # ---------------------------------------------------------------- records

    def take(
        self, tp: TopicPartition, record: Any, now: float, arrived: float
    ) -> EventItem | WatchItem | HoldingItem | VerdictItem | ReportItem | None:
        """The item a record makes (None once it is dead-lettered); moves the partition's mark.

        None too for a record of a partition taken away since it was fetched.
        """
        if tp not in self.assigned:
            return None
        origin = origin_of(tp)
        if tp in self.peeking and self.peek(tp, record):
            return None
        position = self.positions[tp] = record.offset + 1
        self.uncommitted.add(tp)
        if self.pending_since is None:
            self.pending_since = now
        mark = self.marks.get(origin, Mark(FIRST))
        item: EventItem | WatchItem | HoldingItem | VerdictItem | ReportItem
        try:
            if tp.topic == self.topics.implicated:
                item = self.report_item(origin, record)
            elif tp.topic == self.topics.watchlist:
                item = self.watch_item(origin, record)
            elif tp.topic == self.topics.holdings:
                item = self.holding_item(origin, record)
            elif tp.topic == self.topics.dispositions:
                item = self.verdict_item(origin, record)
            else:
                item = self.event_item(origin, record, arrived)
        except InvalidRecord as error:
            self.reject(record, error)
            self.marks[origin] = Mark(mark.key, position)
            return None
        key = item.key
        self.marks[origin] = Mark(key if key > mark.key else mark.key, position)
        return item

    def peek(self, tp: TopicPartition, record: Any) -> bool:
        """Whether `record` is the one before where reading resumes: it gives the mark its key.

        A reader that takes a partition over knows where to go on from, but not
        the key its predecessor got to; the stages need that key, or a stage
        that starts afresh could not tell how far a quiet partition has got.
        """
        start = self.peeking.pop(tp)
        if record.offset >= start:
            return False  # the record before is gone (retention): nothing to learn
        key = sort_key(record.value or b"")
        if key[0] != LATE:
            origin = origin_of(tp)
            mark = self.marks.get(origin, Mark(FIRST, start))
            self.marks[origin] = Mark(max(key, mark.key), start)
        return True

    def event_item(self, origin: str, record: Any, arrived: float) -> EventItem:
        if record.value is None:
            raise InvalidEvent("record", "no value (a null record)")
        event = parse_event(record.value)
        self.w.metrics.event_in(record.topic, event.event_type)
        return EventItem(origin, pseudonymise(event, self.w.pseudonymizer), arrived)

    def watch_item(self, origin: str, record: Any) -> WatchItem:
        """A watchlist record (or, with a null value, a removal) for the identity it names."""
        pseudonymizer = self.w.pseudonymizer
        if record.value is not None:
            watch = parse_watch(record.value)
            key = pseudonymizer.subject_key(watch.id_type, watch.id_number)
            item = WatchItem(origin, key, watch.entry)
            if is_long(watch.entry):
                entry = watch.entry
                self.w.metrics.watch_long.inc()
                log.warning(
                    "unusual watchlist entry: %s to %s is more than 5 years (list %s, "
                    "topic %s partition %d offset %d); accepted",
                    entry.since,
                    entry.until,
                    entry.list[:40],
                    record.topic,
                    record.partition,
                    record.offset,
                )
        else:
            if not record.key:
                raise InvalidRecord("key", "a watchlist record is keyed by its id number")
            try:
                id_type, number = watch_identity(record.key.decode())
            except UnicodeDecodeError:
                raise InvalidRecord("key", "not UTF-8") from None
            item = WatchItem(origin, pseudonymizer.subject_key(id_type, number), None)
        self.w.metrics.watch_updates.labels("removed" if item.entry is None else "set").inc()
        return item

    def holding_item(self, origin: str, record: Any) -> HoldingItem:
        """An inventory snapshot; a null value (keyed source, \\x1f, id number) clears one."""
        pseudonymizer = self.w.pseudonymizer
        if record.value is not None:
            holding = parse_holding(record.value)
            key = pseudonymizer.subject_key(holding.id_type, holding.id_number)
            item = HoldingItem(origin, key, holding.snapshot)
        else:
            try:
                source, number = (record.key or b"").decode().split(KEY_SEPARATOR, 1)
            except (UnicodeDecodeError, ValueError):
                raise InvalidRecord(
                    "key", "a holdings record is keyed source\\x1fid_number"
                ) from None
            id_type, number = watch_identity(number)
            # no snapshot at that source any more: what it counted is gone, events count
            item = HoldingItem(
                origin,
                pseudonymizer.subject_key(id_type, number),
                Snapshot(source, EARLIEST_TIME, (), ()),
            )
        self.w.metrics.holdings_updates.labels("removed" if record.value is None else "set").inc()
        return item

    def verdict_item(self, origin: str, record: Any) -> VerdictItem:
        """A police verdict, for the cases: validated here, its free-text note left behind."""
        disposition = parse_disposition(record.value)
        at = f"{record.topic}/{record.partition}/{record.offset}"
        return VerdictItem(origin, at, verdict_row(disposition))

    def report_item(self, origin: str, record: Any) -> ReportItem:
        """A number the police found in a fraud case: its token goes on, the number stays here."""
        report = report_of(parse_implicated(record.value), self.w.pseudonymizer)
        self.w.metrics.implicated_in.labels(report.kind).inc()
        return ReportItem(origin, report, f"{record.topic}/{record.partition}/{record.offset}")

    def route(
        self, items: list[EventItem | WatchItem | HoldingItem | VerdictItem | ReportItem | None]
    ) -> None:
        """Each item to its identity's partition and, for what outlet rules screen, its outlet's.

        An opening also goes, as the number it created, to that number's
        partition of the number topic, and so does a report of an implicated number.
        """
        engine, partitions = self.w.engine, self.w.partitions
        to_identity: list[EventItem | WatchItem | HoldingItem] = []
        to_number: list[OpenedItem | ReportItem] = []
        for item in items:
            if isinstance(item, VerdictItem):
                self.verdicts.append(item)
            elif isinstance(item, ReportItem):
                to_number.append(item)
            elif isinstance(item, WatchItem | HoldingItem):
                to_identity.append(item)
            elif item is not None:
                event = item.event
                if engine.screens_identity(event):
                    to_identity.append(item)
                if engine.screens_outlet(event):
                    target = cached_partition_of(event.outlet_id.encode(), partitions)
                    self.outlet_box.add(target, item)
                number = number_key(event)
                if number is not None:
                    to_number.append(OpenedItem(item.origin, *number, Opened.of(event)))
        numbers = [
            (item.number_key if isinstance(item, OpenedItem) else item.report.number_key).encode()
            for item in to_number
        ]
        for number_item, target in zip(to_number, partitions_of(numbers, partitions), strict=True):
            self.number_box.add(target, number_item)
        keys = [
            (item.event.subject_key if isinstance(item, EventItem) else item.subject_key).encode()
            for item in to_identity
        ]
        for item, target in zip(to_identity, partitions_of(keys, partitions), strict=True):
            self.identity_box.add(target, item)

    def reject(self, record: Any, error: InvalidRecord) -> None:
        self.w.metrics.reject(record.topic, error.field)
        log.warning(
            "rejected record topic=%s partition=%d offset=%d field=%s",
            record.topic,
            record.partition,
            record.offset,
            error.field,
        )
        value = encode_dead_letter(
            record.topic, record.partition, record.offset, error, record.value
        )
        self.dead.append((record.key, value))

    # ---------------------------------------------------------------- marks and sending

    async def find_positions(self, consumer: AIOKafkaConsumer) -> None:
        """Where reading starts in partitions nothing was read from yet (their mark says so)."""
        for tp in self.assigned - self.positions.keys():
            position = self.positions[tp] = await consumer.position(tp)
            origin = origin_of(tp)
            self.marks[origin] = Mark(self.marks.get(origin, Mark(FIRST)).key, position)

    def due(self, now: float) -> bool:
        if self.pending_since is None:
            return True  # marks alone: the outboxes send them when they are due
        pending = len(self.identity_box) + len(self.outlet_box) + len(self.number_box)
        return pending >= MAX_PENDING or now - self.pending_since >= self.linger_s

    async def send(self, now: float, commit: bool = False) -> None:
        """Send everything read so far; once Kafka has it all, its offsets may be committed.

        They are, every `worker.commit_ms` (or now, with `commit`): a commit is
        a write to Kafka of its own, and reading again what was sent but not
        committed changes nothing in the stages.
        """
        async with self.sending:
            sender, topics = self.w.sender, self.topics
            dead, self.dead = self.dead, []
            futures = [await sender.send(topics.deadletter, value, key=key) for key, value in dead]
            verdicts, self.verdicts = self.verdicts, []
            if verdicts:
                value = encode_envelope(Envelope("case", verdicts))
                futures.append(await sender.send(topics.case_links, value, partition=0))
            marks = dict(self.marks)
            for box, topic in (
                (self.identity_box, topics.identity_events),
                (self.outlet_box, topics.outlet_events),
                (self.number_box, topics.number_events),
            ):
                for partition, value in box.envelopes(marks, now):
                    futures.append(await sender.send(topic, value, partition=partition))
            first_read, self.pending_since = self.pending_since, None
            offsets = {tp: self.positions[tp] for tp in self.uncommitted}
            self.uncommitted = set()
            try:
                await asyncio.gather(*futures)
            except Exception as error:
                await self.w.fail("the input reader could not send what it read", error)
                return
            if first_read is not None:
                self.w.metrics.stage_delay("reader", "sent", time.monotonic() - first_read)
            self.sent_offsets.update(offsets)
            if commit or now - self.committed_at >= self.commit_s:
                offsets, self.sent_offsets = self.sent_offsets, {}
                self.committed_at = now
                await self.commit(offsets)

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        consumer = self.consumer
        if not offsets or consumer is None:
            return
        try:
            await consumer.commit(offsets)
        except KafkaError as error:
            # Not lost: the records after the last commit are read again (and
            # the stages apply each event once); say so once per kind of error.
            log.warning("could not commit the input offsets: %s", type(error).__name__)

    def pending(self) -> str:
        """What a stop now would leave undone (read again at the next start), in a few words."""
        boxes = (self.identity_box, self.outlet_box, self.number_box)
        waiting = sum(len(box) for box in boxes) + len(self.dead) + len(self.verdicts)
        uncommitted = len(self.uncommitted | self.sent_offsets.keys())
        return (
            f"input reader: {waiting} items not sent, "
            f"{uncommitted} partitions with offsets not committed"
        )

    async def lag(self) -> dict[tuple[str, int], int]:
        """Records after the committed offset in each input partition this reader holds."""
        consumer = self.consumer
        if consumer is None or not self.assigned:
            return {}
        tps = list(self.assigned)
        ends = await consumer.end_offsets(tps)
        lags = {}
        for tp in tps:
            committed = await consumer.committed(tp)
            lags[(tp.topic, tp.partition)] = max(0, ends[tp] - (committed or 0))
        return lags

    async def on_assigned(self, consumer: AIOKafkaConsumer, assigned: set[TopicPartition]) -> None:
        """Resume each event partition one record early, to learn the key it had got to."""
        self.assigned = set(assigned)
        for tp in assigned:
            topics = self.topics
            if tp.topic in (topics.watchlist, topics.holdings, topics.dispositions):
                continue
            if tp.topic == topics.implicated:  # its records' keys are their reports'
                continue
            committed = await consumer.committed(tp)
            if committed:
                self.positions[tp] = self.peeking[tp] = committed
                self.marks[origin_of(tp)] = Mark(FIRST, committed)
                consumer.seek(tp, committed - 1)

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        """Send and commit what was read from them; their next owner goes on from there.

        Records of theirs that a fetch had already returned are not taken
        while (or after) this sends: `take` drops them, uncommitted, and the
        next owner reads them again.
        """
        self.assigned -= revoked
        await self.send(time.monotonic(), commit=True)
        for tp in revoked:
            self.positions.pop(tp, None)
            self.peeking.pop(tp, None)
            self.marks.pop(origin_of(tp), None)
            self.sent_offsets.pop(tp, None)
        self.uncommitted -= revoked


class Rebalance(ConsumerRebalanceListener):
    def __init__(self, reader: InputReader) -> None:
        self.reader = reader

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.reader.on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        consumer = self.reader.consumer
        if consumer is not None:
            await self.reader.on_assigned(consumer, set(assigned))

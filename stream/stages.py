"""The worker's stages: each reads one topic, updates one table, and passes records on."""

from __future__ import annotations

import asyncio
import heapq
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from faust.types import TP, StreamT

from rules.errors import InvalidEvent, InvalidRecord
from rules.event import PseudonymousEvent, parse_event, pseudonymise
from rules.state import (
    AgentState,
    IdentityState,
    OutletState,
    decode_agent,
    decode_identity,
    decode_outlet,
    encode_agent,
    encode_identity,
    encode_outlet,
)
from rules.watchlist import parse_watch, watch_identity
from stream.app import Wiring
from stream.ordering import FIRST, Key, Reorderer
from stream.records import (
    EventRecord,
    SignalRecord,
    Tick,
    WatchUpdate,
    decode_agent_record,
    decode_identity_record,
    encode_agent_record,
    encode_identity_record,
)

# the agent table's entry, one per partition, for how far each origin got
WATERMARKS = b"\x00watermarks:%d"
# how often at most the agent stage saves those marks
MARKS_SAVE_S = 1.0


def event_order(event: PseudonymousEvent) -> Key:
    return (event.occurred_at.timestamp(), event.source, event.event_id)


class OrderingStage:
    """Validates input, pseudonymises it, and passes it on in event-time order.

    Events are acknowledged (so their offsets may be committed) only once
    they have been passed on; held events are simply read again after a crash.
    """

    def __init__(self, wiring: Wiring) -> None:
        self.w = wiring
        self.order: Reorderer[TP] = Reorderer(wiring.settings.worker.order_idle_ms / 1000)
        self.offsets: dict[TP, int] = {}
        self.lock = asyncio.Lock()
        self.tick_sent: Key = FIRST
        self.tick_at = 0.0
        topics = wiring.settings.topics
        self.input_names = {*topics.inputs, topics.watchlist}
        # the input partitions assigned to this worker; None: ask the consumer
        # (asking converts its whole assignment, which costs as much as an event)
        self.assigned: set[TP] | None = None

    async def run(self, stream: StreamT) -> None:
        async for event in stream.noack().events():  # type: ignore[attr-defined]
            message = event.message
            self.offsets[message.tp] = message.offset
            try:
                key, record = self.read(message)
            except InvalidRecord as error:
                await self.w.reject(message, error)
                event.ack()
                continue
            self.order.push(message.tp, key, (record, event), _now())
            await self.release()

    def read(self, message: Any) -> tuple[Key, WatchUpdate | EventRecord]:
        """The ordering key and internal record of an input message; raises InvalidRecord."""
        if message.topic == self.w.settings.topics.watchlist:
            update = self.watch_update(message)
            self.w.metrics.watch_updates.labels("removed" if update.entry is None else "set").inc()
            return FIRST, update
        if message.value is None:
            raise InvalidEvent("record", "no value (a null record)")
        arrived = time.time()
        event = parse_event(message.value)
        self.w.metrics.events_in.labels(message.topic, event.event_type).inc()
        redacted = pseudonymise(event, self.w.pseudonymizer)
        return event_order(redacted), EventRecord(redacted, arrived)

    def watch_update(self, message: Any) -> WatchUpdate:
        """A watchlist record (or, with a null value, a removal) for the identity it names."""
        if message.value is not None:
            record = parse_watch(message.value)
            key = self.w.pseudonymizer.subject_key(record.id_type, record.id_number)
            return WatchUpdate(key, record.entry)
        if not message.key:
            raise InvalidRecord("key", "a watchlist record is keyed by its id number")
        try:
            id_type, number = watch_identity(message.key.decode())
        except UnicodeDecodeError:
            raise InvalidRecord("key", "not UTF-8") from None
        return WatchUpdate(self.w.pseudonymizer.subject_key(id_type, number), None)

    async def release(self) -> None:
        """Pass on whatever no input partition can still undercut, then tick."""
        async with self.lock:
            now = _now()
            assigned = self.input_partitions()
            gone = self.order.partitions - assigned
            if gone:  # revoking rebuilds the heap of held events: only when something went
                self.order.revoke(gone)
            self.order.assign(assigned, now)
            for _, (record, event) in self.order.release(now, self.caught_up):
                await self.forward(record)
                event.ack()
            self.w.metrics.held.set(len(self.order))
            self.w.metrics.late.set(self.order.late)
            await self.maybe_tick(now)

    def input_partitions(self) -> set[TP]:
        if self.assigned is None:
            self.assigned = self.inputs_of(self.w.app.consumer.assignment())
        return self.assigned

    def inputs_of(self, partitions: set[TP]) -> set[TP]:
        return {tp for tp in partitions if tp.topic in self.input_names}

    def on_assigned(self, assigned: set[TP]) -> None:
        """A rebalance gave this worker `assigned` (all it now has)."""
        self.assigned = self.inputs_of(assigned)

    async def on_revoked(self, revoked: set[TP]) -> None:
        """Drop what is held from partitions taken away: their new owner reads them again.

        Held events are not acknowledged, so their offsets were never committed.
        """
        async with self.lock:
            self.assigned = None
            self.order.revoke(tp for tp in revoked if tp.topic in self.input_names)
            for tp in revoked:
                self.offsets.pop(tp, None)
            self.w.metrics.held.set(len(self.order))

    def caught_up(self, tp: TP) -> bool:
        """Whether the worker has read all that partition holds, as far as it knows."""
        consumer = self.w.app.consumer
        try:
            highwater = consumer.highwater(tp)
        except (AssertionError, KeyError, AttributeError, TypeError):
            return True
        if highwater is None or highwater <= 0:
            return True
        if tp in self.offsets:
            return self.offsets[tp] + 1 >= highwater
        # Nothing read from it since this worker started: where it resumed
        # counts. After a rebalance faust sets its read offset to the committed
        # offset it seeks to (the next record to read), or None if there is none.
        resumed = getattr(consumer, "_read_offset", {}).get(tp)
        return resumed is not None and resumed >= highwater

    async def forward(self, record: WatchUpdate | EventRecord) -> None:
        w = self.w
        value = encode_identity_record(record)
        await w.identity_topic.send(key=record.subject_key.encode(), value=value)
        if isinstance(record, EventRecord) and w.engine.screens_outlet(record.event):
            await w.outlet_topic.send(key=record.event.outlet_id.encode(), value=value)

    async def maybe_tick(self, now: float) -> None:
        """Tell every identity partition how far the released events go (and, idle, that still)."""
        released = self.order.released
        interval = self.w.settings.worker.tick_ms / 1000
        if released == FIRST or now - self.tick_at < interval:
            return
        if released == self.tick_sent and now - self.tick_at < interval * 10:
            return
        value = encode_identity_record(Tick(released))
        for partition in range(self.w.partitions):
            await self.w.identity_topic.send(key=None, value=value, partition=partition)
        self.tick_sent, self.tick_at = released, now


class IdentityStage:
    """Identity rules on state keyed by pseudonym; passes identity alerts to the agent stage.

    It passes ticks on to every agent partition, but from each of its partitions
    at most one every `agent_tick_ms`: each costs a record on every agent
    partition, and only the newest of those held back says anything. One held
    back is passed on by `flush_ticks` once its time comes, unless a newer one was.
    """

    def __init__(self, wiring: Wiring) -> None:
        self.w = wiring
        self.interval = wiring.settings.worker.agent_tick_ms / 1000
        self.passed_at: dict[int, float] = {}  # identity partition -> when it last passed a tick
        self.pending: dict[int, Tick] = {}  # identity partition -> newest tick not passed on

    async def run(self, stream: StreamT) -> None:
        async for event in stream.events():
            message = event.message
            record = await self.w.decode(message, decode_identity_record)
            if record is None:
                continue
            if isinstance(record, Tick):
                await self.on_tick(record, message.partition)
            elif isinstance(record, WatchUpdate):
                raw = self.w.identities.get(message.key)
                state = self.load(raw)
                self.w.engine.watch(state, record.entry)
                self.w.store(self.w.identities, message.key, encode_identity(state), raw is None)
            else:
                await self.screen(message.key, message.partition, record)

    def load(self, raw: bytes | None) -> IdentityState:
        return IdentityState() if raw is None else decode_identity(raw)

    async def screen(self, key: bytes, partition: int, record: EventRecord) -> None:
        w = self.w
        event = record.event
        raw = w.identities.get(key)
        state = self.load(raw)
        decision = w.engine.screen_identity(state, event)
        if not decision.applied:
            return
        await w.deliver(decision.alerts, record.arrived)
        order = event_order(event)
        for seq, signal in enumerate(w.engine.agent_signals(event, decision.alerts)):
            passed = SignalRecord(signal, order, seq, partition, record.arrived)
            sent = await w.agent_topic.send(
                key=signal.agent_id.encode(), value=encode_agent_record(passed)
            )
            await sent
        w.store(w.identities, key, encode_identity(state), raw is None)

    async def on_tick(self, tick: Tick, partition: int) -> None:
        """Pass the tick on now, or hold it if this partition passed one on a moment ago.

        Either way every event before it in the partition has been screened and
        its signals sent, which is all a tick may claim, also when passed on later.
        """
        now = _now()
        if now - self.passed_at.get(partition, float("-inf")) < self.interval:
            self.pending[partition] = tick
            return
        self.pending.pop(partition, None)
        self.passed_at[partition] = now
        await self.pass_tick(tick, partition)

    async def flush_ticks(self) -> None:
        """The app timer's task: pass on held ticks whose time has come."""
        now = _now()
        for partition, tick in list(self.pending.items()):
            due = now - self.passed_at.get(partition, float("-inf")) >= self.interval
            if due and self.pending.get(partition) is tick:  # not replaced while we sent others
                del self.pending[partition]
                self.passed_at[partition] = now
                await self.pass_tick(tick, partition)

    def on_revoked(self, revoked: set[TP]) -> None:
        """Forget held ticks of identity partitions taken away: their new owner reads them."""
        topic = self.w.settings.topics.identity_events
        for tp in revoked:
            if tp.topic == topic:
                self.pending.pop(tp.partition, None)
                self.passed_at.pop(tp.partition, None)

    async def pass_tick(self, tick: Tick, partition: int) -> None:
        value = encode_agent_record(Tick(tick.key, partition))
        for target in range(self.w.partitions):
            await self.w.agent_topic.send(key=None, value=value, partition=target)


class OutletStage:
    """Outlet rules on state keyed by outlet_id."""

    def __init__(self, wiring: Wiring) -> None:
        self.w = wiring

    async def run(self, stream: StreamT) -> None:
        async for event in stream.events():
            message = event.message
            record = await self.w.decode(message, decode_identity_record)
            if isinstance(record, EventRecord):
                await self.screen(message.key, record)

    async def screen(self, key: bytes, record: EventRecord) -> None:
        raw = self.w.outlets.get(key)
        state = OutletState() if raw is None else decode_outlet(raw)
        decision = self.w.engine.screen_outlet(state, record.event)
        if decision.applied:
            await self.w.deliver(decision.alerts, record.arrived)
            self.w.store(self.w.outlets, key, encode_outlet(state), raw is None)


@dataclass(order=True)
class HeldSignal:
    key: Key
    seq: int
    record: SignalRecord = field(compare=False)
    event: Any = field(compare=False)


class AgentStage:
    """`agent_flag_rate` on state keyed by agent_id, fed in event-time order.

    Signals come from every identity partition; each partition's ticks say how
    far it has got, and a signal is screened once every origin is past it.
    The marks are kept in memory and saved to the agent table at most every
    MARKS_SAVE_S, so they survive a restart: a tick is acknowledged only once
    the marks it moved are saved, so one whose mark was not saved is read again.
    Saving on every tick would write the table dozens of times a second.
    """

    def __init__(self, wiring: Wiring) -> None:
        self.w = wiring
        self.held: dict[int, list[HeldSignal]] = {}
        self.marks: dict[int, dict[int, Key]] = {}  # partition -> origin -> mark
        self.unsaved: dict[int, list[Any]] = {}  # partition -> ticks waiting for a save
        self.changed: set[int] = set()  # partitions whose marks moved since the last save
        self.saved_at: dict[int, float] = {}

    async def run(self, stream: StreamT) -> None:
        async for event in stream.noack().events():  # type: ignore[attr-defined]
            message = event.message
            record = await self.w.decode(message, decode_agent_record)
            if record is None:
                event.ack()
                continue
            partition = message.partition
            marks = self.advance(record, partition)
            queue = self.held.setdefault(partition, [])
            if isinstance(record, SignalRecord):
                heapq.heappush(queue, HeldSignal(record.key, record.seq, record, event))
            else:
                self.unsaved.setdefault(partition, []).append(event)
            await self.release(queue, marks)
            self.maybe_save(partition)

    def on_revoked(self, revoked: set[TP]) -> None:
        """Forget what was held for agent partitions taken away: their new owner reads it again.

        Unsaved ticks were not acknowledged, so the new owner reads them too.
        """
        topic = self.w.settings.topics.agent_signals
        for tp in revoked:
            if tp.topic == topic:
                self.held.get(tp.partition, []).clear()
                self.marks.pop(tp.partition, None)
                self.unsaved.pop(tp.partition, None)
                self.changed.discard(tp.partition)

    def advance(self, record: SignalRecord | Tick, partition: int) -> dict[int, Key]:
        """Note how far the record's origin has got; return every origin's mark."""
        marks = self.marks.get(partition)
        if marks is None:
            marks = self.marks[partition] = self.load_marks(partition)
        if record.key > marks.get(record.origin, FIRST):
            marks[record.origin] = record.key
            self.changed.add(partition)
        return marks

    def load_marks(self, partition: int) -> dict[int, Key]:
        raw = self.w.agents.get(WATERMARKS % partition)
        if raw is None:
            return {}
        return {int(o): (k[0], k[1], k[2]) for o, k in orjson.loads(raw).items()}

    def maybe_save(self, partition: int) -> None:
        """Save the partition's marks if due, then acknowledge the ticks they include.

        Each partition keeps its own marks, under a key written only while
        that partition is processed, so they live in its changelog partition.
        """
        now = _now()
        if now - self.saved_at.get(partition, 0.0) < MARKS_SAVE_S:
            return
        self.saved_at[partition] = now
        if partition in self.changed:
            marks = self.marks[partition]
            self.w.agents[WATERMARKS % partition] = orjson.dumps(
                {str(o): k for o, k in marks.items()}
            )
            self.changed.discard(partition)
        for tick in self.unsaved.pop(partition, ()):
            tick.ack()

    async def release(self, queue: list[HeldSignal], marks: dict[int, Key]) -> None:
        limit = min(marks.get(origin, FIRST) for origin in range(self.w.partitions))
        while queue and queue[0].key <= limit:
            item = heapq.heappop(queue)
            await self.screen(item.record)
            item.event.ack()

    async def screen(self, record: SignalRecord) -> None:
        signal = record.signal
        key = signal.agent_id.encode()
        raw = self.w.agents.get(key)
        state = AgentState() if raw is None else decode_agent(raw)
        decision = self.w.engine.screen_agent(state, signal)
        if decision.applied:
            await self.w.deliver(decision.alerts, record.arrived)
            self.w.store(self.w.agents, key, encode_agent(state), raw is None)


def _now() -> float:
    return asyncio.get_running_loop().time()

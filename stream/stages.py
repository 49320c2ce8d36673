"""The screening stages: each reads envelopes from one topic and keeps one table.

    identity stage   duanka.identity-events  identity rules   -> alerts, signals to the agent stage
    outlet stage     duanka.outlet-events    outlet rules     -> alerts
    agent stage      duanka.agent-signals    agent_flag_rate  -> alerts

A stage is a faust agent over its topic's envelopes. For each partition it
holds a merge (stream/ordering.py) that puts the items of every origin back
into event-time order, and a state cache (stream/cache.py). The record path
decodes an envelope, lets the merge release what no origin can undercut,
screens it with `rules/`, and sends the alerts (and, from the identity stage,
signals) at once. The commit path, `flush`, runs every `worker.commit_ms` and
makes it durable in the order of stream/flush.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import orjson
from aiokafka.errors import KafkaError
from faust.types import TP, StreamT

from rules.alert import Alert, encode_alert
from rules.cases import Cases, LinkRow, Outcome, agent_links, identity_links, outlet_links
from rules.deadletter import encode_dead_letter
from rules.errors import InvalidRecord
from rules.implicated import (
    NO_OPENING,
    NumberState,
    PlaceState,
    decode_number,
    decode_place,
    encode_number,
    encode_place,
    opener_links,
    place_links,
)
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
from stream.cache import StateCache
from stream.envelope import (
    CaseItem,
    Envelope,
    EventItem,
    HoldingItem,
    Item,
    OpenedItem,
    PunishItem,
    ReportItem,
    SignalItem,
    TraceItem,
    VerdictItem,
    WatchItem,
    decode_envelope,
    encode_envelope,
    event_order,
)
from stream.flush import Part, checkpoint, flush
from stream.internals import TablePartition
from stream.ordering import Ends
from stream.outbox import Outbox
from stream.partitioner import cached_partition_of

if TYPE_CHECKING:
    from stream.app import Wiring

log = logging.getLogger("duanka.worker")
S = TypeVar("S")

# flush before the commit interval is up when this many subjects wait to be written
MAX_DIRTY = 50_000
# a partition that has held items this long says which origins it waits for
WAIT_REPORT_S = 15.0
# faust, sent back to an envelope it left out, is sent back again if it has not come by then
REREAD_S = 5.0


class Stage(Generic[S]):
    """What the three stages share: envelopes in, merge, state cache, flush."""

    kind = ""

    def __init__(
        self,
        wiring: Wiring,
        topic: str,
        table: Any,
        origins: frozenset[str],
        codec: tuple[Callable[[bytes], S], Callable[[S], bytes | None], Callable[[], S]],
    ) -> None:
        self.w = wiring
        self.topic = topic
        self.table = table
        self.origins = origins
        self.codec = codec
        self.parts: dict[int, tuple[Part[S], TablePartition]] = {}
        self.assigned: set[int] = set()
        self.sends: list[asyncio.Future[Any]] = []
        self.screening = asyncio.Lock()
        self.flushing = asyncio.Lock()
        self.flushed_at = time.monotonic()
        self.commit_s = wiring.settings.worker.commit_ms / 1000
        # the latest view of the inputs' ends, and how many items each part had when it was taken
        self.ends: Ends | None = None
        self.before: dict[Part[S], int] = {}
        self.reported: dict[int, float] = {}  # partition -> when a long wait was last reported

    # ---------------------------------------------------------------- record path

    async def run(self, stream: StreamT) -> None:
        """The faust agent: every envelope of the stage's topic (faust acknowledges none)."""
        async for event in stream.events():
            await self.take(event.message)

    async def take(self, message: Any) -> None:
        if message.partition not in self.assigned:
            return  # taken away since faust fetched it: the new owner reads it
        part, _ = self.part(message.partition)
        if not await self.in_order(part, message.offset):
            return
        try:
            envelope = decode_envelope(message.value, self.kind)
        except InvalidRecord as error:
            await self.w.reject(message, error)
            async with self.screening:
                part.skip(message.offset)
            return
        self.note_delay("received", envelope.items)
        async with self.screening:
            part.receive(envelope, message.offset)
            await self.screen_released(part)
            await self.after_screening()
        self.note_held()
        if self.flush_due():
            await self.flush()

    async def in_order(self, part: Part[S], offset: int) -> bool:
        """Whether the envelope at `offset` is the one `part` takes next (stream/positions.py).

        One before it was taken already. One after it means faust's stream
        left envelopes out: faust's consumer is sent back to the expected one,
        and what comes before that is dropped.
        """
        if part.next is None:
            try:
                part.next = await self.w.start_offset(self.topic, part.partition)
            except KafkaError as error:
                log.warning("%s stage could not ask Kafka where to start: %s", self.kind, error)
                return False  # the partition's next envelope asks again
        if offset == part.next:
            part.next += 1
            part.rereading = None
            return True
        if offset < part.next:
            return False
        now = time.monotonic()
        if part.rereading is not None and now - part.rereading < REREAD_S:
            return False  # on its way back
        part.rereading = now
        try:
            start = await self.w.log_start(self.topic, part.partition)
            if start > part.next:
                log.warning(
                    "%s stage partition %d: envelopes %d to %d are no longer in Kafka; "
                    "going on from %d",
                    self.kind,
                    part.partition,
                    part.next,
                    start - 1,
                    start,
                )
                part.next = start
                if offset == start:
                    part.next += 1
                    part.rereading = None
                    return True
            log.debug(
                "%s stage partition %d: faust's stream skipped to offset %d; reading again from %d",
                self.kind,
                part.partition,
                offset,
                part.next,
            )
            self.w.metrics.rereads.labels(self.kind).inc()
            await self.w.reread(self.topic, part.partition, part.next)
        except (TimeoutError, KafkaError) as error:
            log.warning("%s stage could not read again from %d: %s", self.kind, part.next, error)
        return False

    def note_held(self) -> None:
        merges = [part.merge for part, _ in self.parts.values()]
        self.w.metrics.held.labels(self.kind).set(sum(len(merge) for merge in merges))
        self.w.metrics.late.labels(self.kind).set(sum(merge.late for merge in merges))

    def part(self, partition: int) -> tuple[Part[S], TablePartition]:
        entry = self.parts.get(partition)
        if entry is None:
            store = self.w.open_partition(self.table, partition)
            decode, encode, new = self.codec
            cache = StateCache(store, decode, encode, new, self.w.settings.worker.cache_keys)
            entry = self.parts[partition] = (Part(partition, self.origins, cache), store)
        return entry

    async def screen_released(self, part: Part[S]) -> None:
        released = part.release(self.ends, self.before.get(part, 0))
        self.note_delay("released", released)
        for item in released:
            await self.screen(part, item)

    def note_delay(self, point: str, items: list[Item]) -> None:
        """The oldest event among `items` (by when it was read) reached `point` now."""
        arrived = [
            item.arrived
            for item in items
            if isinstance(item, EventItem | SignalItem) and item.arrived is not None
        ]
        if arrived:
            self.w.metrics.stage_delay(self.kind, point, time.time() - min(arrived))

    async def screen(self, part: Part[S], item: Item) -> None:
        raise NotImplementedError

    def counts(self) -> dict[Part[S], int]:
        """How many items each part has had so far: a view of the ends taken now covers those."""
        return {part: part.merge.pushed for part, _ in self.parts.values()}

    async def on_ends(self, ends: Ends, counts: dict[Part[S], int]) -> None:
        """A new view of where the inputs end (taken once the parts had `counts` items)."""
        async with self.screening:
            self.ends, self.before = ends, counts
            for part, _ in list(self.parts.values()):
                await self.screen_released(part)
            await self.after_screening()
        self.note_held()

    async def after_screening(self) -> None:
        """What a stage sends on once a screening is done (the identity stage: signals)."""

    async def emit(
        self, alerts: list[Alert], arrived: float | None, links: Callable[[Alert], list[LinkRow]]
    ) -> None:
        """Send alerts, and each with what it links by to the cases; the next flush waits."""
        if not alerts:
            return
        topics = self.w.settings.topics
        items: list[Item] = []
        for alert in alerts:
            self.w.metrics.alerts.labels(alert.rule_id, alert.severity).inc()
            value = encode_alert(alert)
            future = await self.w.sender.send(topics.alerts, value, key=alert.subject.key.encode())
            if arrived is not None:
                future.add_done_callback(self.w.metrics.on_delivered(alert.rule_id, arrived))
            self.sends.append(future)
            items.append(CaseItem(self.kind, orjson.loads(value), links(alert)))
        envelope = encode_envelope(Envelope("case", items))
        self.sends.append(await self.w.sender.send(topics.case_links, envelope, partition=0))

    # ---------------------------------------------------------------- commit path

    def flush_due(self) -> bool:
        if self.flushing.locked():
            return False
        if time.monotonic() - self.flushed_at >= self.commit_s:
            return True
        return sum(len(part.cache.dirty) for part, _ in self.parts.values()) >= MAX_DIRTY

    async def tick(self) -> None:
        """An app timer's task: what is due downstream (marks, when nothing else went)."""
        async with self.screening:
            await self.after_screening()

    async def flush_if_due(self) -> None:
        """An app timer's task: a flush every `commit_ms` even when no envelope comes."""
        self.report_waits()
        if self.flush_due():
            await self.flush()

    def report_waits(self) -> None:
        """Say which origins a partition has waited for a long time (their worker is gone?)."""
        now = time.monotonic()
        for partition, (part, _) in self.parts.items():
            if not len(part.merge):
                part.held_since = None
                continue
            if part.held_since is None:
                part.held_since = now
            waited = now - part.held_since
            if waited >= WAIT_REPORT_S and now - self.reported.get(partition, 0.0) >= WAIT_REPORT_S:
                self.reported[partition] = now
                blocking = part.merge.blocking(self.ends)
                log.warning(
                    "%s stage partition %d has held %d items for %.0f s, waiting for %s",
                    self.kind,
                    partition,
                    len(part.merge),
                    waited,
                    ", ".join(blocking[:8]) + (" ..." if len(blocking) > 8 else ""),
                )

    async def flush(self) -> None:
        async with self.flushing:
            async with self.screening:
                sends, self.sends = self.sends, []
                point = checkpoint(self.parts.values(), sends)
            self.flushed_at = time.monotonic()
            try:
                done = await flush(point, self.w.sender, self.w.changelog(self.table), self.commit)
            except Exception as error:
                await self.w.fail(f"the {self.kind} stage could not flush", error)
                return
            for part, _ in self.parts.values():
                self.w.metrics.state.added(self.table.name, part.partition, part.cache.added)
                part.cache.added = 0
            self.w.metrics.flushes.labels(self.kind).inc()
            self.w.metrics.state_rows.labels(self.kind).inc(done.rows)

    async def commit(self, offsets: dict[int, int]) -> None:
        await self.w.commit(self.topic, offsets)

    # ---------------------------------------------------------------- rebalances

    def pending(self) -> str:
        """What a stop now would leave undone (the next start does it again), in a few words."""
        parts = [part for part, _ in self.parts.values()]
        held = sum(len(part.merge) for part in parts)
        dirty = sum(len(part.cache.dirty) for part in parts)
        uncommitted = sum(len(part.unacked) for part in parts)
        return (
            f"{self.kind} stage: {held} items held, {dirty} subjects not written, "
            f"{uncommitted} envelopes not committed"
        )

    def on_assigned(self, assigned: set[TP]) -> None:
        self.assigned = {tp.partition for tp in assigned if tp.topic == self.topic}
        shown = ", ".join(map(str, sorted(self.assigned))) or "none"
        log.info("%s stage: partitions %s", self.kind, shown)

    async def on_revoked(self, revoked: set[TP]) -> None:
        """Flush, then forget what revoked partitions hold: their next owner reads it from Kafka.

        What a partition still holds was not committed, so its next owner
        (often this worker again) screens it; state makes that change nothing twice.
        """
        gone = {tp.partition for tp in revoked if tp.topic == self.topic}
        if not gone:
            return
        await self.flush()
        async with self.flushing, self.screening:
            for partition in gone:
                entry = self.parts.pop(partition, None)
                if entry is not None:
                    entry[0].alive = False
                    self.before.pop(entry[0], None)
            self.assigned -= gone


def _origin(topic: str, partition: int) -> str:
    return f"{topic}/{partition}"


class IdentityStage(Stage[IdentityState]):
    """Identity rules on state keyed by pseudonym; signals of its alerts go to the agent stage."""

    kind = "identity"

    def __init__(self, wiring: Wiring, origins: frozenset[str]) -> None:
        topics = wiring.settings.topics
        super().__init__(
            wiring,
            topics.identity_events,
            wiring.identities,
            origins,
            (decode_identity, encode_identity, IdentityState),
        )
        self.outbox = Outbox("agent", wiring.partitions, wiring.timing)

    async def screen(self, part: Part[IdentityState], item: Item) -> None:
        engine = self.w.engine
        if isinstance(item, WatchItem):
            key = item.subject_key.encode()
            engine.watch(part.cache.get(key), item.entry)
            part.cache.changed(key)
            return
        if isinstance(item, HoldingItem):
            key = item.subject_key.encode()
            engine.hold(part.cache.get(key), item.snapshot)
            part.cache.changed(key)
            return
        if isinstance(item, PunishItem):
            key = item.subject_key.encode()
            engine.punish(part.cache.get(key), item.alert_id, item.entry)
            part.cache.changed(key)
            return
        assert isinstance(item, EventItem)
        event = item.event
        key = event.subject_key.encode()
        decision = engine.screen_identity(part.cache.get(key), event)
        if not decision.applied:
            return
        part.cache.changed(key)
        links = identity_links(event)
        await self.emit(decision.alerts, item.arrived, lambda alert: links)
        order = event_order(event)
        origin = _origin(self.topic, part.partition)
        for seq, signal in enumerate(engine.agent_signals(event, decision.alerts)):
            target = cached_partition_of(signal.agent_id.encode(), self.w.partitions)
            self.outbox.add(target, SignalItem(origin, order, seq, signal, item.arrived))

    async def after_screening(self) -> None:
        """Send signals, and how far each partition got, to the agent stage when due."""
        marks = {
            _origin(self.topic, p): part.merge.progress() for p, (part, _) in self.parts.items()
        }
        if not marks:
            return
        topic = self.w.settings.topics.agent_signals
        for partition, value in self.outbox.envelopes(marks, time.monotonic()):
            self.sends.append(await self.w.sender.send(topic, value, partition=partition))


class OutletStage(Stage[OutletState]):
    """Outlet rules on state keyed by outlet_id."""

    kind = "outlet"

    def __init__(self, wiring: Wiring, origins: frozenset[str]) -> None:
        super().__init__(
            wiring,
            wiring.settings.topics.outlet_events,
            wiring.outlets,
            origins,
            (decode_outlet, encode_outlet, OutletState),
        )

    async def screen(self, part: Part[OutletState], item: Item) -> None:
        assert isinstance(item, EventItem)
        key = item.event.outlet_id.encode()
        state = part.cache.get(key)
        decision = self.w.engine.screen_outlet(state, item.event)
        if decision.applied:
            part.cache.changed(key)
            await self.emit(decision.alerts, item.arrived, lambda alert: outlet_links(alert, state))


class AgentStage(Stage[AgentState]):
    """`agent_flag_rate` on state keyed by agent_id, merged across identity partitions."""

    kind = "agent"

    def __init__(self, wiring: Wiring) -> None:
        topics = wiring.settings.topics
        origins = frozenset(_origin(topics.identity_events, p) for p in range(wiring.partitions))
        super().__init__(
            wiring,
            topics.agent_signals,
            wiring.agents,
            origins,
            (decode_agent, encode_agent, AgentState),
        )

    async def screen(self, part: Part[AgentState], item: Item) -> None:
        assert isinstance(item, SignalItem)
        key = item.signal.agent_id.encode()
        state = part.cache.get(key)
        decision = self.w.engine.screen_agent(state, item.signal)
        if decision.applied:
            part.cache.changed(key)
            await self.emit(decision.alerts, item.arrived, lambda alert: agent_links(alert, state))


class CaseStore:
    """The case table's partition as rules/cases.py's `CaseStore`: str keys, JSON values."""

    def __init__(self, cache: StateCache[Any]) -> None:
        self.cache = cache

    def get(self, key: str) -> Any:
        return self.cache.get(key.encode())

    def put(self, key: str, value: Any) -> None:
        self.cache.put(key.encode(), value)


def _decode_case_row(raw: bytes) -> Any:
    return orjson.loads(raw)


def _encode_case_row(value: Any) -> bytes | None:
    return None if value is None else orjson.dumps(value)


def _no_case_row() -> Any:
    return None


class CaseStage(Stage[Any]):
    """Cases (rules/cases.py) from every stage's alerts, and the police's verdicts on them.

    One partition: an alert may link to any other. Each changed case goes to
    the cases topic as its `duanka.case/1` document, keyed by case id; a
    punishing verdict goes to its identity's partition as a `PunishItem`.
    """

    kind = "case"

    def __init__(self, wiring: Wiring) -> None:
        super().__init__(
            wiring,
            wiring.settings.topics.case_links,
            wiring.cases,
            frozenset(),
            (_decode_case_row, _encode_case_row, _no_case_row),
        )
        self.changed: set[str] = set()
        self.punishments: dict[int, list[Item]] = {}  # identity partition -> items to send

    def cases(self, part: Part[Any]) -> Cases:
        return Cases(self.w.settings.cases, CaseStore(part.cache))

    async def screen(self, part: Part[Any], item: Item) -> None:
        cases = self.cases(part)
        if isinstance(item, CaseItem):
            added = cases.add(item.alert, item.links)
            self.changed |= added.changed
            for outcome in added.verdicts:
                await self.verdict(outcome, None)
        elif isinstance(item, VerdictItem):
            row = dict(item.disposition)
            alert_id = str(row.pop("alert_id"))
            row["read"] = item.at  # where it came from, for its dead letter
            outcome = cases.dispose_row(alert_id, row, time.time())
            if outcome.status != "pending":
                self.changed.add(cases.case_of(alert_id))
            await self.verdict(outcome, row)

    async def verdict(self, outcome: Outcome, row: dict[str, Any] | None) -> None:
        """Count a verdict; send its punishment on, or dead-letter it with the reason."""
        self.w.metrics.dispositions.labels(outcome.status).inc()
        if outcome.status == "invalid":
            await self.dead_letter(outcome.alert_id, outcome.reason, row or {})
        elif outcome.punish is not None:
            subject_key, alert_id, entry = outcome.punish
            target = cached_partition_of(subject_key.encode(), self.w.partitions)
            item = PunishItem(self.kind, subject_key, alert_id, entry)
            self.punishments.setdefault(target, []).append(item)

    async def dead_letter(self, alert_id: str, reason: str, row: dict[str, Any]) -> None:
        """A verdict the cases cannot use, as it was read (less its note), with the reason."""
        topic, partition, offset = "", -1, -1
        read = row.get("read")
        if isinstance(read, str) and read.count("/") >= 2:
            topic, where, at = read.rsplit("/", 2)
            partition, offset = int(where), int(at)
        value = {"alert_id": alert_id} | {k: v for k, v in row.items() if k != "read"}
        error = InvalidRecord("alert_id", reason)
        self.w.metrics.reject(self.w.settings.topics.dispositions, "alert_id")
        log.warning("dead-lettered a verdict: %s (topic %s offset %d)", reason, topic, offset)
        dead = encode_dead_letter(topic, partition, offset, error, orjson.dumps(value))
        topics = self.w.settings.topics
        key = alert_id.encode()
        self.sends.append(await self.w.sender.send(topics.deadletter, dead, key=key))

    async def after_screening(self) -> None:
        """Send the changed cases' documents, and punishments due to the identity stage."""
        topics = self.w.settings.topics
        for part, _ in self.parts.values():
            cases = self.cases(part)
            for case_id in sorted(self.changed):
                document = orjson.dumps(cases.document(case_id))
                self.sends.append(
                    await self.w.sender.send(topics.cases, document, key=case_id.encode())
                )
            self.changed = set()
        punishments, self.punishments = self.punishments, {}
        for partition, items in sorted(punishments.items()):
            value = encode_envelope(Envelope("identity", items))
            self.sends.append(
                await self.w.sender.send(topics.identity_events, value, partition=partition)
            )

    async def on_revoked(self, revoked: set[TP]) -> None:
        """As every stage does; and the precision gauges go with the cases to their next owner."""
        await super().on_revoked(revoked)
        if not self.parts:
            self.w.metrics.verdicts.clear()

    async def tick(self) -> None:
        """An app timer's task: verdicts whose alert never came, the precision gauges."""
        async with self.screening:
            now = time.time()
            for part, _ in list(self.parts.values()):
                cases = self.cases(part)
                grace = self.w.settings.cases.unknown_grace
                for alert_id, row in cases.expire(now):
                    self.w.metrics.dispositions.labels("unknown_alert").inc()
                    reason = f"unknown alert_id (no such alert within {grace})"
                    await self.dead_letter(alert_id, reason, row)
                for rule, counts in cases.verdict_counts().items():
                    for status, n in counts.items():
                        self.w.metrics.verdicts.labels(rule, status).set(n)
            await self.after_screening()


def _number_row_key(kind: str, number_key: str) -> bytes:
    return f"{kind}\x1f{number_key}".encode()


class NumberStage(Stage[NumberState]):
    """Implicated numbers (rules/implicated.py): openings kept by number token, reports traced.

    A report is traced once every origin has passed its `reported_at`, so to
    the same opening replay finds. The opener's alert goes out from here; the
    trace goes to the traces topic (the campaign's figures) and, for its
    outlet and staff member, to the place stage.
    """

    kind = "number"

    def __init__(self, wiring: Wiring, origins: frozenset[str]) -> None:
        super().__init__(
            wiring,
            wiring.settings.topics.number_events,
            wiring.numbers,
            origins,
            (decode_number, encode_number, NumberState),
        )
        self.outbox = Outbox("place", wiring.partitions, wiring.timing)

    async def screen(self, part: Part[NumberState], item: Item) -> None:
        engine = self.w.engine
        if isinstance(item, OpenedItem):
            key = _number_row_key(item.kind, item.number_key)
            if engine.keep_opening(part.cache.get(key), item.opened):
                part.cache.changed(key)
            return
        assert isinstance(item, ReportItem)
        report = item.report
        key = _number_row_key(report.kind, report.number_key)
        traced = engine.trace(part.cache.get(key), report)
        if not traced.applied:
            return
        part.cache.changed(key)
        trace = traced.trace
        if trace is None:
            await self.no_opening(item)
            return
        self.w.metrics.traced(trace)
        await self.emit(traced.alerts, None, lambda alert: opener_links(trace))
        topics = self.w.settings.topics
        row = orjson.dumps(trace.row())
        # compacted: one record per report, kept for good (the console reads them all back)
        key = f"{report.number_key}\x1f{report.case_ref}".encode()
        self.sends.append(await self.w.sender.send(topics.traces, row, key=key))
        origin = _origin(self.topic, part.partition)
        for seq, (place, place_key) in enumerate(engine.places_of(trace)):
            target = cached_partition_of(f"{place}\x1f{place_key}".encode(), self.w.partitions)
            self.outbox.add(target, TraceItem(origin, place, place_key, trace, seq))

    async def no_opening(self, item: ReportItem) -> None:
        """Count a number that matched no opening; dead-letter it (its token, not the number)."""
        report = item.report
        self.w.metrics.implicated_unknown.labels(report.kind).inc()
        topic, where, at = item.at.rsplit("/", 2)
        error = InvalidRecord("number", NO_OPENING)
        value = orjson.dumps(
            {
                "kind": report.kind,
                "number_key": report.number_key,
                "case_ref": report.case_ref,
                "reported_at": report.reported_at,
                "source": report.source,
            }
        )
        dead = encode_dead_letter(topic, int(where), int(at), error, value)
        deadletter = self.w.settings.topics.deadletter
        key = report.number_key.encode()
        self.sends.append(await self.w.sender.send(deadletter, dead, key=key))

    async def after_screening(self) -> None:
        """Send traced cards, and how far each partition got, to the place stage when due."""
        marks = {
            _origin(self.topic, p): part.merge.progress() for p, (part, _) in self.parts.items()
        }
        if not marks:
            return
        topic = self.w.settings.topics.place_events
        for partition, value in self.outbox.envelopes(marks, time.monotonic()):
            self.sends.append(await self.w.sender.send(topic, value, partition=partition))


class PlaceStage(Stage[PlaceState]):
    """`outlet_implicated` and `agent_implicated`, merged across the number partitions."""

    kind = "place"

    def __init__(self, wiring: Wiring) -> None:
        topics = wiring.settings.topics
        origins = frozenset(_origin(topics.number_events, p) for p in range(wiring.partitions))
        super().__init__(
            wiring,
            topics.place_events,
            wiring.places,
            origins,
            (decode_place, encode_place, PlaceState),
        )

    async def screen(self, part: Part[PlaceState], item: Item) -> None:
        assert isinstance(item, TraceItem)
        key = f"{item.place}\x1f{item.place_key}".encode()
        state = part.cache.get(key)
        decision = self.w.engine.screen_place(item.place, item.place_key, state, item.trace)
        if decision.applied:
            part.cache.changed(key)
            await self.emit(decision.alerts, None, lambda alert: place_links(alert, state))

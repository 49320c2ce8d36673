"""The stages without a broker: merge, screen, send, flush in order, acknowledge.

A fake wiring stands in for faust and Kafka: stores are dicts, the sender
keeps every record and resolves its futures when the test says so, and an
envelope's acknowledgement is a flag. The stages' code is the real one.
"""

from __future__ import annotations

import asyncio
import functools
from collections import defaultdict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import orjson
from rulekit import BEIJING, DAY, GANSU, MINUTE, T0, engine, ev, key_of, only

from rules.config import Settings
from rules.errors import InvalidRecord
from rules.event import PseudonymousEvent
from rules.state import WatchEntry, decode_identity
from stream.cache import Row
from stream.envelope import (
    Envelope,
    EventItem,
    WatchItem,
    decode_envelope,
    encode_envelope,
    event_order,
)
from stream.metrics import WorkerMetrics
from stream.ordering import FIRST, Mark
from stream.outbox import Timing
from stream.partitioner import partition_of
from stream.stages import AgentStage, IdentityStage, OutletStage

PARTITIONS = 2


def async_test(test: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    """Run a coroutine test on a fresh event loop."""

    @functools.wraps(test)
    def run() -> None:
        asyncio.run(test())

    return run


ORIGINS = frozenset({"sims/0", "banks/0"})


@dataclass
class Table:
    name: str


@dataclass
class Sent:
    topic: str
    partition: int | None
    key: bytes | None
    value: bytes | None
    future: asyncio.Future[Any]


class FakeSender:
    """Keeps what is sent; futures resolve on `deliver()` (or at once, if `instant`)."""

    def __init__(self, log: list[str], instant: bool = True) -> None:
        self.log = log
        self.instant = instant
        self.sent: list[Sent] = []
        self.offsets: dict[tuple[str, int | None], int] = defaultdict(int)

    def _future(self, topic: str, partition: int | None, count: int) -> asyncio.Future[Any]:
        future = asyncio.get_running_loop().create_future()
        base = self.offsets[(topic, partition)]
        self.offsets[(topic, partition)] += count
        meta = type("Meta", (), {"offset": base})()
        future.add_done_callback(lambda f: self.log.append(f"acked {topic}"))
        if self.instant:
            future.set_result(meta)
        else:
            future.meta = meta  # type: ignore[attr-defined]
        return future

    async def send(
        self, topic: str, value: bytes, key: bytes | None = None, partition: int | None = None
    ) -> asyncio.Future[Any]:
        self.log.append(f"send {topic}")
        future = self._future(topic, partition, 1)
        self.sent.append(Sent(topic, partition, key, value, future))
        return future

    async def send_rows(
        self, topic: str, partition: int, rows: list[tuple[bytes, bytes | None]]
    ) -> tuple[list[asyncio.Future[Any]], int]:
        self.log.append(f"rows {topic}")
        future = self._future(topic, partition, len(rows))
        for key, value in rows:
            self.sent.append(Sent(topic, partition, key, value, future))
        return [future], len(rows)

    def deliver(self) -> None:
        for sent in self.sent:
            if not sent.future.done():
                sent.future.set_result(sent.future.meta)  # type: ignore[attr-defined]

    def values(self, topic: str) -> list[bytes]:
        return [s.value for s in self.sent if s.topic == topic and s.value is not None]


class DictStore:
    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log
        self.data: dict[bytes, bytes] = {}
        self.offset: int | None = None

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def write(self, rows: list[Row], changelog_offset: int) -> None:
        self.log.append(f"write {self.name}")
        self.data.update(rows)
        self.offset = changelog_offset


@dataclass
class FakeWiring:
    """What a stage uses of stream.app.Wiring."""

    instant: bool = True
    log: list[str] = field(default_factory=list)
    settings: Settings = field(default_factory=Settings)
    metrics: WorkerMetrics = field(default_factory=WorkerMetrics)
    partitions: int = PARTITIONS
    timing: Timing = field(default_factory=lambda: Timing(tick_s=0.0, heartbeat_s=1.0))
    stores: dict[tuple[str, int], DictStore] = field(default_factory=dict)
    rejected: list[tuple[Any, InvalidRecord]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.engine = engine()
        self.sender = FakeSender(self.log, self.instant)
        self.identities = Table("identity-state")
        self.outlets = Table("outlet-state")
        self.agents = Table("agent-state")

    def open_partition(self, table: Table, partition: int) -> DictStore:
        key = (table.name, partition)
        if key not in self.stores:
            self.stores[key] = DictStore(table.name, self.log)
        return self.stores[key]

    def changelog(self, table: Table) -> str:
        return f"{table.name}-changelog"

    async def reject(self, message: Any, error: InvalidRecord) -> None:
        self.rejected.append((message, error))

    async def fail(self, what: str, error: BaseException) -> None:
        self.failures.append(what)


@dataclass
class Message:
    value: bytes | None
    partition: int = 0
    topic: str = "internal"
    offset: int = 0
    key: bytes | None = None


class Acks:
    def __init__(self) -> None:
        self.done: list[int] = []

    def of(self, n: int) -> Any:
        return lambda: self.done.append(n)


def events_envelope(origin: str, events: list[PseudonymousEvent], idle: bool = False) -> bytes:
    items: list[Any] = [EventItem(origin, e, None) for e in events]
    last = event_order(events[-1]) if events else FIRST
    return encode_envelope(Envelope("identity", items, {origin: Mark(last, idle)}))


def identity_stage(wiring: FakeWiring) -> IdentityStage:
    stage = IdentityStage(wiring, ORIGINS)  # type: ignore[arg-type]
    stage.assigned = set(range(PARTITIONS))
    return stage


def alert_rules(values: list[bytes]) -> list[str]:
    return [orjson.loads(v)["rule_id"] for v in values]


NOT_IN_PERSON = {"verification": "remote_face", "channel": "online", "outlet": "online"}


@async_test
async def test_an_event_waits_for_every_origin_then_alerts_in_event_time_order() -> None:
    wiring = FakeWiring()
    stage = identity_stage(wiring)
    acks = Acks()
    late = ev(T0 + 2 * DAY, id=BEIJING[0], **NOT_IN_PERSON)
    early = ev(T0 + 1 * DAY, id=BEIJING[1], **NOT_IN_PERSON)
    await stage.take(Message(events_envelope("sims/0", [late])), acks.of(1))
    assert wiring.sender.values("police.alerts") == []  # banks/0 has not reported
    await stage.take(Message(events_envelope("banks/0", [early])), acks.of(2))
    alerts = [orjson.loads(v) for v in wiring.sender.values("police.alerts")]
    # early is released (banks/0 is at its time, sims/0 past it); late waits for banks/0
    assert [a["evidence"][0]["event_id"] for a in alerts] == [early.event_id]
    assert len(stage.parts[0][0].merge) == 1
    await stage.take(Message(events_envelope("banks/0", [], idle=True)), acks.of(3))
    alerts = [orjson.loads(v) for v in wiring.sender.values("police.alerts")]
    assert [a["evidence"][0]["event_id"] for a in alerts] == [early.event_id, late.event_id]
    assert acks.done == []  # nothing is acknowledged before a flush


@async_test
async def test_flush_order_alerts_then_changelog_then_store_then_acks() -> None:
    wiring = FakeWiring(instant=False)
    stage = identity_stage(wiring)
    acks = Acks()
    event = ev(T0, id=BEIJING[0], **NOT_IN_PERSON)
    both_idle = {"sims/0": Mark(event_order(event), True), "banks/0": Mark(FIRST, True)}
    envelope = Envelope("identity", [EventItem("sims/0", event, None)], both_idle)
    await stage.take(Message(encode_envelope(envelope)), acks.of(1))

    def log() -> list[str]:  # without the marks the identity stage sends the agent stage
        return [line for line in wiring.log if "agent-signals" not in line]

    assert log() == ["send police.alerts"]
    flushing = asyncio.create_task(stage.flush())
    await asyncio.sleep(0.01)
    assert log() == ["send police.alerts"]  # waits for Kafka to have the alert
    wiring.sender.deliver()
    await asyncio.sleep(0.01)
    assert log()[-1] == "rows identity-state-changelog"
    assert acks.done == []
    wiring.sender.deliver()
    await flushing
    assert log()[1:] == [
        "acked police.alerts",
        "rows identity-state-changelog",
        "acked identity-state-changelog",
        "write identity-state",
    ]
    assert acks.done == [1]
    store = wiring.stores[("identity-state", 0)]
    state = decode_identity(store.data[event.subject_key.encode()])
    assert [m.event_id for m in state.marks] == [event.event_id]
    assert store.offset == 0  # the changelog offset of the row


@async_test
async def test_what_is_screened_during_a_flush_waits_for_the_next_one() -> None:
    wiring = FakeWiring(instant=False)
    stage = identity_stage(wiring)
    acks = Acks()
    first, second = ev(T0, id=GANSU[0]), ev(T0 + DAY, id=GANSU[1])
    marks = {"banks/0": Mark(FIRST, True)}

    def envelope(event: PseudonymousEvent) -> bytes:
        mark = {"sims/0": Mark(event_order(event), True), **marks}
        return encode_envelope(Envelope("identity", [EventItem("sims/0", event, None)], mark))

    await stage.take(Message(envelope(first)), acks.of(1))
    flushing = asyncio.create_task(stage.flush())
    await asyncio.sleep(0.01)
    await stage.take(Message(envelope(second)), acks.of(2))
    wiring.sender.deliver()
    await asyncio.sleep(0.01)
    wiring.sender.deliver()
    await flushing
    assert acks.done == [1]
    written = wiring.stores[("identity-state", 0)].data
    assert second.subject_key.encode() not in written
    later = asyncio.create_task(stage.flush())
    await asyncio.sleep(0.01)
    wiring.sender.deliver()
    await later
    assert acks.done == [1, 2]
    assert second.subject_key.encode() in written


@async_test
async def test_envelopes_read_again_after_a_crash_change_nothing_twice() -> None:
    events = [ev(T0 + n * DAY, id=BEIJING[0], **NOT_IN_PERSON) for n in range(3)]
    raw = events_envelope("sims/0", events, idle=True)
    idle = encode_envelope(Envelope("identity", [], {"banks/0": Mark(FIRST, True)}))
    wiring = FakeWiring()
    stage = identity_stage(wiring)
    await stage.take(Message(raw), Acks().of(1))
    await stage.take(Message(idle), Acks().of(2))
    await stage.flush()
    first_alerts = wiring.sender.values("police.alerts")
    # a new stage on the same stores reads the same envelopes again
    again = identity_stage(wiring)
    await again.take(Message(raw), Acks().of(1))
    await again.take(Message(idle), Acks().of(2))
    await again.flush()
    assert wiring.sender.values("police.alerts") == first_alerts  # nothing new
    changelog = wiring.sender.values("identity-state-changelog")
    assert len(changelog) == 1  # the repeat changed no state, so wrote none


@async_test
async def test_a_watchlist_entry_applies_before_events_that_came_with_it() -> None:
    wiring = FakeWiring()
    stage = identity_stage(wiring)
    person = BEIJING[2]
    opening = ev(T0, id=person)
    entry = WatchEntry("all", date(2025, 1, 1), date(2030, 1, 1), "credit_punishment")
    items: list[Any] = [
        EventItem("sims/0", opening, None),
        WatchItem("list/0", key_of(person), entry),
    ]
    marks = {"sims/0": Mark(event_order(opening), True), "banks/0": Mark(FIRST, True)}
    await stage.take(Message(encode_envelope(Envelope("identity", items, marks))), Acks().of(1))
    assert alert_rules(wiring.sender.values("police.alerts")) == ["watchlist_hit"]


@async_test
async def test_a_record_that_is_not_an_envelope_is_dead_lettered_and_acknowledged() -> None:
    wiring = FakeWiring()
    stage = identity_stage(wiring)
    acks = Acks()
    await stage.take(Message(b'E[1.0, {"old": "record"}]'), acks.of(1))
    assert acks.done == [1]
    assert [error.field for _, error in wiring.rejected] == ["record"]


@async_test
async def test_revoked_partitions_forget_what_they_held_and_take_nothing_more() -> None:
    wiring = FakeWiring()
    stage = identity_stage(wiring)
    acks = Acks()
    held = ev(T0, id=GANSU[0])
    await stage.take(Message(events_envelope("sims/0", [held]), partition=1), acks.of(1))
    assert len(stage.parts[1][0].merge) == 1
    tp = type("TP", (), {"topic": stage.topic, "partition": 1})()
    await stage.on_revoked({tp})
    assert 1 not in stage.parts
    await stage.take(Message(events_envelope("sims/0", [held]), partition=1), acks.of(2))
    assert 1 not in stage.parts and acks.done == []
    await stage.flush()
    assert acks.done == []  # the new owner reads them again


@async_test
async def test_identity_alerts_reach_the_agent_stage_with_the_identity_partitions_marks() -> None:
    settings = only("sim_nonlocal_not_in_person")
    wiring = FakeWiring()
    wiring.engine = engine(_with_agent_rule(settings))
    stage = identity_stage(wiring)
    event = ev(T0, id=BEIJING[0], agent_id="A-1", **NOT_IN_PERSON)
    partition = partition_of(event.subject_key.encode(), PARTITIONS)
    raw = events_envelope("sims/0", [event])
    idle = encode_envelope(Envelope("identity", [], {"banks/0": Mark(FIRST, True)}))
    await stage.take(Message(raw, partition=partition), Acks().of(1))
    await stage.take(Message(idle, partition=partition), Acks().of(2))
    sent = [s for s in wiring.sender.sent if s.topic == "duanka.agent-signals"]
    envelopes = [(s.partition, decode_envelope(s.value, "agent")) for s in sent]
    signals = [item for _, e in envelopes for item in e.items]
    assert [s.signal.agent_id for s in signals] == ["A-1"]  # type: ignore[union-attr]
    target = partition_of(b"A-1", PARTITIONS)
    assert {p for p, e in envelopes if e.items} == {target}
    origin = f"duanka.identity-events/{partition}"
    assert all(origin in e.marks for _, e in envelopes)
    assert envelopes[-1][1].marks[origin].key >= event_order(event)


def _with_agent_rule(settings: Any) -> Any:
    from dataclasses import replace

    return replace(settings, agent_flag_rate=replace(settings.agent_flag_rate, enabled=True))


@async_test
async def test_the_agent_stage_waits_for_every_identity_partition() -> None:
    wiring = FakeWiring()
    identities = identity_stage(wiring)
    agents = AgentStage(wiring)  # type: ignore[arg-type]
    agents.assigned = set(range(PARTITIONS))
    wiring.engine = engine(_with_agent_rule(only("sim_nonlocal_not_in_person")))
    people = {partition_of(key_of(person).encode(), PARTITIONS): person for person in BEIJING}
    assert len(people) == PARTITIONS  # one person in each identity partition
    events = [
        ev(T0 + n * DAY, id=people[n], agent_id="A-1", **NOT_IN_PERSON) for n in range(PARTITIONS)
    ]
    idle = encode_envelope(Envelope("identity", [], {"banks/0": Mark(FIRST, True)}))
    for partition, event in enumerate(events):
        await identities.take(Message(events_envelope("sims/0", [event]), partition), Acks().of(0))
        await identities.take(Message(idle, partition), Acks().of(0))
    target = partition_of(b"A-1", PARTITIONS)
    fed = 0

    async def feed_agents() -> None:
        nonlocal fed
        sent = [s for s in wiring.sender.sent if s.topic == "duanka.agent-signals"]
        for s in sent[fed:]:
            if s.partition == target:
                await agents.take(Message(s.value, target), Acks().of(0))
        fed = len(sent)

    await feed_agents()
    merge = agents.parts[target][0].merge
    # partition 0 has not heard that sims/0 went past the second event: its signal waits
    assert len(merge) == 1 and merge.released == event_order(events[0])
    done = Mark(event_order(events[-1]), idle=True)
    caught_up = Envelope("identity", [], {"sims/0": done, "banks/0": Mark(FIRST, True)})
    await identities.take(Message(encode_envelope(caught_up), 0), Acks().of(0))
    await feed_agents()
    assert len(merge) == 0 and merge.released == event_order(events[-1])
    assert set(merge.marks) == {f"duanka.identity-events/{p}" for p in range(PARTITIONS)}


@async_test
async def test_outlet_stage_screens_outlet_rules() -> None:
    wiring = FakeWiring()
    stage = OutletStage(wiring, ORIGINS)  # type: ignore[arg-type]
    stage.assigned = {0}
    shared = {"device_id": "dev-1"}
    events = [ev(T0 + n * MINUTE, id=GANSU[n], **shared) for n in range(5)]
    items: list[Any] = [EventItem("sims/0", e, None) for e in events]
    marks = {"sims/0": Mark(event_order(events[-1]), True), "banks/0": Mark(FIRST, True)}
    await stage.take(Message(encode_envelope(Envelope("outlet", items, marks))), Acks().of(1))
    assert alert_rules(wiring.sender.values("police.alerts")) == ["gang_batch_open"]

"""The stages without a broker: merge, screen, send, flush in order, acknowledge.

A fake wiring stands in for faust and Kafka: stores are dicts, the sender
keeps every record and resolves its futures when the test says so, and an
envelope's acknowledgement is a flag. The stages' code is the real one.
"""

from __future__ import annotations

import asyncio
import functools
import time
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
    committed: dict[tuple[str, int], int] = field(default_factory=dict)
    # where the fake's partitions start: the tests number envelopes from 1
    start: int = 1
    rereads: list[tuple[str, int, int]] = field(default_factory=list)

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

    async def commit(self, topic: str, offsets: dict[int, int]) -> None:
        self.log.append(f"commit {topic}")
        for partition, offset in offsets.items():
            assert offset > self.committed.get((topic, partition), 0), "commits go forward"
            self.committed[(topic, partition)] = offset

    async def start_offset(self, topic: str, partition: int) -> int:
        return self.committed.get((topic, partition), self.start)

    async def log_start(self, topic: str, partition: int) -> int:
        return self.start

    async def reread(self, topic: str, partition: int, offset: int) -> None:
        self.rereads.append((topic, partition, offset))

    def next_read(self, partition: int = 0, topic: str = "duanka.identity-events") -> int:
        """Where a restart would read `topic`'s partition from: its committed offset."""
        return self.committed.get((topic, partition), 0)

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


def events_envelope(origin: str, events: list[PseudonymousEvent]) -> bytes:
    """The events from one origin, with its mark at the last (its reader at offset 0)."""
    items: list[Any] = [EventItem(origin, e, None) for e in events]
    last = event_order(events[-1]) if events else FIRST
    return encode_envelope(Envelope("identity", items, {origin: Mark(last, 0)}))


# banks/0 has nothing to send: a mark at the start, and its end where its reader is
BANKS_QUIET = encode_envelope(Envelope("identity", [], {"banks/0": Mark(FIRST, 0)}))


class CaughtUp:
    """A view of the inputs' ends in which `origins` are read to their (quiet) end."""

    def __init__(self, *origins: str) -> None:
        self.origins = set(origins)

    def caught_up(self, origin: str, position: int) -> bool:
        return origin in self.origins


async def settle(stage: Any, *origins: str) -> None:
    """Give the stage a view in which `origins` (default: every input) are done."""
    await stage.on_ends(CaughtUp(*(origins or ORIGINS)), stage.counts())


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
    late = ev(T0 + 2 * DAY, id=BEIJING[0], **NOT_IN_PERSON)
    early = ev(T0 + 1 * DAY, id=BEIJING[1], **NOT_IN_PERSON)
    await stage.take(Message(events_envelope("sims/0", [late]), offset=1))
    assert wiring.sender.values("police.alerts") == []  # banks/0 has not reported
    await stage.take(Message(events_envelope("banks/0", [early]), offset=2))
    alerts = [orjson.loads(v) for v in wiring.sender.values("police.alerts")]
    # early is released (banks/0 is at its time, sims/0 past it); late waits for banks/0
    assert [a["evidence"][0]["event_id"] for a in alerts] == [early.event_id]
    assert len(stage.parts[0][0].merge) == 1
    await stage.take(Message(BANKS_QUIET, offset=3))
    assert len(stage.parts[0][0].merge) == 1  # its mark alone does not say it is done
    await settle(stage, "banks/0")
    alerts = [orjson.loads(v) for v in wiring.sender.values("police.alerts")]
    assert [a["evidence"][0]["event_id"] for a in alerts] == [early.event_id, late.event_id]
    assert wiring.next_read() == 0  # nothing is committed before a flush


def delays(wiring: FakeWiring, point: str) -> tuple[float | None, float | None]:
    """(count, sum) of the identity stage's delay histogram at `point`."""
    registry, labels = wiring.metrics.registry, {"stage": "identity", "point": point}
    return (
        registry.get_sample_value("duanka_stage_delay_seconds_count", labels),
        registry.get_sample_value("duanka_stage_delay_seconds_sum", labels),
    )


@async_test
async def test_the_delay_to_each_point_is_that_of_the_oldest_event_read() -> None:
    wiring = FakeWiring()
    stage = identity_stage(wiring)
    now = time.time()
    events = [ev(T0 + DAY, id=BEIJING[0]), ev(T0 + 2 * DAY, id=BEIJING[1])]
    items: list[Any] = [
        EventItem("sims/0", events[0], now - 30),
        EventItem("sims/0", events[1], now - 10),
    ]
    envelope = Envelope("identity", items, {"sims/0": Mark(event_order(events[1]), 0)})
    await stage.take(Message(encode_envelope(envelope), offset=1))
    count, seconds = delays(wiring, "received")
    assert count == 1 and seconds is not None and 30 <= seconds < 40  # one per envelope, oldest
    assert delays(wiring, "released") == (None, None)  # banks/0 has not reported: none released
    await stage.take(Message(BANKS_QUIET, offset=2))
    await settle(stage, "banks/0")
    count, seconds = delays(wiring, "released")
    assert count == 1 and seconds is not None and 30 <= seconds < 40


@async_test
async def test_flush_order_alerts_then_changelog_then_store_then_commit() -> None:
    wiring = FakeWiring(instant=False)
    stage = identity_stage(wiring)
    event = ev(T0, id=BEIJING[0], **NOT_IN_PERSON)
    marks = {"sims/0": Mark(event_order(event), 0), "banks/0": Mark(FIRST, 0)}
    envelope = Envelope("identity", [EventItem("sims/0", event, None)], marks)
    await stage.take(Message(encode_envelope(envelope), offset=1))
    await settle(stage)

    def log() -> list[str]:  # without the marks the identity stage sends the agent stage
        return [line for line in wiring.log if "agent-signals" not in line]

    sent = ["send police.alerts", "send duanka.case-links"]  # the alert, and it for the cases
    assert log() == sent
    flushing = asyncio.create_task(stage.flush())
    await asyncio.sleep(0.01)
    assert log() == sent  # waits for Kafka to have the alert
    wiring.sender.deliver()
    await asyncio.sleep(0.01)
    assert log()[-1] == "rows identity-state-changelog"
    assert wiring.next_read() == 0
    wiring.sender.deliver()
    await flushing
    assert log()[2:] == [
        "acked police.alerts",
        "acked duanka.case-links",
        "rows identity-state-changelog",
        "acked identity-state-changelog",
        "write identity-state",
        "commit duanka.identity-events",
    ]
    assert wiring.next_read() == 2
    store = wiring.stores[("identity-state", 0)]
    state = decode_identity(store.data[event.subject_key.encode()])
    assert [m.event_id for m in state.marks] == [event.event_id]
    assert store.offset == 0  # the changelog offset of the row


@async_test
async def test_what_is_screened_during_a_flush_waits_for_the_next_one() -> None:
    wiring = FakeWiring(instant=False)
    stage = identity_stage(wiring)
    first, second = ev(T0, id=GANSU[0]), ev(T0 + DAY, id=GANSU[1])
    marks = {"banks/0": Mark(FIRST, 0)}

    def envelope(event: PseudonymousEvent) -> bytes:
        mark = {"sims/0": Mark(event_order(event), 0), **marks}
        return encode_envelope(Envelope("identity", [EventItem("sims/0", event, None)], mark))

    await stage.take(Message(envelope(first), offset=1))
    await settle(stage)
    flushing = asyncio.create_task(stage.flush())
    await asyncio.sleep(0.01)
    await stage.take(Message(envelope(second), offset=2))
    await settle(stage)
    wiring.sender.deliver()
    await asyncio.sleep(0.01)
    wiring.sender.deliver()
    await flushing
    assert wiring.next_read() == 2
    written = wiring.stores[("identity-state", 0)].data
    assert second.subject_key.encode() not in written
    later = asyncio.create_task(stage.flush())
    await asyncio.sleep(0.01)
    wiring.sender.deliver()
    await later
    assert wiring.next_read() == 3
    assert second.subject_key.encode() in written


@async_test
async def test_envelopes_read_again_after_a_crash_change_nothing_twice() -> None:
    events = [ev(T0 + n * DAY, id=BEIJING[0], **NOT_IN_PERSON) for n in range(3)]
    raw = events_envelope("sims/0", events)
    wiring = FakeWiring()
    stage = identity_stage(wiring)
    await stage.take(Message(raw, offset=1))
    await stage.take(Message(BANKS_QUIET, offset=2))
    await settle(stage)
    await stage.flush()
    first_alerts = wiring.sender.values("police.alerts")
    # a new stage on the same stores reads the same envelopes again
    again = identity_stage(wiring)
    await again.take(Message(raw, offset=1))
    await again.take(Message(BANKS_QUIET, offset=2))
    await settle(again)
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
    marks = {"sims/0": Mark(event_order(opening), 0), "banks/0": Mark(FIRST, 0)}
    await stage.take(Message(encode_envelope(Envelope("identity", items, marks)), offset=1))
    await settle(stage)
    assert alert_rules(wiring.sender.values("police.alerts")) == ["watchlist_hit"]


@async_test
async def test_a_record_that_is_not_an_envelope_is_dead_lettered_and_committed() -> None:
    wiring = FakeWiring()
    stage = identity_stage(wiring)
    await stage.take(Message(b'E[1.0, {"old": "record"}]', offset=1))
    assert [error.field for _, error in wiring.rejected] == ["record"]
    await stage.flush()
    assert wiring.next_read() == 2


@async_test
async def test_envelopes_are_committed_in_the_order_read() -> None:
    """One still held keeps those after it uncommitted, though they are done."""
    wiring = FakeWiring()
    stage = identity_stage(wiring)
    held = ev(T0, id=GANSU[0])
    await stage.take(Message(events_envelope("sims/0", [held]), offset=1))
    await stage.take(Message(BANKS_QUIET, offset=2))  # nothing in it: done at once
    await stage.take(Message(b"not an envelope", offset=3))
    await stage.flush()
    assert wiring.next_read() == 0
    await settle(stage, "banks/0")
    await stage.flush()
    assert wiring.next_read() == 4


@async_test
async def test_an_envelope_faust_left_out_is_read_again_before_those_after_it() -> None:
    """Faust's stream can skip envelopes around a start and deliver some twice (positions.py)."""
    wiring = FakeWiring()
    stage = identity_stage(wiring)
    watched = BEIJING[2]
    entry = WatchEntry("all", date(2025, 1, 1), date(2030, 1, 1), "credit_punishment")
    listed = Envelope("identity", [WatchItem("list/0", key_of(watched), entry)], {})
    opening = ev(T0, id=watched)
    await stage.take(Message(BANKS_QUIET, offset=1))
    # faust delivers 3 without 2 (the entry): the stage sends faust back to 2 and drops 3
    await stage.take(Message(events_envelope("sims/0", [opening]), offset=3))
    assert wiring.rereads == [(stage.topic, 0, 2)]
    assert stage.parts[0][0].read_to == 1
    # what faust had fetched already still comes before the seek takes: dropped, no new seek
    await stage.take(Message(BANKS_QUIET, offset=4))
    assert wiring.rereads == [(stage.topic, 0, 2)]
    # read again from 2, with a repeat of 1 on the way
    await stage.take(Message(BANKS_QUIET, offset=1))
    await stage.take(Message(encode_envelope(listed), offset=2))
    await stage.take(Message(events_envelope("sims/0", [opening]), offset=3))
    await stage.take(Message(BANKS_QUIET, offset=4))
    await settle(stage)
    assert alert_rules(wiring.sender.values("police.alerts")) == ["watchlist_hit"]
    await stage.flush()
    assert wiring.next_read() == 5
    assert [p.offset for p in stage.parts[0][0].unacked] == []


@async_test
async def test_a_partition_starts_at_its_committed_offset() -> None:
    wiring = FakeWiring()
    wiring.committed[("duanka.identity-events", 0)] = 7
    stage = identity_stage(wiring)
    await stage.take(Message(BANKS_QUIET, offset=6))  # committed before: read already
    await stage.take(Message(BANKS_QUIET, offset=7))
    assert stage.parts[0][0].read_to == 7 and wiring.rereads == []


@async_test
async def test_envelopes_gone_from_kafka_are_passed_over() -> None:
    """Retention took what was never committed (a worker down for days): nothing to wait for."""
    wiring = FakeWiring()
    stage = identity_stage(wiring)
    await stage.take(Message(BANKS_QUIET, offset=1))
    wiring.start = 10
    await stage.take(Message(BANKS_QUIET, offset=10))
    assert stage.parts[0][0].read_to == 10 and wiring.rereads == []


@async_test
async def test_a_seek_that_brings_nothing_is_made_again() -> None:
    wiring = FakeWiring()
    stage = identity_stage(wiring)
    await stage.take(Message(BANKS_QUIET, offset=2))
    await stage.take(Message(BANKS_QUIET, offset=3))
    assert len(wiring.rereads) == 1
    stage.parts[0][0].rereading = time.monotonic() - 60
    await stage.take(Message(BANKS_QUIET, offset=4))
    assert wiring.rereads == [(stage.topic, 0, 1)] * 2


@async_test
async def test_revoked_partitions_flush_forget_what_they_held_and_take_nothing_more() -> None:
    wiring = FakeWiring()
    stage = identity_stage(wiring)
    done = ev(T0, id=GANSU[1])
    await stage.take(Message(BANKS_QUIET, partition=1, offset=1))
    await stage.take(Message(events_envelope("sims/0", [done]), partition=1, offset=2))
    await settle(stage)
    held = ev(T0 + DAY, id=GANSU[0])  # came after the view of the ends: waits for the next
    await stage.take(Message(events_envelope("sims/0", [held]), partition=1, offset=3))
    assert len(stage.parts[1][0].merge) == 1
    tp = type("TP", (), {"topic": stage.topic, "partition": 1})()
    await stage.on_revoked({tp})
    assert 1 not in stage.parts
    assert wiring.next_read(1) == 3  # what was done is committed on the way out
    await stage.take(Message(events_envelope("sims/0", [held]), partition=1, offset=4))
    assert 1 not in stage.parts
    await stage.flush()
    assert wiring.next_read(1) == 3  # the next owner reads the held one again


@async_test
async def test_identity_alerts_reach_the_agent_stage_with_the_identity_partitions_marks() -> None:
    settings = only("sim_nonlocal_not_in_person")
    wiring = FakeWiring()
    wiring.engine = engine(_with_agent_rule(settings))
    stage = identity_stage(wiring)
    event = ev(T0, id=BEIJING[0], agent_id="A-1", **NOT_IN_PERSON)
    partition = partition_of(event.subject_key.encode(), PARTITIONS)
    raw = events_envelope("sims/0", [event])
    await stage.take(Message(raw, partition=partition, offset=1))
    await stage.take(Message(BANKS_QUIET, partition=partition, offset=2))
    await settle(stage, "banks/0")
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
    for partition, event in enumerate(events):
        await identities.take(Message(events_envelope("sims/0", [event]), partition, offset=1))
        await identities.take(Message(BANKS_QUIET, partition, offset=2))
    await settle(identities, "banks/0")
    target = partition_of(b"A-1", PARTITIONS)
    fed = 0
    read = wiring.start  # the offset of the next envelope on the target partition

    async def feed_agents() -> None:
        nonlocal fed, read
        sent = [s for s in wiring.sender.sent if s.topic == "duanka.agent-signals"]
        for s in sent[fed:]:
            if s.partition == target:
                await agents.take(Message(s.value, target, offset=read))
                read += 1
        fed = len(sent)

    await feed_agents()
    merge = agents.parts[target][0].merge
    # partition 0 has not heard that sims/0 went past the second event: its signal waits
    assert len(merge) == 1 and merge.released == event_order(events[0])
    done = Mark(event_order(events[-1]), 0)
    caught_up = Envelope("identity", [], {"sims/0": done})
    await identities.take(Message(encode_envelope(caught_up), 0, offset=3))
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
    marks = {"sims/0": Mark(event_order(events[-1]), 0), "banks/0": Mark(FIRST, 0)}
    await stage.take(Message(encode_envelope(Envelope("outlet", items, marks)), offset=1))
    await settle(stage)
    assert alert_rules(wiring.sender.values("police.alerts")) == ["gang_batch_open"]

"""Rule state: what each identity, outlet and agent remembers.

Plain objects that a test can build from a list of events and that the
stream stores in its tables (as the compact JSON of the codecs below). They
hold pseudonyms and event references, never a raw id number. Each keeps the
keys of the events it has applied, so an event seen twice (a repeated record,
or one reprocessed after a crash) changes nothing the second time.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from datetime import date
from operator import attrgetter
from sys import intern
from typing import Any

import orjson

from rules.alert import Evidence
from rules.event import PseudonymousEvent
from rules.holdings import carrier_of

NEVER = float("-inf")


def event_key(event: PseudonymousEvent) -> str:
    """The idempotency key of an event: its (source, event_id)."""
    return f"{event.source}\x1f{event.event_id}"


@dataclass(slots=True)
class Mark:
    """One event in an identity's history: what the identity rules look back at."""

    ts: float
    source: str
    event_id: str
    event_type: str
    occurred_at: str
    outlet_province: str
    is_nonlocal: bool

    @classmethod
    def of(cls, event: PseudonymousEvent, ts: float, iso: str | None = None) -> Mark:
        # the few distinct values are interned: a year of history holds many marks
        return cls(
            ts,
            intern(event.source),
            event.event_id,
            intern(event.event_type),
            iso or event.iso(),
            intern(event.outlet_province),
            event.is_nonlocal,
        )

    @property
    def order(self) -> tuple[float, str, str]:
        return (self.ts, self.source, self.event_id)

    @property
    def key(self) -> str:
        return f"{self.source}\x1f{self.event_id}"

    def evidence(self) -> Evidence:
        return Evidence(self.event_id, self.source, self.event_type, self.occurred_at)


@dataclass(frozen=True, slots=True)
class WatchEntry:
    """An identity's credit-punishment entry, without its id number."""

    scope: str
    since: date
    until: date
    list: str
    reason: str = ""
    basis: str = ""  # the legal basis of the listing, e.g. "2024 joint punishment, conviction"

    def covers(self, event_type: str, day: date) -> bool:
        """Whether the entry bars this kind of opening on this (local) day."""
        if not self.since <= day < self.until:
            return False
        if event_type == "sim.activate":
            return self.scope in ("telecom", "all")
        if event_type == "bank.open":
            return self.scope in ("bank", "all")
        return False


SMALL = 8  # a window this short is searched for a key; a longer one keeps an index


# Items are ordered by their `order`, not by comparing them: a class compiled
# with mypyc that defines __lt__ loses its dataclass __eq__.
by_order = attrgetter("order")


@dataclass(slots=True)
class Window:
    """Events in time order, and which keys it holds: the common part of every state.

    `times` holds each item's time, in the same order, so that finding where
    a time falls is a bisection in C rather than one Python call per step.
    Most subjects have a handful of events, so the index of keys (for telling
    a repeated event) is only built once a window grows past SMALL items.
    """

    items: list[Any] = field(default_factory=list)
    latest: float = NEVER
    index: set[str] | None = None
    times: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.times) != len(self.items):
            self.times = [item.ts for item in self.items]

    def has(self, key: str) -> bool:
        if self.index is not None:
            return key in self.index
        return any(item.key == key for item in self.items)

    def holds(self, source: str, event_id: str) -> bool:
        """Whether the window has the event `(source, event_id)` (items with those fields)."""
        if self.index is not None:
            return f"{source}\x1f{event_id}" in self.index
        return any(item.event_id == event_id and item.source == source for item in self.items)

    def keys(self) -> set[str]:
        return {item.key for item in self.items}

    def add(self, item: Any) -> None:
        items, times = self.items, self.times
        if not items or not item.order < items[-1].order:
            items.append(item)
            times.append(item.ts)
        else:
            at = bisect_right(items, item.order, lo=bisect_left(times, item.ts), key=by_order)
            items.insert(at, item)
            times.insert(at, item.ts)
        if self.index is not None:
            self.index.add(item.key)
        elif len(items) > SMALL:
            self.index = self.keys()
        self.latest = max(self.latest, item.ts)

    def since(self, start: float, end: float) -> list[Any]:
        """The items with start <= ts <= end."""
        times = self.times
        return self.items[bisect_left(times, start) : bisect_right(times, end)]

    def prune(self, horizon: float) -> None:
        """Forget items older than `horizon`, and their keys."""
        cut = bisect_left(self.times, horizon)
        if cut:
            if self.index is not None:
                for item in self.items[:cut]:
                    self.index.discard(item.key)
            del self.items[:cut]
            del self.times[:cut]
            if self.index is not None and len(self.items) <= SMALL:
                self.index = None


@dataclass(slots=True)
class Held:
    """What an identity holds at one source (a carrier's or bank's province): CHECK.md.

    `base` is what the source's latest snapshot (as of `as_of`) counted, less
    the cards of it cancelled since; `opened` the cards opened at or after
    `as_of` and still held, by token (the phone number's or account's), with
    their kind and time. `removed` remembers each cancellation or closing at
    or after `as_of` ([time, kind asked for or "", time of the opening it
    matched or None]) so that a newer snapshot, loaded after them, can take
    off what it still counts. Kinds: `personal` and `iot` SIMs; `I`, `II`,
    `III` and `unknown` accounts.
    """

    as_of: float = NEVER
    base: dict[str, int] = field(default_factory=dict)
    opened: dict[str, list[Any]] = field(default_factory=dict)  # token -> [kind, ts]
    removed: list[list[Any]] = field(default_factory=list)  # [ts, kind or "", matched ts or None]

    def count(self, kind: str) -> int:
        return self.base.get(kind, 0) + sum(1 for k, _ in self.opened.values() if k == kind)

    def open(self, token: str, kind: str, ts: float) -> bool:
        """A card opened at `ts`; False if the snapshot already counts it."""
        if ts < self.as_of:
            return False
        self.opened[token] = [kind, ts]
        return True

    def remove(self, token: str, kind: str, ts: float) -> bool:
        """A card cancelled at `ts` (`kind` "" if the event does not say); False if no change."""
        if ts < self.as_of:
            return False
        opened = self.opened.pop(token, None)
        if opened is not None:
            self.removed.append([ts, opened[0], opened[1]])
            return True
        self.removed.append([ts, kind, None])
        return self._take_from_base(kind)

    def _take_from_base(self, kind: str) -> bool:
        base = self.base
        if not kind:  # a cancellation that does not name the kind: a personal SIM first
            kind = next((k for k in ("personal", "iot") if base.get(k)), "")
        if not base.get(kind):
            return False
        base[kind] -= 1
        if not base[kind]:
            del base[kind]
        return True

    def snapshot(self, as_of: float, counts: dict[str, int]) -> None:
        """Replace the snapshot: what it counts, less what was cancelled after `as_of`."""
        self.as_of = as_of
        self.base = {kind: n for kind, n in counts.items() if n}
        self.opened = {t: entry for t, entry in self.opened.items() if entry[1] >= as_of}
        self.removed = [r for r in self.removed if r[0] >= as_of]
        for _, kind, matched in self.removed:
            if matched is None or matched < as_of:  # a card the new snapshot counts
                self._take_from_base(kind)

    def prune(self, horizon: float) -> None:
        """Forget cancellations before `horizon` (a snapshot older than that is not expected)."""
        if self.removed and self.removed[0][0] < horizon:
            self.removed = [r for r in self.removed if r[0] >= horizon]


@dataclass(slots=True)
class CheckRecord:
    """A pre-opening check an identity's owner decided: its answer, and its reservation.

    `reserved` is the opening as a pseudonymous row (masks left out) while the
    check holds its place in the limits, until `expires` (seconds since the
    epoch); None once its event took it over, or if it reserved nothing.
    The record is kept until `until`, to answer the same check_id again.
    """

    until: float
    answer: dict[str, Any]
    reserved: list[Any] | None = None
    expires: float = NEVER


@dataclass(slots=True)
class IdentityState:
    history: Window = field(default_factory=Window)
    cooldowns: dict[str, float] = field(default_factory=dict)
    watch: WatchEntry | None = None
    holdings: dict[str, Held] = field(default_factory=dict)  # by source
    checks: dict[str, CheckRecord] = field(default_factory=dict)  # by source + "\x1f" + check_id
    # punishments from the police's verdicts, by the alert they confirmed
    punished: dict[str, WatchEntry] = field(default_factory=dict)

    def barring(self, event_type: str, day: date) -> WatchEntry | None:
        """The first active entry (the list keepers', then the police's) that bars this opening."""
        if self.watch is not None and self.watch.covers(event_type, day):
            return self.watch
        for _, entry in sorted(self.punished.items()):
            if entry.covers(event_type, day):
                return entry
        return None

    def held(self, sources_of: str, kind: str) -> int:
        """Cards of `kind` held at every source of the carrier or bank `sources_of`."""
        return sum(
            held.count(kind)
            for source, held in self.holdings.items()
            if carrier_of(source) == sources_of
        )

    @property
    def marks(self) -> list[Mark]:
        return self.history.items


@dataclass(slots=True)
class Opening:
    """One opening at an outlet: what the outlet rules look back at."""

    ts: float
    source: str
    event_id: str
    event_type: str
    occurred_at: str
    subject_key: str
    is_nonlocal: bool
    id_prefecture: str | None
    device_key: str | None  # tokens, as in PseudonymousEvent
    contact_key: str | None
    address_key: str | None

    @classmethod
    def of(cls, event: PseudonymousEvent, ts: float, iso: str | None = None) -> Opening:
        delivery = event.delivery
        return cls(
            ts,
            intern(event.source),
            event.event_id,
            intern(event.event_type),
            iso or event.iso(),
            event.subject_key,
            event.is_nonlocal,
            event.id_prefecture,
            event.device_key,
            event.contact_key,
            delivery.address_key if delivery else None,
        )

    @property
    def key(self) -> str:
        return f"{self.source}\x1f{self.event_id}"

    @property
    def order(self) -> tuple[float, str, str]:
        return (self.ts, self.source, self.event_id)

    def evidence(self) -> Evidence:
        return Evidence(self.event_id, self.source, self.event_type, self.occurred_at)


@dataclass(slots=True)
class OutletState:
    openings: Window = field(default_factory=Window)
    cooldowns: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AgentSignal:
    """An identity alert on an event an agent handled: what `agent_flag_rate` counts."""

    agent_id: str
    ts: float
    subject_key: str
    alert_id: str
    region_code: str
    evidence: Evidence


@dataclass(slots=True)
class Flag:
    """One alerted identity in an agent's history."""

    ts: float
    subject_key: str
    alert_id: str
    evidence: Evidence

    @property
    def key(self) -> str:
        return self.alert_id

    @property
    def order(self) -> tuple[float, str]:
        return (self.ts, self.alert_id)


@dataclass(slots=True)
class AgentState:
    flags: Window = field(default_factory=Window)
    cooldowns: dict[str, float] = field(default_factory=dict)


def expire_cooldowns(cooldowns: dict[str, float], now: float) -> None:
    """Drop cooldowns that ended before `now`."""
    if not cooldowns:
        return
    for name in [name for name, until in cooldowns.items() if until <= now]:
        del cooldowns[name]


# ---------------------------------------------------------------- codecs
# Compact JSON arrays: the stream writes one of these per changed subject.


def _evidence_row(e: Evidence) -> list[str]:
    return [e.event_id, e.source, e.event_type, e.occurred_at]


def encode_identity(state: IdentityState) -> bytes:
    extra: dict[str, Any] = {}
    if state.holdings:
        extra["h"] = {
            source: [None if h.as_of == NEVER else h.as_of, h.base, h.opened, h.removed]
            for source, h in state.holdings.items()
        }
    if state.checks:
        extra["k"] = {
            key: [c.until, c.answer, c.reserved, None if c.expires == NEVER else c.expires]
            for key, c in state.checks.items()
        }
    return orjson.dumps(
        extra
        | {
            "m": [
                [
                    m.ts,
                    m.source,
                    m.event_id,
                    m.event_type,
                    m.occurred_at,
                    m.outlet_province,
                    m.is_nonlocal,
                ]
                for m in state.history.items
            ],
            "t": state.history.latest if state.history.items else None,
            "c": state.cooldowns,
            "w": watch_row(state.watch),
        }
        | ({"p": {a: watch_row(e) for a, e in state.punished.items()}} if state.punished else {})
    )


def watch_row(entry: WatchEntry | None) -> list[str] | None:
    """A watchlist entry as a JSON array (None stays None)."""
    if entry is None:
        return None
    row = [entry.scope, entry.since.isoformat(), entry.until.isoformat(), entry.list, entry.reason]
    if entry.basis:
        row.append(entry.basis)
    return row


def watch_from_row(row: list[str] | None) -> WatchEntry | None:
    if row is None:
        return None
    scope, since, until, name, reason, *basis = row
    return WatchEntry(
        scope, date.fromisoformat(since), date.fromisoformat(until), name, reason, *basis
    )


def decode_identity(raw: bytes) -> IdentityState:
    obj = orjson.loads(raw)
    marks = [Mark(*row) for row in obj["m"]]
    state = IdentityState(_window(marks, obj["t"]), obj["c"], watch_from_row(obj["w"]))
    held = obj.get("h")  # absent in state written before holdings
    if held:
        state.holdings = {
            source: Held(NEVER if as_of is None else as_of, base, opened, removed)
            for source, (as_of, base, opened, removed) in held.items()
        }
    punished = obj.get("p")  # absent in state written before the police's verdicts
    if punished:
        state.punished = {a: e for a, row in punished.items() if (e := watch_from_row(row))}
    checks = obj.get("k")
    if checks:
        state.checks = {
            key: CheckRecord(until, answer, reserved, NEVER if expires is None else expires)
            for key, (until, answer, reserved, expires) in checks.items()
        }
    return state


def encode_outlet(state: OutletState) -> bytes:
    return orjson.dumps(
        {
            "o": [
                [
                    o.ts,
                    o.source,
                    o.event_id,
                    o.event_type,
                    o.occurred_at,
                    o.subject_key,
                    o.is_nonlocal,
                    o.id_prefecture,
                    o.device_key,
                    o.contact_key,
                    o.address_key,
                ]
                for o in state.openings.items
            ],
            "t": state.openings.latest if state.openings.items else None,
            "c": state.cooldowns,
        }
    )


def decode_outlet(raw: bytes) -> OutletState:
    obj = orjson.loads(raw)
    return OutletState(_window([Opening(*row) for row in obj["o"]], obj["t"]), obj["c"])


def encode_agent(state: AgentState) -> bytes:
    return orjson.dumps(
        {
            "f": [
                [f.ts, f.subject_key, f.alert_id, *_evidence_row(f.evidence)]
                for f in state.flags.items
            ],
            "t": state.flags.latest if state.flags.items else None,
            "c": state.cooldowns,
        }
    )


def decode_agent(raw: bytes) -> AgentState:
    obj = orjson.loads(raw)
    flags = [Flag(row[0], row[1], row[2], Evidence(*row[3:])) for row in obj["f"]]
    return AgentState(_window(flags, obj["t"]), obj["c"])


def signal_row(signal: AgentSignal) -> list[object]:
    """A signal as a JSON array: how the worker's envelopes carry it."""
    return [
        signal.agent_id,
        signal.ts,
        signal.subject_key,
        signal.alert_id,
        signal.region_code,
        *_evidence_row(signal.evidence),
    ]


def signal_from_row(row: list[Any]) -> AgentSignal:
    """Read back `signal_row`; raises ValueError or TypeError on anything else."""
    if len(row) != 9 or not all(type(value) is str for i, value in enumerate(row) if i != 1):
        raise ValueError("not a signal row")
    if type(row[1]) not in (int, float):
        raise ValueError("not a signal row")
    return AgentSignal(row[0], float(row[1]), row[2], row[3], row[4], Evidence(*row[5:]))


def _window(items: list[Any], latest: float | None) -> Window:
    window = Window(items, NEVER if latest is None else latest)
    if len(items) > SMALL:
        window.index = window.keys()
    return window

"""Implicated cards: from a number found in a fraud case back to the opening (CASES.md).

The police publish each phone number or account found in a fraud case
(`duanka.implicated/1`). The engine keeps, per keyed token of an msisdn or
account id, the openings that created it (`NumberState`); a report is traced
to the latest of them before `reported_at` (and from the report's source,
if it names one), within `implicated.retention`. Raw numbers stay in the
input topic: what goes further is the token (`Report`).

A trace gives three rules:

- `implicated_opener`: the identity that opened the card, once per report;
- `outlet_implicated` and `agent_implicated`: an outlet or a staff member
  that opened at least `cards` implicated cards within one `window` (90 days:
  the openings are at most that far apart, whatever order the police report
  them in), with a cooldown in report time.

`Trace.row()` is what the campaign's figures are counted from: the opening's
day, source, province, outlet, agent and channel, and the days from opening
to report (the stream's metrics, replay's traces file, the report).
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from sys import intern
from typing import Any

import orjson

from rules.alert import Alert, Evidence, Subject, make_alert_id
from rules.config import ImplicatedOpenerSettings, ImplicatedPlaceSettings
from rules.errors import InvalidEvent, InvalidRecord
from rules.event import PseudonymousEvent, parse_time
from rules.pseudonym import Pseudonymizer

IMPLICATED_SCHEMA = "duanka.implicated/1"
KINDS = ("sim", "account")
MAX_IMPLICATED_BYTES = 16 * 1024
NO_OPENING = "no opening known"
DAY_S = 86400
# the token kinds of rules/event.py's pseudonymise: a report's number meets the events' tokens
TOKEN_KINDS = {"sim": "msisdn", "account": "account"}
# after every event of the same second: a report is traced against the openings up to it
REPORT_ORDER = "\x7fimplicated"


class InvalidImplicated(InvalidRecord):
    """An implicated-number record the engine cannot use: which field, and why."""


@dataclass(frozen=True, slots=True)
class Implicated:
    """A `duanka.implicated/1` record as the police wrote it (raw number: input topic only)."""

    kind: str
    number: str = field(repr=False)
    case_ref: str
    reported_at: datetime
    source: str | None = None

    def to_json(self) -> bytes:
        obj: dict[str, Any] = {"schema": IMPLICATED_SCHEMA, "kind": self.kind}
        obj["number"] = self.number
        if self.source is not None:
            obj["source"] = self.source
        obj["case_ref"] = self.case_ref
        obj["reported_at"] = self.reported_at.isoformat()
        return orjson.dumps(obj)


def parse_implicated(raw: bytes | None) -> Implicated:
    """A `duanka.implicated/1` record from JSON bytes; raises InvalidImplicated."""
    if not raw:
        raise InvalidImplicated("record", "no value (a null record)")
    if len(raw) > MAX_IMPLICATED_BYTES:
        raise InvalidImplicated("record", f"larger than 16 KiB ({len(raw)} bytes)")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidImplicated("record", "not valid JSON") from None
    if type(obj) is not dict:
        raise InvalidImplicated("record", "not a JSON object")
    if obj.get("schema") != IMPLICATED_SCHEMA:
        raise InvalidImplicated("schema", f"must be {IMPLICATED_SCHEMA}")
    kind = _text(obj, "kind", 10)
    if kind not in KINDS:
        raise InvalidImplicated("kind", f"unknown value {kind!r} (expected one of: sim, account)")
    number = _text(obj, "number", 64)
    if kind == "sim" and not (number.isdigit() and number.isascii() and 5 <= len(number) <= 15):
        raise InvalidImplicated("number", "an msisdn is 5 to 15 digits")
    source = None if obj.get("source") in (None, "") else _text(obj, "source", 64)
    case_ref = _text(obj, "case_ref", 128)
    try:
        reported_at = parse_time(_text(obj, "reported_at", 40), "reported_at")
    except InvalidEvent as error:
        raise InvalidImplicated("reported_at", error.reason) from None
    return Implicated(kind, number, case_ref, reported_at, source)


def _text(obj: Mapping[str, Any], name: str, limit: int) -> str:
    value = obj.get(name)
    if value is None or value == "":
        raise InvalidImplicated(name, "missing")
    if not isinstance(value, str):
        raise InvalidImplicated(name, "must be a string")
    if len(value) > limit:
        raise InvalidImplicated(name, f"longer than {limit} characters")
    return value


@dataclass(frozen=True, slots=True)
class Report:
    """An implicated number as the engine keeps it: its token, never the number."""

    kind: str
    number_key: str
    case_ref: str
    reported_at: str  # ISO 8601, as the police gave it
    ts: float
    source: str | None = None

    @property
    def order(self) -> tuple[float, str, str]:
        """Where the report goes in event-time order: after the openings of its second."""
        return (self.ts, REPORT_ORDER, f"{self.number_key}\x1f{self.case_ref}")

    def to_list(self) -> list[Any]:
        return [self.kind, self.number_key, self.case_ref, self.reported_at, self.ts, self.source]

    @classmethod
    def from_list(cls, row: list[Any]) -> Report:
        return cls(row[0], row[1], row[2], row[3], row[4], row[5])


def report_of(implicated: Implicated, pseudonymizer: Pseudonymizer) -> Report:
    """The report with the number replaced by the token the events' numbers have."""
    key = pseudonymizer.token(TOKEN_KINDS[implicated.kind], implicated.number)
    assert key is not None
    return Report(
        implicated.kind,
        key,
        implicated.case_ref,
        implicated.reported_at.isoformat(),
        implicated.reported_at.timestamp(),
        implicated.source,
    )


def number_key(event: PseudonymousEvent) -> tuple[str, str] | None:
    """(kind, token) of the number an opening created, or None (not an opening, no number)."""
    if event.event_type == "sim.activate" and event.msisdn_key:
        return "sim", event.msisdn_key
    if event.event_type == "bank.open" and event.account_key:
        return "account", event.account_key
    return None


@dataclass(frozen=True, slots=True)
class Opened:
    """The opening that created a number: who, where, by whom (tokens and ids, no raw data)."""

    ts: float
    occurred_at: str
    source: str
    event_id: str
    event_type: str
    subject_key: str
    id_masked: str
    id_province: str | None
    outlet_id: str
    agent_id: str
    channel: str
    region_code: str

    @classmethod
    def of(cls, event: PseudonymousEvent) -> Opened:
        return cls(
            event.epoch(),
            event.iso(),
            intern(event.source),
            event.event_id,
            intern(event.event_type),
            event.subject_key,
            event.id_masked,
            event.id_province,
            event.outlet_id,
            event.agent_id or "",
            intern(event.channel),
            event.region_code,
        )

    @property
    def order(self) -> tuple[float, str, str]:
        return (self.ts, self.source, self.event_id)

    @property
    def ref(self) -> str:
        return f"{self.source}\x1f{self.event_id}"

    def evidence(self) -> Evidence:
        return Evidence(self.event_id, self.source, self.event_type, self.occurred_at)

    def to_list(self) -> list[Any]:
        return [
            self.ts,
            self.occurred_at,
            self.source,
            self.event_id,
            self.event_type,
            self.subject_key,
            self.id_masked,
            self.id_province,
            self.outlet_id,
            self.agent_id,
            self.channel,
            self.region_code,
        ]

    @classmethod
    def from_list(cls, row: list[Any]) -> Opened:
        return cls(*row)


@dataclass(slots=True)
class NumberState:
    """The openings of one number (by token), oldest first, and the reports already traced."""

    openings: list[Opened] = field(default_factory=list)
    reports: list[str] = field(default_factory=list)  # case_refs traced, to count each once
    cards: list[str] = field(default_factory=list)  # openings (refs) found implicated so far

    def add(self, opened: Opened) -> bool:
        """Keep an opening; False if it is known already."""
        if any(o.ref == opened.ref for o in self.openings):
            return False
        orders = [o.order for o in self.openings]
        self.openings.insert(bisect.bisect(orders, opened.order), opened)
        return True

    def opening_for(self, report: Report, retention_s: int) -> Opened | None:
        """The latest opening at or before the report (from its source, if it names one)."""
        for opened in reversed(self.openings):
            if opened.ts > report.ts:
                continue
            if report.ts - opened.ts > retention_s:
                return None
            if report.source is None or opened.source == report.source:
                return opened
        return None

    def prune(self, horizon: float) -> None:
        """Forget openings older than `horizon`, but for the latest (a number still in use)."""
        keep = [o for o in self.openings[:-1] if o.ts >= horizon]
        self.openings = keep + self.openings[-1:]


def encode_number(state: NumberState) -> bytes:
    return orjson.dumps([[o.to_list() for o in state.openings], state.reports, state.cards])


def decode_number(raw: bytes) -> NumberState:
    openings, reports, cards = orjson.loads(raw)
    return NumberState([Opened.from_list(row) for row in openings], reports, cards)


@dataclass(frozen=True, slots=True)
class Trace:
    """A report and the opening it was traced to."""

    report: Report
    opening: Opened
    first: bool = True  # the first report of this card (its opening): the figures count it

    @property
    def days(self) -> float:
        """Days from the opening to the report."""
        return (self.report.ts - self.opening.ts) / DAY_S

    def row(self) -> dict[str, Any]:
        """The trace as the figures count it (replay's traces file): tokens and ids only."""
        o = self.opening
        return {
            "kind": self.report.kind,
            "number_key": self.report.number_key,
            "case_ref": self.report.case_ref,
            "reported_at": self.report.reported_at,
            "opened_at": o.occurred_at,
            "opened_day": o.occurred_at[:10],
            "days_to_report": round(self.days, 3),
            "source": o.source,
            "province": o.region_code[:2],
            "outlet_id": o.outlet_id,
            "agent_id": o.agent_id,
            "channel": o.channel,
            "subject_key": o.subject_key,
            "event_id": o.event_id,
            "first": self.first,
        }


# ---------------------------------------------------------------- the rules


def opener_alert(settings: ImplicatedOpenerSettings, trace: Trace, now: datetime) -> Alert:
    """`implicated_opener`: a card this identity opened was found in a fraud case."""
    o, r = trace.opening, trace.report
    what = "电话卡" if r.kind == "sim" else "银行账户"
    what_en = "SIM card" if r.kind == "sim" else "bank account"
    days = int(trace.days)
    return Alert(
        alert_id=make_alert_id(
            "implicated_opener", o.subject_key, o.source, o.event_id, r.case_ref
        ),
        rule_id="implicated_opener",
        severity=settings.severity,
        action=settings.action,
        subject=Subject("identity", o.subject_key, o.id_masked, o.id_province),
        event_time=datetime.fromisoformat(r.reported_at),
        detected_at=now,
        source=o.source,
        region_code=o.region_code,
        summary_zh=f"本人开办的{what}涉案（案件 {r.case_ref}），开卡后 {days} 天被通报",
        summary_en=(
            f"A {what_en} this person opened was found in fraud case {r.case_ref}, "
            f"{days} days after it was opened"
        ),
        facts={
            "kind": r.kind,
            "number_key": r.number_key,
            "case_ref": r.case_ref,
            "reported_at": r.reported_at,
            "opened_at": o.occurred_at,
            "days_to_report": round(trace.days, 1),
            "outlet_id": o.outlet_id,
            "agent_id": o.agent_id,
            "channel": o.channel,
        },
        evidence=[o.evidence()],
    )


@dataclass(frozen=True, slots=True)
class Card:
    """An implicated card as an outlet's or a staff member's state keeps it."""

    opened_ts: float
    reported_ts: float
    ref: str  # the opening's source and event id: one card, however often reported
    number_key: str
    case_ref: str
    subject_key: str  # who opened it (a pseudonym), for the cases
    evidence: Evidence

    def to_list(self) -> list[Any]:
        e = self.evidence
        return [
            self.opened_ts,
            self.reported_ts,
            self.ref,
            self.number_key,
            self.case_ref,
            self.subject_key,
            [e.event_id, e.source, e.event_type, e.occurred_at],
        ]

    @classmethod
    def from_list(cls, row: list[Any]) -> Card:
        return cls(row[0], row[1], row[2], row[3], row[4], row[5], Evidence(*row[6]))


@dataclass(slots=True)
class PlaceState:
    """An outlet's or a staff member's implicated cards (by opening), and its cooldown."""

    cards: list[Card] = field(default_factory=list)
    cooldown_until: float = 0.0  # report time before which it does not alert again
    latest: float = 0.0  # the latest report time seen


def encode_place(state: PlaceState) -> bytes:
    return orjson.dumps([[c.to_list() for c in state.cards], state.cooldown_until, state.latest])


def decode_place(raw: bytes) -> PlaceState:
    cards, cooldown_until, latest = orjson.loads(raw)
    return PlaceState([Card.from_list(row) for row in cards], cooldown_until, latest)


PLACE_RULES = {"outlet": "outlet_implicated", "agent": "agent_implicated"}
IMPLICATED_RULES = ("implicated_opener", *PLACE_RULES.values())


class ImplicatedPlace:
    """`outlet_implicated` / `agent_implicated`: many implicated cards opened in one window."""

    def __init__(self, kind: str, settings: ImplicatedPlaceSettings, retention_s: int) -> None:
        self.kind = kind
        self.rule_id = PLACE_RULES[kind]
        self.settings = settings
        self.window_s = settings.window_s
        # a report finds openings at most this old, and a window reaches one window further
        self.keep_s = retention_s + settings.window_s

    def screen(
        self, state: PlaceState, key: str, trace: Trace, now: datetime
    ) -> tuple[bool, Alert | None]:
        """Count the trace's card; (applied, the alert if the place reached the threshold)."""
        o, r = trace.opening, trace.report
        if any(c.ref == o.ref for c in state.cards):
            return False, None
        card = Card(o.ts, r.ts, o.ref, r.number_key, r.case_ref, o.subject_key, o.evidence())
        opened = [c.opened_ts for c in state.cards]
        state.cards.insert(bisect.bisect(opened, o.ts), card)
        state.latest = max(state.latest, r.ts)
        state.cards = [c for c in state.cards if c.opened_ts >= state.latest - self.keep_s]
        alert = None
        if r.ts >= state.cooldown_until:
            span = self.densest(state.cards, o.ts)
            if len(span) >= self.settings.cards:
                alert = self.alert(key, trace, span, now)
                if self.settings.cooldown_s:
                    state.cooldown_until = r.ts + self.settings.cooldown_s
        return True, alert

    def densest(self, cards: list[Card], ts: float) -> list[Card]:
        """The most cards opened within one window that holds the opening at `ts`."""
        near = [c for c in cards if abs(c.opened_ts - ts) <= self.window_s]
        best: list[Card] = []
        for i, first in enumerate(near):
            if first.opened_ts > ts:
                break
            span = [c for c in near[i:] if c.opened_ts - first.opened_ts <= self.window_s]
            if len(span) > len(best):
                best = span
        return best

    def alert(self, key: str, trace: Trace, span: list[Card], now: datetime) -> Alert:
        o, r = trace.opening, trace.report
        days = self.window_s // DAY_S
        where_zh = "营业网点" if self.kind == "outlet" else "受理工号"
        where_en = "outlet" if self.kind == "outlet" else "staff member"
        return Alert(
            alert_id=make_alert_id(self.rule_id, key, o.source, o.event_id, r.case_ref),
            rule_id=self.rule_id,
            severity=self.settings.severity,
            action=self.settings.action,
            subject=Subject(self.kind, key),
            event_time=datetime.fromisoformat(r.reported_at),
            detected_at=now,
            source=o.source,
            region_code=o.region_code,
            summary_zh=(
                f"{where_zh} {key} 在 {days} 天内开办的 {len(span)} 张卡涉案（谁开卡谁负责）"
            ),
            summary_en=(
                f"{len(span)} cards opened by {where_en} {key} within {days} days "
                "were found in fraud cases"
            ),
            facts={
                "implicated_cards": len(span),
                "threshold": self.settings.cards,
                "window_days": days,
                "cards": [
                    {
                        "number_key": c.number_key,
                        "case_ref": c.case_ref,
                        "opened_at": c.evidence.occurred_at,
                    }
                    for c in span
                ],
            },
            evidence=[c.evidence for c in span],
        )


# ---------------------------------------------------------------- cases


def opener_links(trace: Trace) -> list[list[str]]:
    """What an `implicated_opener` alert links by (rules/cases.py): the person, outlet, staff."""
    o = trace.opening
    rows = [[o.event_id, "identity", o.subject_key, o.id_masked]]
    if o.outlet_id:
        rows.append([o.event_id, "outlet", o.outlet_id, o.outlet_id])
    if o.agent_id:
        rows.append([o.event_id, "agent", o.agent_id, o.agent_id])
    return rows


def place_links(alert: Alert, state: PlaceState) -> list[list[str]]:
    """An outlet's or staff member's alert: the place, and the people who opened its cards."""
    kind, key = alert.subject.kind, alert.subject.key
    rows = [["", kind, key, key]]
    wanted = set(alert.evidence)
    for card in state.cards:
        if card.evidence in wanted:
            rows.append([card.evidence.event_id, "identity", card.subject_key, ""])
            rows.append([card.evidence.event_id, kind, key, key])
    return rows

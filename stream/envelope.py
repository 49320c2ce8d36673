"""Envelopes: what the worker's stages send each other, many items to one record.

    identity topic (partition by pseudonym)   events, watchlist changes,  from input partitions
                                              holdings snapshots
    outlet topic   (partition by outlet_id)   events                      from input partitions
    agent topic    (partition by agent_id)    signals of identity alerts  from identity partitions
    number topic   (partition by number token) openings, implicated      from input partitions
                                              numbers' reports
    place topic    (partition by outlet or    traced implicated cards     from number partitions
                    staff member)

An envelope (`duanka.envelope/1`) holds every item one sender has for one
partition since it last sent there, and the sender's marks: for each origin
it reads (an input partition, an identity partition), the key up to which it
has sent everything (and, for an input partition, the offset it reads next).
The stage that receives it
merges the items of every origin back into event-time order with those marks
(stream/ordering.py), so progress travels with the data instead of in records
of its own. Items carry the wall-clock time the worker read their input
event, for the alert latency metric; that stays out of what the rules see.

No envelope carries a raw id number: events are pseudonymous by then.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from rules.errors import InvalidRecord
from rules.event import PseudonymousEvent, pseudonymous_from_row, pseudonymous_row
from rules.holdings import Snapshot, snapshot_from_row, snapshot_row
from rules.implicated import Opened, Report, Trace
from rules.state import AgentSignal, WatchEntry, signal_from_row, signal_row
from rules.state import watch_from_row as _watch_from_row
from rules.state import watch_row as _watch_row
from stream.ordering import FIRST, Key, Mark

ENVELOPE_SCHEMA = "duanka.envelope/1"
KINDS = ("identity", "outlet", "agent", "case", "number", "place")


def event_order(event: PseudonymousEvent) -> Key:
    """Where an event goes in event-time order: its time, then (source, event_id)."""
    return (event.epoch(), event.source, event.event_id)


@dataclass(slots=True)
class EventItem:
    """A pseudonymous event from an input partition, and when the worker read it."""

    origin: str
    event: PseudonymousEvent
    arrived: float | None  # wall-clock seconds (time.time()); None if not known
    key: Key = field(init=False, compare=False)
    # the event's JSON, made once though the item may go to two topics
    row: orjson.Fragment | None = field(default=None, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        self.key = event_order(self.event)

    seq = 0


@dataclass(slots=True)
class WatchItem:
    """A watchlist entry set (or, with None, removed) for one identity.

    It sorts before every event: the watchlist applies from the moment it is read.
    """

    origin: str
    subject_key: str
    entry: WatchEntry | None

    key = FIRST
    seq = 0


@dataclass(slots=True)
class HoldingItem:
    """An inventory snapshot for one identity at one source (None counts: its removal).

    Like a watchlist change it sorts before every event: a snapshot says what
    was held as of its own time, whatever came before it in the stream.
    """

    origin: str
    subject_key: str
    snapshot: Snapshot

    key = FIRST
    seq = 0


@dataclass(slots=True)
class SignalItem:
    """An identity alert on an event an agent handled, from its identity partition."""

    origin: str
    key: Key  # the ordering key of the event behind the alert
    seq: int  # its place among that event's alerts
    signal: AgentSignal
    arrived: float | None = None


@dataclass(slots=True)
class PunishItem:
    """A punishment from the police's verdict on an alert (None: lifted), for one identity.

    Like a watchlist change it sorts before every event and applies from the
    moment it is read.
    """

    origin: str
    subject_key: str
    alert_id: str
    entry: WatchEntry | None

    key = FIRST
    seq = 0


@dataclass(slots=True)
class CaseItem:
    """An alert, as the contract writes it, and what its events name (rules/cases.py)."""

    origin: str
    alert: dict[str, Any]
    links: list[list[str]]

    key = FIRST
    seq = 0


@dataclass(slots=True)
class VerdictItem:
    """A police verdict that passed validation, without its free-text note.

    `at` is where it was read ("topic/partition/offset"), for the dead letter
    if its alert never comes.
    """

    origin: str
    at: str
    disposition: dict[str, Any]

    key = FIRST
    seq = 0


@dataclass(slots=True)
class OpenedItem:
    """The opening that created a number (its token), for the reports of implicated numbers."""

    origin: str
    kind: str  # sim or account
    number_key: str
    opened: Opened
    key: Key = field(init=False, compare=False)

    def __post_init__(self) -> None:
        self.key = self.opened.order

    seq = 0


@dataclass(slots=True)
class ReportItem:
    """A number the police found in a fraud case, by its token; `at` is where it was read."""

    origin: str
    report: Report
    at: str  # "topic/partition/offset" of the police's record, for a dead letter
    key: Key = field(init=False, compare=False)

    def __post_init__(self) -> None:
        self.key = self.report.order

    seq = 0


@dataclass(slots=True)
class TraceItem:
    """A traced implicated card, for its outlet's or staff member's count (rules/implicated.py)."""

    origin: str  # the number partition that traced it
    place: str  # outlet or agent
    place_key: str
    trace: Trace
    seq: int = 0  # 0 for the outlet's copy, 1 for the staff member's
    key: Key = field(init=False, compare=False)

    def __post_init__(self) -> None:
        self.key = self.trace.report.order


Item = (
    EventItem
    | WatchItem
    | HoldingItem
    | SignalItem
    | PunishItem
    | CaseItem
    | VerdictItem
    | OpenedItem
    | ReportItem
    | TraceItem
)


@dataclass(slots=True)
class Envelope:
    kind: str
    items: list[Item] = field(default_factory=list)
    marks: dict[str, Mark] = field(default_factory=dict)


def encode_envelope(envelope: Envelope) -> bytes:
    origins: dict[str, int] = {}

    def index(origin: str) -> int:
        return origins.setdefault(origin, len(origins))

    marks = [[index(o), *_key_row(m.key), m.position] for o, m in envelope.marks.items()]
    items = [_item_row(item, index(item.origin)) for item in envelope.items]
    return orjson.dumps(
        {
            "schema": ENVELOPE_SCHEMA,
            "kind": envelope.kind,
            "origins": list(origins),
            "marks": marks,
            "items": items,
        }
    )


def _key_row(key: Key) -> list[Any]:
    # JSON has no -infinity: the first key of all is written with a null time
    return [None if key[0] == FIRST[0] else key[0], key[1], key[2]]


def _item_row(item: Item, origin: int) -> list[Any]:
    if isinstance(item, EventItem):
        if item.row is None:
            item.row = orjson.Fragment(orjson.dumps(pseudonymous_row(item.event)))
        return ["e", origin, item.arrived, item.row]
    if isinstance(item, WatchItem):
        return ["w", origin, item.subject_key, _watch_row(item.entry)]
    if isinstance(item, HoldingItem):
        return ["h", origin, item.subject_key, snapshot_row(item.snapshot)]
    if isinstance(item, PunishItem):
        return ["p", origin, item.subject_key, item.alert_id, _watch_row(item.entry)]
    if isinstance(item, CaseItem):
        return ["c", origin, item.alert, item.links]
    if isinstance(item, VerdictItem):
        return ["v", origin, item.at, item.disposition]
    if isinstance(item, OpenedItem):
        return ["o", origin, item.kind, item.number_key, item.opened.to_list()]
    if isinstance(item, ReportItem):
        return ["r", origin, item.report.to_list(), item.at]
    if isinstance(item, TraceItem):
        trace = item.trace
        rows = [trace.report.to_list(), trace.opening.to_list(), trace.first]
        return ["t", origin, item.place, item.place_key, item.seq, *rows]
    return ["s", origin, *_key_row(item.key), item.seq, signal_row(item.signal), item.arrived]


def decode_envelope(raw: bytes | None, kind: str) -> Envelope:
    """The envelope in `raw`; InvalidRecord if it is not a `kind` envelope of this version.

    Records an older worker wrote to its internal topics (one event or tick
    per record, no schema) are refused with a reason rather than misread.
    """
    if not raw or raw[:1] != b"{":
        raise InvalidRecord("record", f"not a {ENVELOPE_SCHEMA} record (an older internal format?)")
    try:
        obj = orjson.loads(raw)
        schema = obj.get("schema")
        if schema != ENVELOPE_SCHEMA:
            raise InvalidRecord("schema", f"{schema!r} is not {ENVELOPE_SCHEMA}")
        if obj.get("kind") != kind:
            raise InvalidRecord("kind", f"a {obj.get('kind')!r} envelope on the {kind} topic")
        origins = obj["origins"]
        if not all(type(origin) is str for origin in origins):
            raise ValueError("origins")
        marks = {origins[row[0]]: Mark(_key(row[1:4]), _int(row[4])) for row in obj["marks"]}
        items = [_item(row, origins) for row in obj["items"]]
    except InvalidRecord:
        raise
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        raise InvalidRecord("record", f"a malformed {ENVELOPE_SCHEMA} record") from None
    return Envelope(kind, items, marks)


def _item(row: list[Any], origins: list[str]) -> Item:
    tag, origin = row[0], origins[row[1]]
    if tag == "e" and len(row) == 4:
        return EventItem(origin, pseudonymous_from_row(row[3]), _arrived(row[2]))
    if tag == "w" and len(row) == 4 and type(row[2]) is str:
        return WatchItem(origin, row[2], _watch_from_row(row[3]))
    if tag == "h" and len(row) == 4 and type(row[2]) is str:
        return HoldingItem(origin, row[2], snapshot_from_row(row[3]))
    if tag == "p" and len(row) == 5 and type(row[2]) is str and type(row[3]) is str:
        return PunishItem(origin, row[2], row[3], _watch_from_row(row[4]))
    if tag == "c" and len(row) == 4 and type(row[2]) is dict and type(row[3]) is list:
        return CaseItem(origin, row[2], row[3])
    if tag == "v" and len(row) == 4 and type(row[2]) is str and type(row[3]) is dict:
        return VerdictItem(origin, row[2], row[3])
    if tag == "o" and len(row) == 5 and type(row[2]) is str and type(row[3]) is str:
        return OpenedItem(origin, row[2], row[3], Opened.from_list(row[4]))
    if tag == "r" and len(row) == 4 and type(row[3]) is str:
        return ReportItem(origin, Report.from_list(row[2]), row[3])
    if tag == "t" and len(row) == 8 and type(row[2]) is str and type(row[4]) is int:
        trace = Trace(Report.from_list(row[5]), Opened.from_list(row[6]), bool(row[7]))
        return TraceItem(origin, row[2], row[3], trace, row[4])
    if tag == "s" and len(row) == 8 and type(row[5]) is int:
        return SignalItem(origin, _key(row[2:5]), row[5], signal_from_row(row[6]), _arrived(row[7]))
    raise ValueError("item")


def _key(row: list[Any]) -> Key:
    ts, source, event_id = row
    if type(source) is not str or type(event_id) is not str:
        raise ValueError("key")
    if ts is None:
        return (FIRST[0], source, event_id)
    if type(ts) not in (int, float):
        raise ValueError("key")
    return (float(ts), source, event_id)


def _int(value: object) -> int:
    if type(value) is not int:
        raise ValueError("not an integer")
    return value


def _arrived(raw: object) -> float | None:
    if raw is None:
        return None
    if type(raw) not in (int, float):
        raise ValueError("arrival time is not a number")
    return float(raw)  # type: ignore[arg-type]

"""The console's view of the implicated cards (涉案卡): the rows of the traces topic, counted.

The number stage writes a row (`rules.implicated.Trace.row()`) to the traces
topic for every implicated number it traces to the opening that created it.
The console reads the topic from the beginning as it reads the cases
(stream/console.py `read_topic`, no group) and counts the rows with the
campaign's `Figures` (rules/figures.py): each card once, however often the
police report it or Kafka delivers it. Beside the figures it keeps, per
outlet and per staff member, the cards opened there, which is where a
一案双查 review (谁开卡谁负责) starts, and who opened them: pseudonyms, which
the console shows only as a count or a short prefix.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from statistics import median
from sys import intern
from typing import Any

from rules.errors import InvalidRecord
from rules.figures import Figures, parse_trace
from rules.regions import PROVINCES

RANKED = 20  # outlets and staff members ranked, unless asked for another number
MOST_RANKED = 200
CARDS_LISTED = 50  # a place's cards listed, latest opening first
OPENERS_LISTED = 5  # a place's openers with the most cards, by pseudonym prefix
DAYS_CHARTED = 30  # opening days in the daily figure, up to the latest one
SHOWN_CHARS = 8  # of a pseudonym ("k:" and six hex digits), as the case graph shows one
PLACES = {"outlet": "outlet_id", "agent": "agent_id"}


@dataclass(frozen=True, slots=True)
class Card:
    """An implicated card as an outlet or a staff member answers for it: no number, no person."""

    opened_day: str
    days: float  # from opening to the first report read
    case_ref: str
    kind: str
    source: str
    channel: str
    outlet_id: str
    agent_id: str
    subject_key: str  # who opened it: a pseudonym, shown only by its prefix

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> Card:
        # the same few days, sources, channels and places recur: one copy of each
        return cls(
            intern(str(row["opened_day"])),
            float(row["days_to_report"]),
            str(row.get("case_ref") or ""),
            intern(str(row["kind"])),
            intern(str(row["source"])),
            intern(str(row.get("channel") or "")),
            intern(str(row.get("outlet_id") or "")),
            intern(str(row.get("agent_id") or "")),
            str(row.get("subject_key") or ""),
        )

    def view(self) -> dict[str, Any]:
        return {
            "opened_day": self.opened_day,
            "days_to_report": round(self.days, 1),
            "case_ref": self.case_ref,
            "kind": self.kind,
            "source": self.source,
            "channel": self.channel,
            "outlet_id": self.outlet_id,
            "agent_id": self.agent_id,
            "opener": shown(self.subject_key),
        }


def shown(subject_key: str) -> str:
    """What the console shows of a pseudonym: its first characters."""
    return subject_key[:SHOWN_CHARS] + "…" if subject_key else ""


@dataclass(frozen=True, slots=True)
class TraceQuery:
    """What the page asks for: how many outlets and staff members to rank."""

    top: int = RANKED

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> TraceQuery:
        text = params.get("top", "")
        if not text:
            return cls()
        if not text.isdigit() or not 1 <= int(text) <= MOST_RANKED:
            raise ValueError(f"top must be a whole number from 1 to {MOST_RANKED}")
        return cls(int(text))


class TraceBook:
    """Every implicated card read, counted by `Figures`, and each outlet's and staff member's."""

    def __init__(self, topic: str = "") -> None:
        self.topic = topic
        self.status = "starting"
        self.figures = Figures()
        self.places: dict[str, dict[str, list[Card]]] = {kind: {} for kind in PLACES}
        self.case_refs: set[str] = set()
        self.rows = 0  # trace rows read
        self.repeats = 0  # rows of a card counted already: a later report, or a redelivery
        self.skipped = 0  # records that are not trace rows

    def receive(self, values: Iterable[bytes | None]) -> list[InvalidRecord]:
        """Count a batch of records; the errors of those that are not trace rows."""
        errors: list[InvalidRecord] = []
        for value in values:
            try:
                row = parse_trace(value or b"")
            except InvalidRecord as error:
                self.skipped += 1
                errors.append(error)
                continue
            self.add(row)
        return errors

    def add(self, row: Mapping[str, Any]) -> bool:
        """Count a trace row; False if its card was counted already."""
        self.rows += 1
        if row.get("case_ref"):
            self.case_refs.add(str(row["case_ref"]))
        if not self.figures.add(row):
            self.repeats += 1
            return False
        card = Card.of(row)
        for kind, name in PLACES.items():
            key = getattr(card, name)
            if key:
                self.places[kind].setdefault(key, []).append(card)
        return True

    def view(self, query: TraceQuery) -> dict[str, Any]:
        """The page's figures: headline, by day and dimension, days to report, places ranked."""
        figures = self.figures
        median_days = figures.median_days()
        return {
            "cards": figures.cards,
            "kinds": dict(figures.kinds),
            "police_cases": len(self.case_refs),
            "outlets": len(self.places["outlet"]),
            "agents": len(self.places["agent"]),
            "by_day": self.by_day(),
            "by": {name: by(figures, name) for name in ("source", "province", "channel")},
            "days_to_report": {
                "buckets": [{"days": label, "cards": n} for label, n in figures.day_buckets()],
                "median": None if median_days is None else round(median_days, 1),
            },
            "top_outlets": self.ranked("outlet", query.top),
            "top_agents": self.ranked("agent", query.top),
            "rows": self.rows,
            "repeats": self.repeats,
            "skipped": self.skipped,
            "topic": self.topic,
            "status": self.status,
        }

    def by_day(self, days: int = DAYS_CHARTED) -> list[dict[str, Any]]:
        """Cards by opening day, for the `days` days up to the latest opening day read."""
        counts = self.figures.by_day
        if not counts:
            return []
        last = date.fromisoformat(max(counts))
        span = [(last - timedelta(days=n)).isoformat() for n in reversed(range(days))]
        return [{"day": day, "cards": counts.get(day, 0)} for day in span]

    def ranked(self, kind: str, top: int) -> list[dict[str, Any]]:
        """The outlets (or staff members) with the most implicated cards, most first."""
        ranked = self.figures.top(PLACES[kind], top)
        return [place(kind, key, self.places[kind].get(key, [])) for key, _ in ranked]


def by(figures: Figures, name: str) -> list[dict[str, Any]]:
    """A dimension's values with their cards, most first; a province with its names."""
    rows = []
    for value, n in figures.top(name, len(figures.by[name])):
        row: dict[str, Any] = {"value": value, "cards": n}
        if name == "province":
            province = PROVINCES.get(value)
            row["name_zh"] = province.name_zh if province else ""
            row["name_en"] = province.name_en if province else ""
        rows.append(row)
    return rows


def place(kind: str, key: str, cards: list[Card]) -> dict[str, Any]:
    """An outlet or a staff member as the ranking shows it: its cards, when, who opened them."""
    days = sorted(c.opened_day for c in cards)
    openers = Counter(c.subject_key for c in cards if c.subject_key)
    other = "agent_id" if kind == "outlet" else "outlet_id"
    latest = sorted(cards, key=lambda c: (c.opened_day, c.case_ref), reverse=True)
    return {
        "kind": kind,
        "id": key,
        "cards": len(cards),
        "first_day": days[0] if days else None,
        "last_day": days[-1] if days else None,
        "median_days": round(median(c.days for c in cards), 1) if cards else None,
        "people": len(openers),
        "openers": [
            {"opener": shown(k), "cards": n}
            for k, n in sorted(openers.items(), key=lambda item: (-item[1], item[0]))[
                :OPENERS_LISTED
            ]
        ],
        "channels": counted(c.channel for c in cards),
        "sources": counted(c.source for c in cards),
        # where a staff member opened them, or which staff members opened an outlet's
        ("agents" if kind == "outlet" else "outlets"): counted(getattr(c, other) for c in cards),
        "card_list": [c.view() for c in latest[:CARDS_LISTED]],
    }


def counted(values: Iterable[str]) -> dict[str, int]:
    """Each value with how often it occurs, most first (ties by value); empty ones left out."""
    counts = Counter(v for v in values if v)
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))

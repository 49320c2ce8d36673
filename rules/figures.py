"""The campaign's own figures on implicated cards, counted from traces (CASES.md).

A trace row (`rules.implicated.Trace.row()`) is one number found in a fraud
case and the opening it came from. `Figures` counts them the way the 断卡
campaign reports itself: implicated cards by the day they were opened, by
carrier or bank (`source`), province, outlet, staff member (`agent_id`) and
channel, and the days from opening to report. Replay's traces file, the
worker's trace topic and the report all go through this one count;
`parse_trace` reads a line of a traces file, and says what is wrong with one
that is not a trace row.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from statistics import median
from typing import Any

import orjson

from rules.errors import InvalidRecord

# the days-to-report buckets of the figures (and of the worker's histogram)
DAY_BUCKETS = (1.0, 3.0, 7.0, 14.0, 30.0, 60.0, 90.0, 180.0, 365.0, 730.0)
DIMENSIONS = ("source", "province", "outlet_id", "agent_id", "channel")
KINDS = ("sim", "account")


class InvalidTrace(InvalidRecord):
    """A line of a traces file that is not a trace row: which field, and why."""


def parse_trace(raw: bytes) -> dict[str, Any]:
    """A trace row (`Trace.row()`) from a JSON line, with what the figures count checked."""
    try:
        row = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidTrace("record", "not valid JSON") from None
    if type(row) is not dict:
        raise InvalidTrace("record", "not a JSON object")
    if "schema" in row:  # a contract record (an implicated number, an alert): traces have none
        raise InvalidTrace("record", f"a {str(row['schema'])[:40]} record, not a trace row")
    if row.get("kind") not in KINDS:
        raise InvalidTrace("kind", f"must be one of: {', '.join(KINDS)}")
    for name in ("source", "event_id", "opened_day"):
        if not isinstance(row.get(name), str) or not row[name]:
            raise InvalidTrace(name, "missing, or not a string")
    try:
        date.fromisoformat(row["opened_day"])
    except ValueError:
        raise InvalidTrace("opened_day", "not a date (YYYY-MM-DD)") from None
    days = row.get("days_to_report")
    if isinstance(days, bool) or not isinstance(days, (int, float)) or not 0 <= days < math.inf:
        raise InvalidTrace("days_to_report", "missing, or not a number of days from 0")
    for name in DIMENSIONS[1:]:
        if not isinstance(row.get(name, ""), str):
            raise InvalidTrace(name, "not a string")
    return row


@dataclass
class Figures:
    """Implicated cards counted by opening day and by each dimension, once per card."""

    cards: int = 0
    by_day: Counter[str] = field(default_factory=Counter)  # opening day (YYYY-MM-DD) -> cards
    by: dict[str, Counter[str]] = field(
        default_factory=lambda: {name: Counter() for name in DIMENSIONS}
    )
    days: list[float] = field(default_factory=list)  # opening to report, per card
    seen: set[str] = field(default_factory=set)  # cards counted: (source, event_id) of the opening
    kinds: Counter[str] = field(default_factory=Counter)  # sim, account -> cards

    def add(self, row: Mapping[str, Any]) -> bool:
        """Count a trace row; False if its card (its opening) was counted already."""
        card = f"{row['source']}\x1f{row['event_id']}"
        if card in self.seen:
            return False
        self.seen.add(card)
        self.cards += 1
        if row.get("kind"):
            self.kinds[str(row["kind"])] += 1
        self.by_day[str(row["opened_day"])] += 1
        for name in DIMENSIONS:
            value = str(row.get(name) or "")
            if value:
                self.by[name][value] += 1
        self.days.append(float(row["days_to_report"]))
        return True

    @classmethod
    def of(cls, rows: Iterable[Mapping[str, Any]]) -> Figures:
        figures = cls()
        for row in rows:
            figures.add(row)
        return figures

    def top(self, dimension: str, n: int = 10) -> list[tuple[str, int]]:
        """The `n` values of a dimension with the most implicated cards (ties by value)."""
        counts = self.by[dimension]
        return sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:n]

    def day_buckets(self) -> list[tuple[str, int]]:
        """Cards by days from opening to report: ("≤ 1", n), ..., ("> 730", n)."""
        counts = [0] * (len(DAY_BUCKETS) + 1)
        for days in self.days:
            index = next((i for i, edge in enumerate(DAY_BUCKETS) if days <= edge), None)
            counts[len(DAY_BUCKETS) if index is None else index] += 1
        labels = [f"≤ {edge:g}" for edge in DAY_BUCKETS] + [f"> {DAY_BUCKETS[-1]:g}"]
        return list(zip(labels, counts, strict=True))

    def median_days(self) -> float | None:
        return median(self.days) if self.days else None

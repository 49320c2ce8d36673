"""The campaign's own figures on implicated cards, counted from traces (CASES.md).

A trace row (`rules.implicated.Trace.row()`) is one number found in a fraud
case and the opening it came from. `Figures` counts them the way the 断卡
campaign reports itself: implicated cards by the day they were opened, by
carrier or bank (`source`), province, outlet, staff member (`agent_id`) and
channel, and the days from opening to report. Replay's traces file, the
worker's trace topic and the report all go through this one count.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from statistics import median
from typing import Any

# the days-to-report buckets of the figures (and of the worker's histogram)
DAY_BUCKETS = (1.0, 3.0, 7.0, 14.0, 30.0, 60.0, 90.0, 180.0, 365.0, 730.0)
DIMENSIONS = ("source", "province", "outlet_id", "agent_id", "channel")


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

    def add(self, row: Mapping[str, Any]) -> bool:
        """Count a trace row; False if its card (its opening) was counted already."""
        card = f"{row['source']}\x1f{row['event_id']}"
        if card in self.seen:
            return False
        self.seen.add(card)
        self.cards += 1
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

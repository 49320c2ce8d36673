"""The campaign's figures: a traces file's lines read back, and the cards counted by kind."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
import pytest

from rules.figures import Figures, InvalidTrace, parse_trace
from rules.implicated import Opened, Report, Trace

CST = timezone(timedelta(hours=8))
OPENED = datetime(2026, 1, 5, 10, 30, tzinfo=CST)


def trace(n: int = 1, kind: str = "sim", days: float = 40.0, first: bool = True) -> Trace:
    """A trace as the engine makes one: a report `days` after its opening."""
    reported = OPENED + timedelta(days=days)
    opened = Opened(
        OPENED.timestamp(),
        OPENED.isoformat(),
        "CMCC-GS" if kind == "sim" else "ICBC-GS",
        f"open-{n}",
        "sim.activate" if kind == "sim" else "bank.open",
        f"k:person-{n}",
        "6201**********0017",
        "62",
        "GS-LZ-0012",
        "A-7",
        "counter",
        "620102",
    )
    report = Report(
        kind, f"t:number-{n}", f"2026-GS-{n:04d}", reported.isoformat(), reported.timestamp()
    )
    return Trace(report, opened, first)


def test_a_trace_row_is_read_back_as_written() -> None:
    row = trace().row()
    assert parse_trace(orjson.dumps(row)) == row
    assert (row["opened_day"], row["days_to_report"], row["province"]) == ("2026-01-05", 40.0, "62")


def mangled(**changes: Any) -> bytes:
    row = trace().row()
    for name, value in changes.items():
        if value is ...:
            del row[name]
        else:
            row[name] = value
    return orjson.dumps(row)


@pytest.mark.parametrize(
    ("raw", "field", "reason"),
    [
        (b"not json", "record", "not valid JSON"),
        (b"[1, 2]", "record", "not a JSON object"),
        (
            b'{"schema": "duanka.implicated/1", "kind": "sim", "number": "13912345678"}',
            "record",
            "a duanka.implicated/1 record, not a trace row",
        ),
        (mangled(kind="phone"), "kind", "must be one of: sim, account"),
        (mangled(event_id=...), "event_id", "missing"),
        (mangled(source=""), "source", "missing"),
        (mangled(opened_day="5 January"), "opened_day", "not a date"),
        (mangled(days_to_report="40"), "days_to_report", "not a number"),
        (mangled(days_to_report=-1), "days_to_report", "not a number of days from 0"),
        (mangled(days_to_report=True), "days_to_report", "not a number"),
        (mangled(outlet_id=12), "outlet_id", "not a string"),
    ],
)
def test_a_line_that_is_not_a_trace_row_names_its_field(
    raw: bytes, field: str, reason: str
) -> None:
    with pytest.raises(InvalidTrace) as caught:
        parse_trace(raw)
    assert caught.value.field == field
    assert reason in caught.value.reason


def test_a_row_without_the_places_of_an_online_opening_is_read() -> None:
    raw = mangled(agent_id=..., outlet_id="")
    figures = Figures.of([parse_trace(raw)])
    assert figures.cards == 1 and figures.by["agent_id"] == {} and figures.by["outlet_id"] == {}


def test_cards_are_counted_by_kind_once_each() -> None:
    rows = [trace(1).row(), trace(2, "account").row(), trace(1, first=False).row()]
    figures = Figures.of(rows)
    assert figures.cards == 2
    assert figures.kinds == {"sim": 1, "account": 1}
    assert figures.by["source"] == {"CMCC-GS": 1, "ICBC-GS": 1}

"""Inventory snapshots (`duanka.holding/1`): what an identity held at one source, as of a time.

Holdings do not start at zero: each carrier and bank loads what every
identity holds with it (../contract/CHECK.md). A snapshot names the person by
id number; the engine keeps the counts under the pseudonym. A later snapshot
for the same (source, identity) replaces the earlier one; events at that
source before its `as_of` are already counted in it.

The carrier (or bank) of a source is the part before its first `-`:
`CMCC-GS` and `CMCC-SC` are both `CMCC`. Limits per carrier or per bank sum
over its sources.

A snapshot file is JSON lines (one record a line) or CSV with the columns
`source,id_type,id_number,as_of,kind,class,count`: one count a row, `kind`
`sim` (class `personal` or `iot`) or `account` (class `I`, `II`, `III` or
`unknown`); the rows of one (source, id_type, id_number, as_of) make one
snapshot, and a class given twice is an error.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Generator, Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from rules.errors import InvalidRecord
from rules.event import ID_TYPES, parse_time
from rules.idnumber import id_number_problem, normalise_id_number
from rules.lines import json_lines

HOLDING_SCHEMA = "duanka.holding/1"
SIM_KINDS = ("personal", "iot")
ACCOUNT_CLASSES = ("I", "II", "III", "unknown")
KEY_SEPARATOR = "\x1f"  # between source and id number in the topic's key
MAX_HOLDING_BYTES = 64 * 1024
MAX_COUNT = 1_000_000  # more cards or accounts than this at one source is a typo
CSV_COLUMNS = ("source", "id_type", "id_number", "as_of", "kind", "class", "count")


class InvalidHolding(InvalidRecord):
    """A snapshot record the engine cannot use."""


def carrier_of(source: str) -> str:
    """The carrier or bank of a source: the part before its first `-` (all of it if none)."""
    return source.split("-", 1)[0]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What one identity held at one source at `as_of` (no personal data)."""

    source: str
    as_of: datetime
    sims: tuple[tuple[str, int], ...]  # (sim_kind, count), in SIM_KINDS order, zeros left out
    accounts: tuple[tuple[str, int], ...]  # (account_class, count), likewise

    def sim_count(self, kind: str) -> int:
        return dict(self.sims).get(kind, 0)

    def account_count(self, account_class: str) -> int:
        return dict(self.accounts).get(account_class, 0)


def snapshot_row(snapshot: Snapshot) -> list[Any]:
    """A snapshot as a JSON array (no personal data): how the worker's envelopes carry it."""
    return [
        snapshot.source,
        snapshot.as_of.isoformat(),
        [list(pair) for pair in snapshot.sims],
        [list(pair) for pair in snapshot.accounts],
    ]


def snapshot_from_row(row: Any) -> Snapshot:
    """Read back `snapshot_row`; ValueError or TypeError on anything else."""
    source, as_of, sims, accounts = row
    if type(source) is not str or type(as_of) is not str:
        raise ValueError("not a snapshot row")
    when = datetime.fromisoformat(as_of)
    if when.tzinfo is None:
        raise ValueError("naive time")
    return Snapshot(source, when, _pairs(sims, SIM_KINDS), _pairs(accounts, ACCOUNT_CLASSES))


def _pairs(rows: Any, kinds: tuple[str, ...]) -> tuple[tuple[str, int], ...]:
    pairs = tuple((kind, count) for kind, count in rows)
    if not all(kind in kinds and type(count) is int and count >= 0 for kind, count in pairs):
        raise ValueError("not a count")
    return pairs


@dataclass(frozen=True, slots=True)
class HoldingRecord:
    """A snapshot record as read: the person, and what they held."""

    id_type: str
    id_number: str
    snapshot: Snapshot

    def key(self) -> bytes:
        """The record's key on the compacted topic: source, a unit separator, the id number."""
        return f"{self.snapshot.source}{KEY_SEPARATOR}{self.id_number}".encode()

    def to_json(self) -> bytes:
        s = self.snapshot
        return orjson.dumps(
            {
                "schema": HOLDING_SCHEMA,
                "source": s.source,
                "id_type": self.id_type,
                "id_number": self.id_number,
                "as_of": s.as_of.isoformat(),
                "sims": dict(s.sims),
                "accounts": dict(s.accounts),
            }
        )


def parse_holding(raw: bytes) -> HoldingRecord:
    """A `duanka.holding/1` record from JSON bytes; raises InvalidHolding with the field."""
    if len(raw) > MAX_HOLDING_BYTES:
        raise InvalidHolding("record", f"larger than 64 KiB ({len(raw)} bytes)")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidHolding("record", "not valid JSON") from None
    if type(obj) is not dict:
        raise InvalidHolding("record", "not a JSON object")
    if obj.get("schema") != HOLDING_SCHEMA:
        raise InvalidHolding("schema", f"must be {HOLDING_SCHEMA}")
    return holding_from_fields(obj)


def holding_from_fields(obj: dict[str, Any]) -> HoldingRecord:
    """A record from its fields (a parsed JSON object, or the rows of a CSV file grouped)."""
    source = _text(obj, "source")
    id_type = _text(obj, "id_type")
    if id_type not in ID_TYPES:
        raise InvalidHolding("id_type", f"unknown value {id_type[:40]!r}")
    id_number = normalise_id_number(id_type, _text(obj, "id_number"))
    problem = id_number_problem(id_type, id_number)
    if problem is not None:
        raise InvalidHolding("id_number", problem)
    try:
        as_of = parse_time(_text(obj, "as_of"), "as_of")
    except InvalidRecord as error:
        raise InvalidHolding(error.field, error.reason) from None
    sims = _counts(obj, "sims", SIM_KINDS)
    accounts = _counts(obj, "accounts", ACCOUNT_CLASSES)
    return HoldingRecord(id_type, id_number, Snapshot(source, as_of, sims, accounts))


def _text(obj: dict[str, Any], name: str) -> str:
    value = obj.get(name)
    if value is None or value == "":
        raise InvalidHolding(name, "missing")
    if type(value) is not str:
        raise InvalidHolding(name, "must be a string")
    return value


def _counts(
    obj: dict[str, Any], name: str, allowed: tuple[str, ...]
) -> tuple[tuple[str, int], ...]:
    value = obj.get(name)
    if value is None:
        return ()
    if type(value) is not dict:
        raise InvalidHolding(name, "must be an object of counts")
    for kind, count in value.items():
        if kind not in allowed:
            expected = ", ".join(allowed)
            raise InvalidHolding(
                f"{name}.{kind}"[:80], f"unknown kind (expected one of: {expected})"
            )
        if type(count) is not int or not 0 <= count <= MAX_COUNT:
            raise InvalidHolding(f"{name}.{kind}", f"must be a whole number from 0 to {MAX_COUNT}")
    return tuple((kind, value[kind]) for kind in allowed if value.get(kind))


# ---------------------------------------------------------------- files


@dataclass(frozen=True, slots=True)
class HoldingLine:
    """One record of a snapshot file (a line, or a CSV group), or why it is not one."""

    number: int  # the line of the file (a CSV group: its first row)
    record: HoldingRecord | None
    error: InvalidHolding | None
    raw: bytes


def read_holdings(path: Path) -> Generator[HoldingLine, None, None]:
    """The records of a JSON-lines or CSV (by the .csv suffix) snapshot file."""
    if path.suffix.lower() == ".csv":
        yield from _read_csv(path)
        return
    # closed with this reader when its user stops early: a compiled generator does
    # not close the one it loops over, and the file would stay open until collected
    with closing(json_lines(path)) as lines:
        for number, raw in lines:
            yield _line(number, raw, lambda raw=raw: parse_holding(raw))


def _read_csv(path: Path) -> Iterator[HoldingLine]:
    reader = csv.reader(io.StringIO(path.read_text(encoding="utf-8-sig")))
    header = next(reader, None)
    if header is None:
        return
    if tuple(column.strip() for column in header) != CSV_COLUMNS:
        error = InvalidHolding("record", f"the header must be {','.join(CSV_COLUMNS)}")
        yield HoldingLine(1, None, error, ",".join(header).encode())
        return
    groups: dict[tuple[str, ...], _Group] = {}
    for row in reader:
        number = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(CSV_COLUMNS):
            error = InvalidHolding(
                "record", f"{len(row)} fields, the header has {len(CSV_COLUMNS)}"
            )
            yield HoldingLine(number, None, error, orjson.dumps(row))
            continue
        source, id_type, id_number, as_of, kind, klass, count = (cell.strip() for cell in row)
        group = groups.setdefault((source, id_type, id_number, as_of), _Group(number))
        group.rows.append(row)
        group.add(kind, klass, count)
    for (source, id_type, id_number, as_of), group in groups.items():
        raw = orjson.dumps(group.rows)
        if group.error is not None:
            yield HoldingLine(group.number, None, group.error, raw)
            continue
        fields = {
            "source": source,
            "id_type": id_type,
            "id_number": id_number,
            "as_of": as_of,
            "sims": group.counts["sim"],
            "accounts": group.counts["account"],
        }
        yield _line(group.number, raw, lambda fields=fields: holding_from_fields(fields))


class _Group:
    """The CSV rows of one snapshot, their counts gathered by kind and class."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.rows: list[list[str]] = []
        self.counts: dict[str, dict[str, int]] = {"sim": {}, "account": {}}
        self.error: InvalidHolding | None = None

    def add(self, kind: str, klass: str, count: str) -> None:
        if self.error is not None:
            return
        if kind not in self.counts:
            self.error = InvalidHolding(
                "kind", f"unknown value {kind[:40]!r} (expected sim, account)"
            )
        elif klass in self.counts[kind]:
            self.error = InvalidHolding("class", f"{kind} {klass[:40]!r} given twice")
        elif not (count.isascii() and count.isdigit()):
            self.error = InvalidHolding("count", "must be a whole number")
        else:
            self.counts[kind][klass] = int(count)


def _line(number: int, raw: bytes, parse: Any) -> HoldingLine:
    try:
        return HoldingLine(number, parse(), None, raw)
    except InvalidHolding as error:
        return HoldingLine(number, None, error, raw)

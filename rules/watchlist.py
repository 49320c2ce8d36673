"""The credit-punishment watchlist (失信惩戒名单): records, files, validation.

A `duanka.watch/1` record names a person by id number; the engine keeps only
the entry and the pseudonym. The identity type is not in the contract's
record: an optional `id_type` field may give it, otherwise a number that is a
valid resident id is taken as one and anything else as `other`.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import orjson

from rules.errors import InvalidRecord
from rules.idnumber import (
    OTHER_ID,
    RESIDENT_ID,
    id_number_problem,
    normalise_id_number,
)
from rules.lines import json_lines
from rules.state import WatchEntry

WATCH_SCHEMA = "duanka.watch/1"
SCOPES = frozenset({"telecom", "bank", "all"})
MAX_WATCH_BYTES = 64 * 1024
_EXTRA = "(fields beyond the header)"  # DictReader's key for them


class InvalidWatch(InvalidRecord):
    """A watchlist record the engine cannot use."""


@dataclass(frozen=True, slots=True)
class WatchRecord:
    """A watchlist record as read: the person and their entry."""

    id_type: str
    id_number: str
    entry: WatchEntry

    def to_json(self) -> bytes:
        e = self.entry
        return orjson.dumps(
            {
                "schema": WATCH_SCHEMA,
                "id_type": self.id_type,
                "id_number": self.id_number,
                "scope": e.scope,
                "since": e.since.isoformat(),
                "until": e.until.isoformat(),
                "list": e.list,
                "reason": e.reason,
            }
            | ({"basis": e.basis} if e.basis else {})
        )


def parse_watch(raw: bytes) -> WatchRecord:
    """A `duanka.watch/1` record from JSON bytes; raises InvalidWatch."""
    if len(raw) > MAX_WATCH_BYTES:
        raise InvalidWatch("record", f"larger than 64 KiB ({len(raw)} bytes)")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidWatch("record", "not valid JSON") from None
    if not isinstance(obj, dict):
        raise InvalidWatch("record", "not a JSON object")
    if obj.get("schema") != WATCH_SCHEMA:
        raise InvalidWatch("schema", f"must be {WATCH_SCHEMA}")
    return watch_from_fields(obj)


def watch_identity(id_number: str, id_type: object = None) -> tuple[str, str]:
    """The identity a watchlist record names: its id type (inferred if not given) and number."""
    if id_type is None or id_type == "":
        # 17 digits and a check character can only be meant as a resident id:
        # a typo in one must be reported, not read as some other document
        id_type = RESIDENT_ID if _looks_resident(id_number) else OTHER_ID
    elif id_type not in (RESIDENT_ID, OTHER_ID):
        raise InvalidWatch("id_type", f"unknown value {str(id_type)[:40]!r}")
    assert isinstance(id_type, str)
    problem = id_number_problem(id_type, id_number)
    if problem is not None:
        raise InvalidWatch("id_number", problem)
    return id_type, normalise_id_number(id_type, id_number)


def _looks_resident(id_number: str) -> bool:
    return len(id_number) == 18 and id_number[:17].isdigit() and id_number[17] in "0123456789Xx"


def watch_from_fields(obj: dict[str, Any]) -> WatchRecord:
    """A record from its fields (a parsed JSON object or a CSV row)."""
    id_type, id_number = watch_identity(_text(obj, "id_number"), obj.get("id_type"))
    scope = _text(obj, "scope")
    if scope not in SCOPES:
        raise InvalidWatch("scope", f"unknown value {scope[:40]!r} (expected all, bank, telecom)")
    since, until = _date(obj, "since"), _date(obj, "until")
    if not since < until:
        raise InvalidWatch("until", "must be after since")
    reason = obj.get("reason") or ""
    if not isinstance(reason, str):
        raise InvalidWatch("reason", "must be a string")
    basis = obj.get("basis") or ""
    if not isinstance(basis, str):
        raise InvalidWatch("basis", "must be a string")
    entry = WatchEntry(scope, since, until, _text(obj, "list"), reason, basis)
    return WatchRecord(id_type, id_number, entry)


LONG_PERIOD_YEARS = 5  # the 2024 regime lists people for 2 or 3 years, at most 5 in a row


def is_long(entry: WatchEntry) -> bool:
    """Whether the entry's period is longer than the regime's 5 years (accepted, but unusual)."""
    since = entry.since
    try:
        limit = since.replace(year=since.year + LONG_PERIOD_YEARS)
    except ValueError:  # 29 February, five years on, is 1 March
        limit = date(since.year + LONG_PERIOD_YEARS, 3, 1)
    return entry.until > limit


def _text(obj: dict[str, Any], name: str) -> str:
    value = obj.get(name)
    if value is None or value == "":
        raise InvalidWatch(name, "missing")
    if not isinstance(value, str):
        raise InvalidWatch(name, "must be a string")
    return value


def _date(obj: dict[str, Any], name: str) -> date:
    value = _text(obj, name)
    try:
        if len(value) != 10:
            raise ValueError
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidWatch(name, "not a date like 2025-03-01") from None


@dataclass(frozen=True, slots=True)
class WatchLine:
    """One line of a watchlist file: a record, or why it is not one."""

    number: int
    record: WatchRecord | None
    error: InvalidWatch | None
    raw: bytes


def read_watchlist(path: Path) -> Iterator[WatchLine]:
    """The records of a JSON-lines or CSV (by the .csv suffix) watchlist file."""
    if path.suffix.lower() == ".csv":
        yield from _read_csv(path)
        return
    for number, raw in json_lines(path):
        yield _line(number, raw, lambda raw=raw: parse_watch(raw))


def _read_csv(path: Path) -> Iterator[WatchLine]:
    text = path.read_text(encoding="utf-8-sig")
    reader = csv.DictReader(io.StringIO(text), restkey=_EXTRA)
    for row in reader:
        number = reader.line_num
        raw = orjson.dumps(row)
        fields = {k: v for k, v in row.items() if k != _EXTRA}
        if _EXTRA in row:
            error = InvalidWatch("record", f"{len(row[_EXTRA])} more field(s) than the header")
            yield WatchLine(number, None, error, raw)
            continue
        if fields.get("schema") not in (None, "", WATCH_SCHEMA):
            error = InvalidWatch("schema", f"must be {WATCH_SCHEMA}")
            yield WatchLine(number, None, error, raw)
            continue
        yield _line(number, raw, lambda fields=fields: watch_from_fields(fields))


def _line(number: int, raw: bytes, parse: Any) -> WatchLine:
    try:
        return WatchLine(number, parse(), None, raw)
    except InvalidWatch as error:
        return WatchLine(number, None, error, raw)

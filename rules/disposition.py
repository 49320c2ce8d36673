"""The police's verdict on an alert (`duanka.disposition/1`, CASES.md), and precision.

A disposition names an alert by its id and says what the police found:
`investigating`, `confirmed` or `dismissed`. A `confirmed` one may carry a
punishment, which the engine turns into a watchlist entry for the alert's
identity, keyed by the pseudonym it already has: the police never re-enter
an id number. The last disposition of an alert stands; one that is not
`confirmed` with `punish` lifts what an earlier one put on the list.

`Verdicts` counts, per rule, the alerts whose standing verdict is each
status: precision is confirmed / (confirmed + dismissed).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import orjson

from rules.errors import InvalidEvent, InvalidRecord
from rules.event import parse_time
from rules.state import WatchEntry

DISPOSITION_SCHEMA = "duanka.disposition/1"
STATUSES = ("investigating", "confirmed", "dismissed")
PUNISH_SCOPES = ("telecom", "bank", "all")
MAX_DISPOSITION_BYTES = 64 * 1024
MAX_TEXT = 1000  # note, basis, by: free text, bounded
DISPOSITION_LIST = "police disposition"  # the `list` of the watchlist entries it makes
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


class InvalidDisposition(InvalidRecord):
    """A disposition the engine cannot use: which field, and why."""


@dataclass(frozen=True, slots=True)
class Punishment:
    scope: str
    since: date
    until: date
    basis: str = ""

    def entry(self, alert_id: str) -> WatchEntry:
        """The watchlist entry the punishment puts an identity under."""
        return WatchEntry(
            self.scope, self.since, self.until, DISPOSITION_LIST, f"alert {alert_id}", self.basis
        )


@dataclass(frozen=True, slots=True)
class Disposition:
    alert_id: str
    status: str
    at: datetime
    by: str
    note: str = ""
    punish: Punishment | None = None

    def to_json(self) -> bytes:
        obj: dict[str, Any] = {
            "schema": DISPOSITION_SCHEMA,
            "alert_id": self.alert_id,
            "status": self.status,
            "at": self.at.isoformat(),
            "by": self.by,
        }
        if self.note:
            obj["note"] = self.note
        if self.punish is not None:
            p = self.punish
            obj["punish"] = {"scope": p.scope, "since": p.since.isoformat()}
            obj["punish"]["until"] = p.until.isoformat()
            if p.basis:
                obj["punish"]["basis"] = p.basis
        return orjson.dumps(obj)


def parse_disposition(raw: bytes | None) -> Disposition:
    """A `duanka.disposition/1` record from JSON bytes; raises InvalidDisposition."""
    if raw is None or not raw:
        raise InvalidDisposition("record", "no value (a null record)")
    if len(raw) > MAX_DISPOSITION_BYTES:
        raise InvalidDisposition("record", f"larger than 64 KiB ({len(raw)} bytes)")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidDisposition("record", "not valid JSON") from None
    if type(obj) is not dict:
        raise InvalidDisposition("record", "not a JSON object")
    if obj.get("schema") != DISPOSITION_SCHEMA:
        raise InvalidDisposition("schema", f"must be {DISPOSITION_SCHEMA}")
    return disposition_from_fields(obj)


def disposition_from_fields(obj: Mapping[str, Any]) -> Disposition:
    alert_id = _text(obj, "alert_id", 64)
    if not all(c in "0123456789abcdef" for c in alert_id):
        raise InvalidDisposition("alert_id", "must be the alert's hexadecimal id")
    status = _text(obj, "status", 20)
    if status not in STATUSES:
        raise InvalidDisposition(
            "status", f"unknown value {status!r} (expected one of: {', '.join(STATUSES)})"
        )
    try:
        # RFC 3339 from 1970 to 2099, as an event's time: a year-1 time with a
        # positive offset would parse, then overflow when taken to UTC
        at = parse_time(_text(obj, "at", 40), "at")
    except InvalidEvent as error:
        raise InvalidDisposition("at", error.reason) from None
    by = _text(obj, "by", MAX_TEXT)
    note = _optional(obj, "note")
    punish = None
    if obj.get("punish") is not None:
        if status != "confirmed":
            raise InvalidDisposition("punish", "only a confirmed disposition may punish")
        punish = _punishment(obj["punish"])
    return Disposition(alert_id, status, at, by, note, punish)


def _punishment(value: object) -> Punishment:
    if type(value) is not dict:
        raise InvalidDisposition("punish", "must be an object")
    scope = _text(value, "scope", 20, "punish.")
    if scope not in PUNISH_SCOPES:
        raise InvalidDisposition(
            "punish.scope", f"unknown value {scope!r} (expected one of: {', '.join(PUNISH_SCOPES)})"
        )
    since, until = _date(value, "since"), _date(value, "until")
    if not since < until:
        raise InvalidDisposition("punish.until", "must be after since")
    return Punishment(scope, since, until, _optional(value, "basis", "punish."))


def _text(obj: Mapping[str, Any], name: str, limit: int, prefix: str = "") -> str:
    value = obj.get(name)
    if value is None or value == "":
        raise InvalidDisposition(prefix + name, "missing")
    if not isinstance(value, str):
        raise InvalidDisposition(prefix + name, "must be a string")
    if len(value) > limit:
        raise InvalidDisposition(prefix + name, f"longer than {limit} characters")
    return value


def _optional(obj: Mapping[str, Any], name: str, prefix: str = "") -> str:
    if obj.get(name) in (None, ""):
        return ""
    return _text(obj, name, MAX_TEXT, prefix)


def _date(obj: Mapping[str, Any], name: str) -> date:
    value = _text(obj, name, 10, "punish.")
    try:
        # date.fromisoformat also takes week dates ("2026-W49-3"), which are ten characters too
        if not _DATE.fullmatch(value):
            raise ValueError
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidDisposition("punish." + name, "not a date like 2026-12-02") from None


class Verdicts:
    """The standing verdict of each alert, and the counts per rule and status it gives."""

    def __init__(self) -> None:
        self.standing: dict[str, tuple[str, str]] = {}  # alert_id -> (rule_id, status)
        self.counts: dict[str, dict[str, int]] = {}  # rule_id -> status -> alerts

    def set(self, alert_id: str, rule_id: str, status: str) -> None:
        old = self.standing.get(alert_id)
        if old is not None:
            self.counts[old[0]][old[1]] -= 1
        self.standing[alert_id] = (rule_id, status)
        by_status = self.counts.setdefault(rule_id, dict.fromkeys(STATUSES, 0))
        by_status[status] += 1

    def precision(self) -> dict[str, float | None]:
        return {rule: precision(c) for rule, c in sorted(self.counts.items())}


def precision(counts: Mapping[str, int]) -> float | None:
    """confirmed / (confirmed + dismissed); None before either."""
    decided = counts.get("confirmed", 0) + counts.get("dismissed", 0)
    return counts.get("confirmed", 0) / decided if decided else None


def standing(dispositions: Iterable[Disposition]) -> dict[str, Disposition]:
    """The last disposition of each alert, in the order given (a topic's or a file's)."""
    last: dict[str, Disposition] = {}
    for d in dispositions:
        last[d.alert_id] = d
    return last

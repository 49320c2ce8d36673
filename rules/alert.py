"""The alert record of the wire contract (`duanka.alert/1`), its codec and its id.

`encode_alert` writes exactly the contract's fields; `decode_alert` reads them
back (for the alert consumer) and raises `InvalidAlert` for anything else.
`detected_at` is carried to the millisecond, as on the wire, so an alert
decodes to an equal `Alert`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from rules.errors import InvalidAlert
from rules.event import PseudonymousEvent

ALERT_SCHEMA = "duanka.alert/1"
SEVERITIES = ("low", "medium", "high", "critical")
ACTIONS = ("review", "block", "report")
SUBJECT_KINDS = ("identity", "outlet", "agent")


@dataclass(frozen=True, slots=True)
class Subject:
    """Who the alert is about: a pseudonymous identity, an outlet or an agent."""

    kind: str
    key: str
    id_masked: str | None = None
    id_province: str | None = None


@dataclass(frozen=True, slots=True)
class Evidence:
    """One event an alert rests on, as the contract lists it."""

    event_id: str
    source: str
    event_type: str
    occurred_at: str

    @classmethod
    def from_event(cls, e: PseudonymousEvent) -> Evidence:
        return cls(e.event_id, e.source, e.event_type, e.occurred_at.isoformat())


@dataclass(frozen=True, slots=True)
class Alert:
    """A `duanka.alert/1` record.

    `facts` holds JSON values (str, int, finite float, bool, None, list, dict);
    a tuple in it comes back from `decode_alert` as a list.
    """

    alert_id: str
    rule_id: str
    severity: str
    action: str
    subject: Subject
    event_time: datetime
    detected_at: datetime
    source: str
    region_code: str
    summary_zh: str
    summary_en: str
    facts: Mapping[str, object]
    evidence: Sequence[Evidence]  # made a tuple

    def __post_init__(self) -> None:
        _check_choice("severity", self.severity, SEVERITIES)
        _check_choice("action", self.action, ACTIONS)
        _check_choice("subject.kind", self.subject.kind, SUBJECT_KINDS)
        _check_aware("event_time", self.event_time)
        _check_aware("detected_at", self.detected_at)
        # As on the wire: milliseconds, and a tuple even if given a list.
        millis = self.detected_at.microsecond // 1000 * 1000
        object.__setattr__(self, "detected_at", self.detected_at.replace(microsecond=millis))
        object.__setattr__(self, "evidence", tuple(self.evidence))


def _check_choice(field: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        expected = ", ".join(allowed)
        raise InvalidAlert(field, f"unknown value {value!r} (expected one of: {expected})")


def _check_aware(field: str, when: datetime) -> None:
    if when.utcoffset() is None:
        raise InvalidAlert(field, "must be timezone-aware")


def make_alert_id(
    rule_id: str, subject_key: str, source: str, event_id: str, shared_value: str | None = None
) -> str:
    """The deterministic alert id: 32 hex digits (128 bits) of SHA-256 over the parts.

    Each part is length-prefixed, so ("a", "bc") and ("ab", "c") differ, and
    no shared value differs from an empty one.
    """
    parts = [rule_id, subject_key, source, event_id]
    if shared_value is not None:
        parts.append(shared_value)
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode()
        digest.update(b"%d:%b\x1f" % (len(data), data))
    return digest.hexdigest()[:32]


# ---------------------------------------------------------------- encoding


def encode_alert(a: Alert) -> bytes:
    """The contract JSON of an alert."""
    return orjson.dumps(
        {
            "schema": ALERT_SCHEMA,
            "alert_id": a.alert_id,
            "rule_id": a.rule_id,
            "severity": a.severity,
            "action": a.action,
            "subject": _subject_object(a.subject),
            "event_time": a.event_time.isoformat(),
            "detected_at": a.detected_at.isoformat(timespec="milliseconds"),
            "source": a.source,
            "region_code": a.region_code,
            "summary_zh": a.summary_zh,
            "summary_en": a.summary_en,
            "facts": dict(a.facts),
            "evidence": [_evidence_object(e) for e in a.evidence],
        }
    )


def _subject_object(subject: Subject) -> dict[str, str]:
    obj = {"kind": subject.kind, "key": subject.key}
    if subject.id_masked is not None:
        obj["id_masked"] = subject.id_masked
    if subject.id_province is not None:
        obj["id_province"] = subject.id_province
    return obj


def _evidence_object(e: Evidence) -> dict[str, str]:
    return {
        "event_id": e.event_id,
        "source": e.source,
        "event_type": e.event_type,
        "occurred_at": e.occurred_at,
    }


# ---------------------------------------------------------------- decoding


def decode_alert(raw: bytes) -> Alert:
    """Read an alert record; raises InvalidAlert (field, reason) if it is not one."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidAlert("record", "not valid JSON") from None
    obj = _object(obj, "record")
    if obj.get("schema") != ALERT_SCHEMA:
        raise InvalidAlert("schema", f"must be {ALERT_SCHEMA!r}")
    return Alert(
        alert_id=_string(obj, "alert_id"),
        rule_id=_string(obj, "rule_id"),
        severity=_string(obj, "severity"),
        action=_string(obj, "action"),
        subject=_subject(_object(obj.get("subject"), "subject")),
        event_time=_time(obj, "event_time"),
        detected_at=_time(obj, "detected_at"),
        source=_string(obj, "source"),
        region_code=_string(obj, "region_code"),
        summary_zh=_string(obj, "summary_zh"),
        summary_en=_string(obj, "summary_en"),
        facts=_object(obj.get("facts"), "facts"),
        evidence=_evidence(obj.get("evidence")),
    )


def _object(value: object, field: str) -> dict[str, Any]:
    if value is None:
        raise InvalidAlert(field, "missing")
    if type(value) is not dict:
        raise InvalidAlert(field, "must be an object")
    return value


def _string(obj: dict[str, Any], key: str, prefix: str = "") -> str:
    value = obj.get(key)
    if value is None:
        raise InvalidAlert(prefix + key, "missing")
    if type(value) is not str:
        raise InvalidAlert(prefix + key, "must be a string")
    return value


def _optional_string(obj: dict[str, Any], key: str, prefix: str) -> str | None:
    return None if obj.get(key) is None else _string(obj, key, prefix)


def _time(obj: dict[str, Any], key: str) -> datetime:
    try:
        when = datetime.fromisoformat(_string(obj, key))
    except ValueError:
        raise InvalidAlert(key, "not an ISO 8601 time") from None
    _check_aware(key, when)
    return when


def _subject(obj: dict[str, Any]) -> Subject:
    return Subject(
        _string(obj, "kind", "subject."),
        _string(obj, "key", "subject."),
        _optional_string(obj, "id_masked", "subject."),
        _optional_string(obj, "id_province", "subject."),
    )


def _evidence(value: object) -> tuple[Evidence, ...]:
    if value is None:
        raise InvalidAlert("evidence", "missing")
    if type(value) is not list:
        raise InvalidAlert("evidence", "must be a list")
    return tuple(_evidence_item(item, f"evidence.{i}.") for i, item in enumerate(value))


def _evidence_item(value: object, prefix: str) -> Evidence:
    obj = _object(value, prefix[:-1])
    return Evidence(
        _string(obj, "event_id", prefix),
        _string(obj, "source", prefix),
        _string(obj, "event_type", prefix),
        _string(obj, "occurred_at", prefix),
    )

"""The worker's internal records: what flows between its agents, never a raw id number.

    identity topic (key: pseudonym)   event | watch update | tick
    outlet topic   (key: outlet_id)   event
    agent topic    (key: agent_id)    signal | tick

A tick carries the ordering key up to which every event has been released
by the stage before, so the agent stage can put signals coming from several
identity partitions back into event-time order. Events and signals carry the
time the worker read their input event, for the alert latency metric; it stays
in the envelope, out of the event the rules see.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from rules.event import PseudonymousEvent, decode_pseudonymous, encode_pseudonymous
from rules.state import (
    AgentSignal,
    WatchEntry,
    decode_signal,
    encode_signal,
    watch_from_row,
    watch_row,
)
from stream.ordering import Key


@dataclass(frozen=True, slots=True)
class EventRecord:
    """A pseudonymous event and when the worker read it from its input topic."""

    event: PseudonymousEvent
    arrived: float | None  # wall-clock seconds (time.time()); None if not known

    @property
    def subject_key(self) -> str:
        return self.event.subject_key


@dataclass(frozen=True, slots=True)
class WatchUpdate:
    subject_key: str
    entry: WatchEntry | None


@dataclass(frozen=True, slots=True)
class Tick:
    """Every event with an ordering key up to `key` has been released upstream."""

    key: Key
    origin: int = -1  # the identity partition a tick on the agent topic comes from


@dataclass(frozen=True, slots=True)
class SignalRecord:
    signal: AgentSignal
    key: Key  # the ordering key of the event the signal comes from
    seq: int  # its place among that event's alerts
    origin: int
    arrived: float | None = None  # when the worker read that event, as in EventRecord


IdentityRecord = EventRecord | WatchUpdate | Tick
AgentRecord = SignalRecord | Tick


def _key(raw: list[Any]) -> Key:
    return (float(raw[0]), str(raw[1]), str(raw[2]))


def _arrived(raw: object) -> float | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise ValueError("arrival time is not a number")
    return float(raw)


def encode_identity_record(record: IdentityRecord) -> bytes:
    if isinstance(record, EventRecord):
        event = orjson.Fragment(encode_pseudonymous(record.event))
        return b"E" + orjson.dumps([record.arrived, event])
    if isinstance(record, WatchUpdate):
        return b"W" + orjson.dumps([record.subject_key, watch_row(record.entry)])
    return b"T" + orjson.dumps(list(record.key))


def decode_identity_record(raw: bytes) -> IdentityRecord:
    kind, body = raw[:1], raw[1:]
    if kind == b"E" and body[:1] == b"{":  # as written before events carried their arrival
        return EventRecord(decode_pseudonymous(body), None)
    if kind == b"E":
        try:
            arrived, event = orjson.loads(body)
        except TypeError:  # not a list
            raise ValueError(f"not an event record: {raw[:16]!r}") from None
        return EventRecord(decode_pseudonymous(orjson.dumps(event)), _arrived(arrived))
    if kind == b"W":
        subject_key, row = orjson.loads(body)
        return WatchUpdate(subject_key, watch_from_row(row))
    if kind == b"T":
        return Tick(_key(orjson.loads(body)))
    raise ValueError(f"not an identity record: {raw[:16]!r}")


def encode_agent_record(record: AgentRecord) -> bytes:
    if isinstance(record, SignalRecord):
        return b"S" + orjson.dumps(
            [
                list(record.key),
                record.seq,
                record.origin,
                orjson.Fragment(encode_signal(record.signal)),
                record.arrived,
            ]
        )
    return b"T" + orjson.dumps([list(record.key), record.origin])


def decode_agent_record(raw: bytes) -> AgentRecord:
    kind, body = raw[:1], raw[1:]
    if kind == b"S":
        key, seq, origin, signal, *arrived = orjson.loads(body)
        return SignalRecord(
            decode_signal(orjson.dumps(signal)),
            _key(key),
            seq,
            origin,
            _arrived(arrived[0]) if arrived else None,
        )
    if kind == b"T":
        key, origin = orjson.loads(body)
        return Tick(_key(key), origin)
    raise ValueError(f"not an agent record: {raw[:16]!r}")

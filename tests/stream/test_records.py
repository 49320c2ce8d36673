"""The internal records' codecs: events and signals carry their arrival time in the envelope."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import pseudonymous_events

from rules.alert import Evidence
from rules.errors import InvalidRecord
from rules.event import PseudonymousEvent, encode_pseudonymous
from rules.state import AgentSignal
from stream.records import (
    EventRecord,
    SignalRecord,
    Tick,
    decode_agent_record,
    decode_identity_record,
    encode_agent_record,
    encode_identity_record,
)

arrivals = st.none() | st.floats(0, 4e9, allow_nan=False) | st.integers(0, 4_000_000_000)


def signal_of(event: PseudonymousEvent) -> AgentSignal:
    return AgentSignal(
        event.agent_id or "A-1",
        event.occurred_at.timestamp(),
        event.subject_key,
        "0" * 32,
        event.region_code,
        Evidence.from_event(event),
    )


@given(pseudonymous_events(), arrivals)
def test_event_records_round_trip_with_their_arrival(
    event: PseudonymousEvent, arrived: float | None
) -> None:
    record = EventRecord(event, arrived)
    raw = encode_identity_record(record)
    assert raw.startswith(b"E")
    assert decode_identity_record(raw) == record
    assert record.subject_key == event.subject_key


@given(pseudonymous_events())
def test_an_event_record_without_an_arrival_still_reads(event: PseudonymousEvent) -> None:
    """As a worker wrote them before events carried their arrival."""
    assert decode_identity_record(b"E" + encode_pseudonymous(event)) == EventRecord(event, None)


@given(pseudonymous_events(), arrivals, st.integers(0, 5), st.integers(0, 15))
def test_signal_records_round_trip_with_their_arrival(
    event: PseudonymousEvent, arrived: float | None, seq: int, origin: int
) -> None:
    key = (event.occurred_at.timestamp(), event.source, event.event_id)
    record = SignalRecord(signal_of(event), key, seq, origin, arrived)
    assert decode_agent_record(encode_agent_record(record)) == record


@given(pseudonymous_events())
def test_a_signal_record_without_an_arrival_still_reads(event: PseudonymousEvent) -> None:
    key = (event.occurred_at.timestamp(), event.source, event.event_id)
    record = SignalRecord(signal_of(event), key, 0, 2)
    old = orjson.loads(encode_agent_record(record)[1:])[:4]  # the four fields of before
    assert decode_agent_record(b"S" + orjson.dumps(old)) == record


def test_ticks_are_unchanged() -> None:
    tick = Tick((1.5, "CMCC-GS", "E-1"))
    assert encode_identity_record(tick) == b'T[1.5,"CMCC-GS","E-1"]'
    assert decode_identity_record(encode_identity_record(tick)) == tick


@pytest.mark.parametrize("body", [b"42", b"{}", b"[1]", b"[1, 2, 3]", b"[1, {}]", b"[1,"])
def test_a_bad_event_envelope_is_rejected(body: bytes) -> None:
    """The stages dead-letter a ValueError or InvalidRecord instead of crashing."""
    with pytest.raises((ValueError, InvalidRecord)):
        decode_identity_record(b"E" + body)


@given(pseudonymous_events(), st.sampled_from(["soon", True, [1], {"t": 1}]))
def test_an_arrival_that_is_not_a_number_is_rejected(
    event: PseudonymousEvent, arrived: object
) -> None:
    body = orjson.dumps([arrived, orjson.Fragment(encode_pseudonymous(event))])
    with pytest.raises(ValueError, match="arrival"):
        decode_identity_record(b"E" + body)

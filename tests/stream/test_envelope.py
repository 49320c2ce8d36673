"""Envelopes: what they carry comes back as it went, and anything else is refused with a reason."""

from __future__ import annotations

from datetime import UTC, date, datetime

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import pseudonymous_events

from rules.alert import Evidence
from rules.errors import InvalidRecord
from rules.event import PseudonymousEvent
from rules.holdings import Snapshot
from rules.implicated import Opened, Report, Trace
from rules.state import AgentSignal, WatchEntry
from stream.envelope import (
    ENVELOPE_SCHEMA,
    Envelope,
    EventItem,
    HoldingItem,
    Item,
    OpenedItem,
    ReportItem,
    SignalItem,
    TraceItem,
    WatchItem,
    decode_envelope,
    encode_envelope,
    event_order,
)
from stream.ordering import FIRST, Mark

arrivals = st.none() | st.floats(0, 4e9, allow_nan=False)
keys = st.tuples(
    st.floats(-1e10, 1e10, allow_nan=False, allow_infinity=False), st.text(), st.text()
)
marks = st.dictionaries(
    st.text(min_size=1), st.builds(Mark, keys | st.just(FIRST), st.integers(-1, 2**40)), max_size=5
)


def signal_of(event: PseudonymousEvent) -> AgentSignal:
    return AgentSignal(
        event.agent_id or "A-1",
        event.occurred_at.timestamp(),
        event.subject_key,
        "0" * 32,
        event.region_code,
        Evidence.from_event(event),
    )


@given(st.lists(st.tuples(pseudonymous_events(), arrivals), max_size=5), marks)
def test_identity_envelopes_round_trip(
    events: list[tuple[PseudonymousEvent, float | None]], marks: dict[str, Mark]
) -> None:
    items: list[EventItem | WatchItem | HoldingItem | SignalItem] = [
        EventItem(f"in/{n}", event, arrived) for n, (event, arrived) in enumerate(events)
    ]
    items.append(
        WatchItem("list/0", "k:1", WatchEntry("all", date(2025, 1, 1), date(2030, 1, 1), "x"))
    )
    items.append(WatchItem("list/0", "k:2", None))
    as_of = datetime(2026, 11, 30, 16, tzinfo=UTC)
    sims = (("personal", 3), ("iot", 1))
    items.append(HoldingItem("holdings/1", "k:3", Snapshot("CMCC-GS", as_of, sims, ())))
    items.append(HoldingItem("holdings/1", "k:3", Snapshot("ICBC-GS", as_of, (), (("I", 1),))))
    envelope = Envelope("identity", items, marks)
    assert decode_envelope(encode_envelope(envelope), "identity") == envelope


@given(st.lists(st.tuples(pseudonymous_events(), arrivals, st.integers(0, 5)), max_size=5), marks)
def test_agent_envelopes_round_trip(
    signals: list[tuple[PseudonymousEvent, float | None, int]], marks: dict[str, Mark]
) -> None:
    items: list[EventItem | WatchItem | SignalItem] = [
        SignalItem("identity/3", event_order(event), seq, signal_of(event), arrived)
        for event, arrived, seq in signals
    ]
    envelope = Envelope("agent", items, marks)
    assert decode_envelope(encode_envelope(envelope), "agent") == envelope


@given(st.lists(pseudonymous_events(), max_size=5), marks)
def test_number_and_place_envelopes_round_trip(
    events: list[PseudonymousEvent], marks: dict[str, Mark]
) -> None:
    when = datetime(2026, 12, 2, 1, 30, tzinfo=UTC)
    report = Report("sim", "t:" + "a" * 32, "2026-GS-0311", when.isoformat(), when.timestamp())
    numbers: list[Item] = [
        OpenedItem(f"in/{n}", "sim", f"t:{n}", Opened.of(event)) for n, event in enumerate(events)
    ]
    numbers.append(ReportItem("implicated/0", report, "police.implicated/0/7"))
    envelope = Envelope("number", numbers, marks)
    assert decode_envelope(encode_envelope(envelope), "number") == envelope
    places: list[Item] = [
        TraceItem("number/1", "outlet", event.outlet_id, Trace(report, Opened.of(event)), n % 2)
        for n, event in enumerate(events)
    ]
    envelope = Envelope("place", places, marks)
    assert decode_envelope(encode_envelope(envelope), "place") == envelope


@given(pseudonymous_events())
def test_an_envelope_holds_no_raw_id_number(event: PseudonymousEvent) -> None:
    raw = encode_envelope(Envelope("identity", [EventItem("in/0", event, None)]))
    assert event.id_masked.encode() in raw
    assert event.subject_key.encode() in raw


@pytest.mark.parametrize(
    "raw",
    [
        b'E[1.0, {"schema": "duanka.identity-event/1"}]',  # an event record of the old format
        b'T[1.0, "S", "1"]',  # a tick of the old format
        b'S[[1.0, "S", "1"], 0, 0, [], null]',
        b"",
        None,
    ],
)
def test_old_internal_records_are_refused_with_a_reason(raw: bytes | None) -> None:
    with pytest.raises(InvalidRecord, match="older internal format") as caught:
        decode_envelope(raw, "identity")
    assert caught.value.field == "record"


def test_another_schema_or_kind_is_refused() -> None:
    outlet = encode_envelope(Envelope("outlet"))
    with pytest.raises(InvalidRecord, match="outlet") as caught:
        decode_envelope(outlet, "identity")
    assert caught.value.field == "kind"
    other = orjson.dumps({"schema": "duanka.envelope/2", "kind": "identity"})
    with pytest.raises(InvalidRecord, match=ENVELOPE_SCHEMA):
        decode_envelope(other, "identity")


@pytest.mark.parametrize(
    "change",
    [
        {"origins": [1]},
        {"marks": [[0, "x", "S", "1", 0]]},
        {"marks": [[0, 1.0, "S", "1", "yes"]]},
        {"marks": [[0, 1.0, "S", "1", 1.5]]},
        {"marks": [[5, 1.0, "S", "1", 0]]},
        {"items": [["e", 0, None, ["too short"]]]},
        {"items": [["x", 0]]},
        {"items": [["w", 0, "k:1", ["all", "not a date", "2030-01-01", "x", ""]]]},
        {"items": [["s", 0, 1.0, "S", "1", "0", [], None]]},
        {"items": "nope"},
    ],
)
def test_malformed_envelopes_are_refused(change: dict[str, object]) -> None:
    good = orjson.loads(encode_envelope(Envelope("identity", [], {"in/0": Mark((1.0, "S", "1"))})))
    good.update(change)
    with pytest.raises(InvalidRecord):
        decode_envelope(orjson.dumps(good), "identity")

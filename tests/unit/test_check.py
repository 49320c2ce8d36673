"""The pre-opening check (CHECK.md) without a broker: validation, decisions, reservations."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import orjson
import pytest
from rulekit import BEIJING, DAY, GANSU, PSEUDONYMIZER, T0, engine, ev, run, screening
from strategies import DROP, make_event

from rules.check import decide, decision_document
from rules.errors import InvalidEvent
from rules.event import PseudonymousEvent, parse_check, pseudonymise
from rules.state import IdentityState, decode_identity, encode_identity

TTL, REMEMBER = 900.0, 86400.0
NOW = T0.timestamp()


# a plain opening, as rulekit's events: local ID, in person, picked up, nothing to link
PLAIN = {
    "region_code": "620102",
    "channel": "counter",
    "verification": "in_person",
    "sim_kind": "personal",
    "outlet_id": "GS-LZ-0012",
    "agent_id": DROP,
    "delivery": DROP,
    "device_id": DROP,
    "contact_phone": DROP,
}


def check_request(check_id: str = "CMCC-GS-chk-000981", **fields: Any) -> dict[str, Any]:
    obj = make_event(**(PLAIN | fields))
    del obj["event_id"]
    return obj | {"schema": "duanka.check/1", "check_id": check_id}


def opening(
    check_id: str = "chk-1", when: timedelta = timedelta(0), **fields: Any
) -> PseudonymousEvent:
    obj = check_request(check_id, occurred_at=(T0 + when).isoformat(), **fields)
    return pseudonymise(parse_check(orjson.dumps(obj)), PSEUDONYMIZER)


def problem(obj: object) -> tuple[str, str]:
    with pytest.raises(InvalidEvent) as caught:
        parse_check(obj if isinstance(obj, bytes) else orjson.dumps(obj))
    return caught.value.field, caught.value.reason


# ---------------------------------------------------------------- requests


def test_the_contract_example_is_a_valid_check() -> None:
    event = parse_check(orjson.dumps(check_request()))
    assert (event.event_id, event.check_id) == ("check:CMCC-GS-chk-000981", "CMCC-GS-chk-000981")
    assert event.event_type == "sim.activate"


def test_bad_checks_name_the_field() -> None:
    assert problem(b"") == ("record", "no body")
    assert problem(b"{") == ("record", "not valid JSON")
    assert problem([1]) == ("record", "not a JSON object")
    assert problem(check_request() | {"schema": "duanka.event/1"})[0] == "schema"
    assert problem(check_request(check_id="")) == ("check_id", "must not be empty")
    assert problem({k: v for k, v in check_request().items() if k != "check_id"}) == (
        "check_id",
        "missing",
    )
    assert problem(check_request(event_type="sim.cancel"))[0] == "event_type"
    assert problem(check_request(id_number="110105194912310021")) == (
        "id_number",
        "bad check digit",
    )
    assert problem(check_request(occurred_at="yesterday"))[0] == "occurred_at"
    assert problem(check_request(sim_kind=DROP)) == ("sim_kind", "missing")


# ---------------------------------------------------------------- decisions


def test_a_plain_opening_is_allowed_and_reserves_its_place() -> None:
    state = IdentityState()
    outcome = decide(engine(), state, opening(id_number=GANSU[0]), NOW, TTL, REMEMBER)
    assert (outcome.decision, outcome.answer["reasons"], outcome.repeat) == ("allow", [], False)
    assert outcome.answer["reservation"]["id"] == "CMCC-GS/chk-1"
    assert outcome.answer["reservation"]["expires_at"] == (T0 + timedelta(seconds=TTL)).isoformat(
        timespec="milliseconds"
    )


def test_the_reasons_are_the_alerts_the_opening_would_raise() -> None:
    # a non-local ID, verified remotely: sim_nonlocal_not_in_person (review)
    state = IdentityState()
    request = opening(id_number=BEIJING[0], verification="remote_face")
    outcome = decide(engine(), state, request, NOW, TTL, REMEMBER)
    assert (outcome.decision, outcome.rule_ids) == ("review", ["sim_nonlocal_not_in_person"])
    s = screening()
    [alert] = run(s, [ev(timedelta(0), id=BEIJING[0], verification="remote_face")])
    [reason] = outcome.answer["reasons"]
    assert reason == {
        "rule_id": alert.rule_id,
        "action": alert.action,
        "severity": alert.severity,
        "summary_zh": alert.summary_zh,
        "summary_en": alert.summary_en,
        "facts": alert.facts,
    }


def test_a_block_refuses_and_reserves_nothing() -> None:
    e = engine()
    state = IdentityState()
    for n in range(5):
        e.screen_identity(state, ev(n * DAY, msisdn=f"1390000000{n}"))
    outcome = decide(e, state, opening(when=6 * DAY), NOW, TTL, REMEMBER)
    assert (outcome.decision, outcome.rule_ids) == ("refuse", ["sim_carrier_limit"])
    assert outcome.answer["reasons"][0]["facts"] == {"held": 5, "limit": 5, "carrier": "CMCC"}
    assert outcome.answer["reservation"] is None
    assert state.held("CMCC", "personal") == 5  # a check changes no holdings


def test_of_concurrent_checks_for_the_last_slot_one_is_allowed() -> None:
    e = engine()
    state = IdentityState()
    decisions = [
        decide(e, state, opening(f"chk-{n}", id_number=BEIJING[1]), NOW, TTL, REMEMBER).decision
        for n in range(20)
    ]
    assert decisions.count("allow") == 1 and decisions.count("refuse") == 19


def test_the_same_check_id_gets_the_first_answer() -> None:
    e = engine()
    state = IdentityState()
    first = decide(e, state, opening("chk-1", id_number=BEIJING[1]), NOW, TTL, REMEMBER)
    again = decide(e, state, opening("chk-1", id_number=BEIJING[1]), NOW + 60, TTL, REMEMBER)
    assert (again.answer, again.repeat) == (first.answer, True)
    later = decide(e, state, opening("chk-1", id_number=BEIJING[1]), NOW + REMEMBER, TTL, REMEMBER)
    assert later.repeat is False  # forgotten after check.remember


def test_an_unused_reservation_expires() -> None:
    e = engine()
    state = IdentityState()
    assert (
        decide(e, state, opening("chk-1", id_number=BEIJING[1]), NOW, TTL, REMEMBER).decision
        == "allow"
    )
    assert (
        decide(
            e, state, opening("chk-2", id_number=BEIJING[1]), NOW + TTL - 1, TTL, REMEMBER
        ).decision
        == "refuse"
    )
    assert (
        decide(e, state, opening("chk-3", id_number=BEIJING[1]), NOW + TTL, TTL, REMEMBER).decision
        == "allow"
    )


def test_the_opening_takes_its_reservation_over() -> None:
    e = engine()
    state = IdentityState()
    decide(e, state, opening("chk-1", id_number=BEIJING[1]), NOW, TTL, REMEMBER)
    event = ev(timedelta(minutes=2), id=BEIJING[1], check_id="chk-1")
    assert e.screen_identity(state, event).alerts == []  # it is the reserved opening
    assert state.checks["CMCC-GS\x1fchk-1"].reserved is None
    # the month's one activation is used: the next check is refused, once, not twice
    outcome = decide(
        e,
        state,
        opening("chk-2", timedelta(minutes=3), id_number=BEIJING[1]),
        NOW + 180,
        TTL,
        REMEMBER,
    )
    assert outcome.rule_ids == ["sim_nonlocal_monthly_limit"]
    assert outcome.answer["reasons"][0]["facts"]["activations"] == 2


def test_reservations_and_answers_survive_the_codec_without_personal_data() -> None:
    e = engine()
    state = IdentityState()
    request = opening(
        "chk-1", id_number=BEIJING[1], device_id="IMEI-86-1234567", contact_phone="13800000000"
    )
    decide(e, state, request, NOW, TTL, REMEMBER)
    raw = encode_identity(state)
    assert decode_identity(raw).checks == state.checks
    for secret in (BEIJING[1], "13912345678", "IMEI-86-1234567", "13800000000", request.id_masked):
        assert secret.encode() not in raw


def test_the_decision_document() -> None:
    request = opening(id_number=GANSU[0])
    outcome = decide(engine(), IdentityState(), request, NOW, TTL, REMEMBER)
    document = decision_document(request, outcome)
    assert document["schema"] == "duanka.decision/1"
    assert document["check_id"] == "chk-1"
    assert document["subject"] == {"key": request.subject_key, "id_masked": request.id_masked}
    assert document["stale"] is False
    assert GANSU[0] not in orjson.dumps(document).decode()


def test_events_held_back_for_order_count_as_if_applied() -> None:
    # the stream has read the month's first activation but not applied it yet
    e = engine()
    state = IdentityState()
    held = ev(timedelta(minutes=-5), id=BEIJING[2])
    outcome = decide(e, state, opening("chk-1", id_number=BEIJING[2]), NOW, TTL, REMEMBER, [held])
    assert outcome.rule_ids == ["sim_nonlocal_monthly_limit"]
    assert state.history.items == []  # the held event is the stream's to apply

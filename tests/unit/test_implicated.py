"""Implicated numbers traced to their openings, and the three rules on them (CASES.md)."""

from __future__ import annotations

import io
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from rulekit import (
    BEIJING,
    DAY,
    GANSU,
    PSEUDONYMIZER,
    SECOND,
    T0,
    engine,
    ev,
    key_of,
    only,
    rules,
)

from rules.alert import Alert
from rules.cases import Cases, DictStore
from rules.config import CaseSettings, ImplicatedSettings, RuleSettings
from rules.engine import Engine, Screening
from rules.implicated import (
    NO_OPENING,
    Implicated,
    InvalidImplicated,
    NumberState,
    PlaceState,
    decode_number,
    decode_place,
    encode_number,
    encode_place,
    parse_implicated,
    report_of,
)
from rules.replay import Implications, replay

MSISDN = "13912340001"


def reported(
    when: datetime | timedelta,
    number: str = MSISDN,
    case_ref: str = "2026-GS-0001",
    kind: str = "sim",
    source: str | None = None,
) -> Any:
    at = T0 + when if isinstance(when, timedelta) else when
    return report_of(Implicated(kind, number, case_ref, at, source), PSEUDONYMIZER)


def opening(when: timedelta, person: str = GANSU[0], number: str = MSISDN, **fields: Any) -> Any:
    return ev(when, id=person, msisdn=number, **fields)


def implicate(s: Screening, report: Any) -> list[Alert]:
    return s.implicate(report)[1]


# ---------------------------------------------------------------- the record


def test_a_record_is_read_with_every_field() -> None:
    raw = (
        b'{"schema": "duanka.implicated/1", "kind": "sim", "number": "13912345678",'
        b' "source": "CMCC-GS", "case_ref": "2026-GS-0311",'
        b' "reported_at": "2026-12-02T09:30:00+08:00"}'
    )
    record = parse_implicated(raw)
    assert (record.kind, record.number, record.source, record.case_ref) == (
        "sim",
        "13912345678",
        "CMCC-GS",
        "2026-GS-0311",
    )
    assert parse_implicated(record.to_json()) == record
    assert "13912345678" not in repr(record)


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        ({"schema": "duanka.event/1"}, "schema", "must be duanka.implicated/1"),
        ({"kind": "phone"}, "kind", "unknown value 'phone'"),
        ({"number": "1391234567x"}, "number", "an msisdn is 5 to 15 digits"),
        ({"number": None}, "number", "missing"),
        ({"case_ref": 7}, "case_ref", "must be a string"),
        ({"reported_at": "2026-12-02 09:30"}, "reported_at", "not an RFC 3339 time"),
    ],
)
def test_a_bad_record_names_its_field(change: dict[str, Any], field: str, reason: str) -> None:
    obj: dict[str, Any] = {
        "schema": "duanka.implicated/1",
        "kind": "sim",
        "number": MSISDN,
        "case_ref": "c-1",
        "reported_at": "2026-12-02T09:30:00+08:00",
    }
    obj.update(change)
    with pytest.raises(InvalidImplicated) as raised:
        parse_implicated(orjson.dumps(obj))
    assert raised.value.field == field and raised.value.reason.startswith(reason)


def test_the_report_keeps_the_events_token_never_the_number() -> None:
    report = reported(DAY)
    assert report.number_key == opening(timedelta(0)).msisdn_key
    assert MSISDN not in repr(report) and MSISDN not in str(report.to_list())
    account = reported(DAY, "6222020000000001", kind="account")
    assert account.number_key == ev(timedelta(0), "bank.open").account_key


# ---------------------------------------------------------------- the trace


def test_a_report_is_traced_to_the_opening_and_alerts_its_opener() -> None:
    s = Screening(engine(only("implicated_opener")))
    opened = opening(timedelta(0), agent_id="A-7")
    s.screen(opened)
    traced, alerts = s.implicate(reported(40 * DAY))
    assert traced.trace is not None and traced.trace.days == 40
    [alert] = alerts
    assert alert.rule_id == "implicated_opener"
    assert (alert.severity, alert.action) == ("high", "report")
    assert alert.subject.key == key_of(GANSU[0]) and alert.subject.id_masked
    assert [e.event_id for e in alert.evidence] == [opened.event_id]
    assert alert.facts["case_ref"] == "2026-GS-0001"
    assert (alert.facts["outlet_id"], alert.facts["agent_id"]) == (opened.outlet_id, "A-7")
    row = traced.trace.row()
    assert (row["opened_day"], row["days_to_report"], row["agent_id"]) == (
        opened.iso()[:10],
        40.0,
        "A-7",
    )


def test_a_number_nobody_opened_traces_to_nothing() -> None:
    s = Screening(engine())
    s.screen(opening(timedelta(0)))
    traced, alerts = s.implicate(reported(DAY, number="13900000000"))
    assert traced.applied and traced.trace is None and alerts == []


def test_a_number_opened_twice_by_two_people_is_traced_to_the_one_before_the_report() -> None:
    s = Screening(engine(only("implicated_opener")))
    s.screen(opening(timedelta(0), person=GANSU[0]))
    s.screen(opening(100 * DAY, person=GANSU[1]))  # the number was given out again
    [first] = implicate(s, reported(50 * DAY, case_ref="early"))
    [second] = implicate(s, reported(150 * DAY, case_ref="late"))
    assert first.subject.key == key_of(GANSU[0])
    assert second.subject.key == key_of(GANSU[1])


def test_a_report_at_the_second_of_the_opening_finds_it() -> None:
    s = Screening(engine(only("implicated_opener")))
    s.screen(opening(timedelta(0)))
    assert len(implicate(s, reported(timedelta(0)))) == 1
    assert implicate(s, reported(-SECOND, case_ref="before")) == []


def test_a_report_naming_a_source_is_traced_to_that_sources_opening_only() -> None:
    s = Screening(engine(only("implicated_opener")))
    s.screen(opening(timedelta(0), person=GANSU[0], source="CUCC-GS"))
    s.screen(opening(10 * DAY, person=GANSU[1], source="CMCC-GS"))
    [alert] = implicate(s, reported(20 * DAY, source="CUCC-GS"))
    assert alert.subject.key == key_of(GANSU[0])


def test_an_opening_older_than_the_retention_is_not_traced() -> None:
    keep = ImplicatedSettings(retention="30d")
    s = Screening(Engine(only("implicated_opener"), implicated=keep))
    s.screen(opening(timedelta(0)))
    assert len(implicate(s, reported(30 * DAY, case_ref="in"))) == 1
    assert implicate(s, reported(30 * DAY + SECOND, case_ref="out")) == []


def test_a_report_given_again_changes_nothing_and_two_cases_give_two_alerts() -> None:
    s = Screening(engine(only("implicated_opener")))
    s.screen(opening(timedelta(0)))
    assert len(implicate(s, reported(DAY))) == 1
    again, alerts = s.implicate(reported(DAY))
    assert not again.applied and alerts == []
    [other] = implicate(s, reported(2 * DAY, case_ref="2026-GS-0002"))
    assert other.facts["case_ref"] == "2026-GS-0002"


# ---------------------------------------------------------------- outlets and staff


def place_rules(**values: Any) -> RuleSettings:
    settings = only("outlet_implicated", **values)
    return replace(settings, agent_implicated=replace(settings.outlet_implicated))


def open_cards(s: Screening, days: list[float], **fields: Any) -> list[str]:
    """Openings of one number each, at `days`; the numbers."""
    numbers = []
    for n, day in enumerate(days):
        number = f"1390000{n:04d}"
        s.screen(opening(timedelta(days=day), person=BEIJING[n], number=number, **fields))
        numbers.append(number)
    return numbers


def test_an_outlet_alerts_at_its_third_implicated_card_and_not_at_two() -> None:
    s = Screening(engine(place_rules()))
    numbers = open_cards(s, [0, 10, 20], agent_id="A-9")
    report = 200 * DAY
    assert implicate(s, reported(report, numbers[0], "c-0")) == []
    assert implicate(s, reported(report, numbers[1], "c-1")) == []
    alerts = implicate(s, reported(report, numbers[2], "c-2"))
    assert sorted(a.rule_id for a in alerts) == ["agent_implicated", "outlet_implicated"]
    outlet = next(a for a in alerts if a.rule_id == "outlet_implicated")
    assert outlet.subject.kind == "outlet" and outlet.facts["implicated_cards"] == 3
    assert (outlet.severity, outlet.action) == ("high", "review")
    assert len(outlet.evidence) == 3


def test_the_threshold_comes_from_the_config() -> None:
    s = Screening(engine(place_rules(cards=2)))
    numbers = open_cards(s, [0, 10])
    implicate(s, reported(50 * DAY, numbers[0], "c-0"))
    assert [a.rule_id for a in implicate(s, reported(50 * DAY, numbers[1], "c-1"))] == [
        "outlet_implicated"
    ]


@pytest.mark.parametrize(("apart", "alerts"), [(timedelta(days=90), 1), (90 * DAY + SECOND, 0)])
def test_the_window_holds_openings_at_most_90_days_apart(apart: timedelta, alerts: int) -> None:
    s = Screening(engine(place_rules()))
    numbers = []
    for n, when in enumerate([timedelta(0), 45 * DAY, apart]):
        number = f"1390000{n:04d}"
        s.screen(opening(when, person=BEIJING[n], number=number))
        numbers.append(number)
    at = 300 * DAY
    found = [a for n, x in enumerate(numbers) for a in implicate(s, reported(at, x, f"c{n}"))]
    assert len(found) == alerts


def test_cards_reported_in_any_order_count_by_when_they_were_opened() -> None:
    s = Screening(engine(place_rules()))
    numbers = open_cards(s, [0, 10, 20])
    alerts = []
    for n, number in reversed(list(enumerate(numbers))):
        alerts += implicate(s, reported((100 + n) * DAY, number, f"c-{n}"))
    assert [a.rule_id for a in alerts] == ["outlet_implicated"]


def test_an_outlet_alerts_again_only_after_the_cooldown() -> None:
    s = Screening(engine(place_rules()))
    numbers = open_cards(s, [0, 1, 2, 3, 200, 201, 202])
    found = []
    for n, number in enumerate(numbers):
        at = (100 + n) * DAY if n < 4 else (300 + n) * DAY
        found += [a.facts["implicated_cards"] for a in implicate(s, reported(at, number, f"c{n}"))]
    assert found == [3, 3]  # the fourth card came within the cooldown


def test_a_card_reported_in_two_cases_counts_once() -> None:
    s = Screening(engine(place_rules()))
    numbers = open_cards(s, [0, 10])
    for case_ref in ("c-a", "c-b"):
        assert implicate(s, reported(50 * DAY, numbers[0], case_ref)) == []
    assert implicate(s, reported(50 * DAY, numbers[1], "c-c")) == []


def test_online_openings_and_openings_without_staff_hold_no_place_to_account() -> None:
    s = Screening(engine(place_rules(cards=1)))
    [number] = open_cards(s, [0], outlet="online", channel="online", verification="remote_face")
    assert implicate(s, reported(DAY, number)) == []


# ---------------------------------------------------------------- state and cases


def test_states_survive_their_encoding() -> None:
    s = Screening(engine(place_rules()))
    numbers = open_cards(s, [0, 10], agent_id="A-1")
    s.implicate(reported(20 * DAY, numbers[0]))
    for state in s.numbers.values():
        assert encode_number(decode_number(encode_number(state))) == encode_number(state)
    assert isinstance(decode_number(encode_number(NumberState())), NumberState)
    for place in s.places.values():
        again = decode_place(encode_place(place))
        assert encode_place(again) == encode_place(place) and again.cards == place.cards
    assert decode_place(encode_place(PlaceState())).cards == []


def test_no_raw_number_in_any_state() -> None:
    s = Screening(engine())
    numbers = open_cards(s, [0, 1, 2], agent_id="A-1")
    for n, number in enumerate(numbers):
        s.implicate(reported(30 * DAY, number, f"c{n}"))
    encoded = [encode_number(v) for v in s.numbers.values()]
    encoded += [encode_place(v) for v in s.places.values()]
    for number in numbers:
        assert not any(number.encode() in raw for raw in encoded)


def test_an_implicated_opener_joins_the_case_of_the_persons_earlier_alerts() -> None:
    settings = rules()
    s = Screening(engine(settings))
    cases = Cases(CaseSettings(), DictStore())
    remote = {"verification": "remote_face", "channel": "online", "outlet": "online"}
    earlier = ev(timedelta(0), id=BEIJING[0], msisdn=MSISDN, **remote)
    for alert in s.screen(earlier):
        cases.add(orjson.loads(_encoded(alert)), s.links(alert, earlier))
    traced, alerts = s.implicate(reported(200 * DAY))  # months later: far outside the window
    assert traced.trace is not None
    [opener] = alerts
    cases.add(orjson.loads(_encoded(opener)), s.implicated_links(opener, traced.trace))
    [document] = cases.documents()
    assert {a["rule_id"] for a in document["alerts"]} == {
        "sim_nonlocal_not_in_person",
        "implicated_opener",
    }


def _encoded(alert: Alert) -> bytes:
    from rules.alert import encode_alert

    return encode_alert(alert)


# ---------------------------------------------------------------- replay


def test_replay_traces_a_file_of_numbers_among_the_events(tmp_path: Path) -> None:
    from strategies import make_event

    events = tmp_path / "events.jsonl"
    lines = [
        orjson.dumps(
            make_event(
                event_id=f"CMCC-GS-{n}",
                occurred_at=(T0 + n * DAY).isoformat(),
                id_number=BEIJING[n],
                msisdn=f"1390000{n:04d}",
                outlet_id="62-OUT-1",
                agent_id="A-1",
            )
        )
        for n in range(3)
    ]
    events.write_bytes(b"\n".join(lines) + b"\n")
    implicated = tmp_path / "implicated.jsonl"
    records = [
        Implicated("sim", f"1390000{n:04d}", f"c-{n}", T0 + (n + 1) * DAY).to_json()
        for n in range(3)
    ]
    records.append(Implicated("sim", "13999999999", "c-9", T0 + 9 * DAY).to_json())
    records.append(b'{"schema": "duanka.implicated/1", "kind": "sim"}')
    implicated.write_bytes(b"\n".join(records) + b"\n")
    out, dead, traces = io.BytesIO(), io.BytesIO(), io.BytesIO()
    reports = Implications(implicated, PSEUDONYMIZER, traces)
    summary = replay(events, engine(place_rules()), PSEUDONYMIZER, out, dead, implicated=reports)
    assert (summary.implicated_read, summary.traced, summary.implicated_unknown) == (4, 3, 1)
    assert summary.implicated_rejected == 1
    alerts = [orjson.loads(line) for line in out.getvalue().splitlines()]
    assert [a["rule_id"] for a in alerts] == ["outlet_implicated", "agent_implicated"]
    rows = [orjson.loads(line) for line in traces.getvalue().splitlines()]
    assert [r["case_ref"] for r in rows] == ["c-0", "c-1", "c-2"]
    letters = [orjson.loads(line) for line in dead.getvalue().splitlines()]
    assert [(d["field"], NO_OPENING in d["error"]) for d in letters] == [
        ("number", False),  # invalid: no number
        ("number", True),
    ]
    assert not any(b"1390000" in line for line in traces.getvalue().splitlines())


def test_the_figures_count_each_card_once_by_day_and_place() -> None:
    from rules.figures import Figures

    s = Screening(engine())
    numbers = open_cards(s, [0, 0, 5], agent_id="A-1")
    rows = []
    for n, number in enumerate([*numbers, numbers[0]]):  # the first card in a second case
        traced, _ = s.implicate(reported((30 + n) * DAY, number, f"c{n}"))
        assert traced.trace is not None
        rows.append(traced.trace.row())
    assert [r["first"] for r in rows] == [True, True, True, False]
    figures = Figures.of(rows)
    assert figures.cards == 3
    assert sorted(figures.by_day.values()) == [1, 2]
    assert figures.top("agent_id") == [("A-1", 3)]
    assert figures.by["channel"] == {"counter": 3}
    assert dict(figures.day_buckets())["≤ 30"] == 2  # 30 and 27 days
    assert dict(figures.day_buckets())["≤ 60"] == 1  # 31 days

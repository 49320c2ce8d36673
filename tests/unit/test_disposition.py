"""The police's verdicts (`duanka.disposition/1`): every field's error, and precision per rule."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from strategies import DROP

from rules.disposition import (
    DISPOSITION_LIST,
    Disposition,
    InvalidDisposition,
    Punishment,
    Verdicts,
    parse_disposition,
    precision,
    standing,
)
from rules.errors import InvalidRecord
from rules.state import WatchEntry

CST = timezone(timedelta(hours=8))
ALERT = "3f9a0c6e1b2d4a5f8e7d6c5b4a392817"
PUNISH: dict[str, Any] = {
    "scope": "telecom",
    "since": "2026-12-02",
    "until": "2028-12-02",
    "basis": "2024 joint punishment: card trade",
}
EXAMPLE: dict[str, Any] = {  # the contract's example (CASES.md)
    "schema": "duanka.disposition/1",
    "alert_id": ALERT,
    "status": "confirmed",
    "at": "2026-12-02T09:30:00+08:00",
    "by": "GS-LZ-police-0042",
    "note": "sold the SIM to a collector, case 2026-311",
    "punish": PUNISH,
}


def record(**changes: Any) -> bytes:
    obj = dict(EXAMPLE)
    for key, value in changes.items():
        if value is DROP:
            obj.pop(key)
        else:
            obj[key] = value
    return orjson.dumps(obj)


def punish(**changes: Any) -> dict[str, Any]:
    obj = dict(PUNISH)
    for key, value in changes.items():
        if value is DROP:
            obj.pop(key)
        else:
            obj[key] = value
    return obj


def error(raw: bytes | None) -> tuple[str, str]:
    with pytest.raises(InvalidDisposition) as caught:
        parse_disposition(raw)
    assert isinstance(caught.value, InvalidRecord)  # a dead letter, like any rejected record
    return caught.value.field, caught.value.reason


def test_the_contract_example_parses() -> None:
    assert parse_disposition(record()) == Disposition(
        ALERT,
        "confirmed",
        datetime(2026, 12, 2, 9, 30, tzinfo=CST),
        "GS-LZ-police-0042",
        "sold the SIM to a collector, case 2026-311",
        Punishment(
            "telecom", date(2026, 12, 2), date(2028, 12, 2), "2024 joint punishment: card trade"
        ),
    )


def test_the_least_a_disposition_needs() -> None:
    for status in ("investigating", "confirmed", "dismissed"):
        parsed = parse_disposition(record(status=status, note=DROP, punish=DROP))
        assert (parsed.status, parsed.note, parsed.punish) == (status, "", None)
    # an empty note and a null punish are the same as none
    assert parse_disposition(record(note="", punish=None)).punish is None


@pytest.mark.parametrize("name", ["alert_id", "status", "at", "by"])
def test_a_missing_required_field_is_named(name: str) -> None:
    assert error(record(**{name: DROP})) == (name, "missing")
    assert error(record(**{name: None})) == (name, "missing")
    assert error(record(**{name: ""})) == (name, "missing")


@pytest.mark.parametrize("name", ["alert_id", "status", "at", "by", "note"])
@pytest.mark.parametrize("value", [12345, True, ["x"], {"x": 1}])
def test_a_field_of_the_wrong_type_is_named(name: str, value: object) -> None:
    assert error(record(**{name: value})) == (name, "must be a string")


@pytest.mark.parametrize("name", ["scope", "since", "until", "basis"])
def test_a_punishment_field_of_the_wrong_type_is_named(name: str) -> None:
    assert error(record(punish=punish(**{name: 12345}))) == (f"punish.{name}", "must be a string")


@pytest.mark.parametrize("name", ["scope", "since", "until"])
def test_a_missing_punishment_field_is_named(name: str) -> None:
    assert error(record(punish=punish(**{name: DROP}))) == (f"punish.{name}", "missing")


def test_an_alert_id_is_the_alerts_hexadecimal_id() -> None:
    reason = "must be the alert's hexadecimal id"
    for bad in ("3F9A0C6E", "alert-1", "3f9a 0c6e", "ｆ"):
        assert error(record(alert_id=bad)) == ("alert_id", reason)
    assert error(record(alert_id="a" * 65)) == ("alert_id", "longer than 64 characters")
    assert parse_disposition(record(alert_id="a" * 64)).alert_id == "a" * 64


def test_an_unknown_status_is_named_with_the_ones_expected() -> None:
    assert error(record(status="closed")) == (
        "status",
        "unknown value 'closed' (expected one of: investigating, confirmed, dismissed)",
    )
    assert error(record(status="Confirmed"))[0] == "status"


@pytest.mark.parametrize("status", ["investigating", "dismissed"])
def test_only_a_confirmed_disposition_may_punish(status: str) -> None:
    assert error(record(status=status)) == (
        "punish",
        "only a confirmed disposition may punish",
    )
    # even an empty punishment: a verdict that is not confirmed must not carry one
    assert error(record(status=status, punish={}))[0] == "punish"


def test_a_punishment_is_an_object() -> None:
    assert error(record(punish="telecom")) == ("punish", "must be an object")
    assert error(record(punish=["telecom"])) == ("punish", "must be an object")


def test_a_bad_scope_is_named_with_the_ones_expected() -> None:
    assert error(record(punish=punish(scope="sim"))) == (
        "punish.scope",
        "unknown value 'sim' (expected one of: telecom, bank, all)",
    )


@pytest.mark.parametrize("until", ["2026-12-02", "2026-12-01", "2020-01-01"])
def test_until_must_be_after_since(until: str) -> None:
    assert error(record(punish=punish(until=until))) == ("punish.until", "must be after since")


@pytest.mark.parametrize("name", ["since", "until"])
@pytest.mark.parametrize(
    "bad",
    [
        "2026-13-01",  # no such month
        "2026-02-30",  # no such day
        "20261202",  # the basic format
        "2026-W49-3",  # a week date: ten characters, and date.fromisoformat takes it
        "2026-12-2",
        "02.12.2026",
        "2026-12-02T00:00:00+08:00",  # a time, not a date
    ],
)
def test_a_bad_date_is_named(name: str, bad: str) -> None:
    field, reason = error(record(punish=punish(**{name: bad})))
    assert field == f"punish.{name}"
    assert reason in ("not a date like 2026-12-02", "longer than 10 characters")


@pytest.mark.parametrize(
    "bad",
    [
        "yesterday",
        "2026-12-02",  # a date, not a time
        "2026-13-02T09:30:00+08:00",
        "2026-12-02T09:30+08:00",  # RFC 3339 has the seconds
        "2026-W49-3T09:30:00+08:00",  # datetime.fromisoformat takes it, RFC 3339 does not
        "0001-01-01T00:00:00+08:00",  # before 1970: in UTC, not even a datetime
    ],
)
def test_a_bad_at_is_named(bad: str) -> None:
    assert error(record(at=bad))[0] == "at"


def test_at_must_have_its_offset() -> None:
    assert error(record(at="2026-12-02T09:30:00")) == ("at", "not an RFC 3339 time with offset")
    assert parse_disposition(record(at="2026-12-02T01:30:00Z")).at == datetime(
        2026, 12, 2, 9, 30, tzinfo=CST
    )


@pytest.mark.parametrize(("name", "limit"), [("by", 1000), ("note", 1000), ("alert_id", 64)])
def test_too_long_a_text_is_named(name: str, limit: int) -> None:
    value = "a" * (limit + 1)
    assert error(record(**{name: value})) == (name, f"longer than {limit} characters")


def test_too_long_a_basis_is_named() -> None:
    assert error(record(punish=punish(basis="法" * 1001))) == (
        "punish.basis",
        "longer than 1000 characters",
    )


def test_a_record_that_is_not_a_json_object_is_named() -> None:
    assert error(b"not json") == ("record", "not valid JSON")
    assert error(b"\xff\xfe") == ("record", "not valid JSON")
    for raw in (b"[]", b'"confirmed"', b"42", b"null"):
        assert error(raw) == ("record", "not a JSON object")


def test_a_null_record_is_named() -> None:
    assert error(None) == ("record", "no value (a null record)")
    assert error(b"") == ("record", "no value (a null record)")


def test_too_large_a_record_is_named() -> None:
    field, reason = error(record(note="x" * 70_000))
    assert (field, reason.startswith("larger than 64 KiB")) == ("record", True)


@pytest.mark.parametrize("schema", [DROP, None, "duanka.disposition/2", "duanka.alert/1", 1])
def test_the_schema_is_named(schema: object) -> None:
    assert error(record(schema=schema)) == ("schema", "must be duanka.disposition/1")


def test_a_disposition_goes_to_json_and_back() -> None:
    full = parse_disposition(record())
    assert parse_disposition(full.to_json()) == full
    bare = Disposition(ALERT, "dismissed", datetime(2026, 12, 3, 8, 0, 0, 123456, CST), "GS-1")
    again = parse_disposition(bare.to_json())
    assert again == bare and again.at.utcoffset() == timedelta(hours=8)
    written = orjson.loads(bare.to_json())
    assert written == {
        "schema": "duanka.disposition/1",
        "alert_id": ALERT,
        "status": "dismissed",
        "at": "2026-12-03T08:00:00.123456+08:00",
        "by": "GS-1",
    }
    unbased = Punishment("bank", date(2026, 1, 1), date(2027, 1, 1))
    confirmed = Disposition(ALERT, "confirmed", bare.at, "GS-1", "", unbased)
    assert orjson.loads(confirmed.to_json())["punish"] == {
        "scope": "bank",
        "since": "2026-01-01",
        "until": "2027-01-01",
    }
    assert parse_disposition(confirmed.to_json()) == confirmed


def test_a_punishment_is_a_watchlist_entry_for_the_alert() -> None:
    entry = parse_disposition(record()).punish
    assert entry is not None
    assert entry.entry(ALERT) == WatchEntry(
        "telecom",
        date(2026, 12, 2),
        date(2028, 12, 2),
        DISPOSITION_LIST,
        f"alert {ALERT}",
        "2024 joint punishment: card trade",
    )


# ---------------------------------------------------------------- standing verdicts, precision


def at(minute: int) -> datetime:
    return datetime(2026, 12, 2, 9, minute, tzinfo=CST)


def test_the_last_disposition_of_an_alert_stands() -> None:
    first = Disposition("a1", "investigating", at(0), "p")
    other = Disposition("b2", "dismissed", at(1), "p")
    last = Disposition("a1", "confirmed", at(2), "p")
    assert standing([first, other, last]) == {"a1": last, "b2": other}
    # the order given stands, not `at`: a topic's or a file's order is the police's
    early = Disposition("a1", "dismissed", at(0), "p")
    assert standing([last, early]) == {"a1": early}


def test_a_later_verdict_replaces_an_earlier_one_in_the_counts() -> None:
    verdicts = Verdicts()
    verdicts.set("a1", "sim_churn", "confirmed")
    assert verdicts.counts["sim_churn"] == {"investigating": 0, "confirmed": 1, "dismissed": 0}
    verdicts.set("a1", "sim_churn", "dismissed")  # an appeal
    assert verdicts.counts["sim_churn"] == {"investigating": 0, "confirmed": 0, "dismissed": 1}
    assert verdicts.standing == {"a1": ("sim_churn", "dismissed")}
    verdicts.set("a1", "sim_churn", "dismissed")  # the same again changes nothing
    assert verdicts.counts["sim_churn"]["dismissed"] == 1


def test_counts_per_rule_and_precision() -> None:
    verdicts = Verdicts()
    for alert_id, status in [("a", "confirmed"), ("b", "confirmed"), ("c", "dismissed")]:
        verdicts.set(alert_id, "sim_churn", status)
    verdicts.set("d", "gang_batch_open", "dismissed")
    verdicts.set("e", "watchlist_hit", "investigating")
    assert verdicts.precision() == {
        "gang_batch_open": 0.0,
        "sim_churn": 2 / 3,
        "watchlist_hit": None,
    }


def test_precision_is_none_before_any_decided_verdict() -> None:
    assert precision({}) is None
    assert precision({"investigating": 0, "confirmed": 0, "dismissed": 0}) is None
    assert Verdicts().precision() == {}


def test_investigating_is_not_counted_in_precision() -> None:
    assert precision({"investigating": 5}) is None
    assert precision({"investigating": 100, "confirmed": 1, "dismissed": 1}) == 0.5
    assert precision({"investigating": 7, "confirmed": 3}) == 1.0
    verdicts = Verdicts()
    verdicts.set("a", "sim_churn", "confirmed")
    verdicts.set("b", "sim_churn", "investigating")
    assert verdicts.precision() == {"sim_churn": 1.0}
    verdicts.set("a", "sim_churn", "investigating")  # back under investigation: undecided
    assert verdicts.precision() == {"sim_churn": None}

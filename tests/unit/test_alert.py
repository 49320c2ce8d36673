"""The alert record: its deterministic id, its JSON, and reading it back."""

from __future__ import annotations

import contextlib
import hashlib
import re
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest
import strategies
from hypothesis import given, settings
from hypothesis import strategies as st

from rules.alert import (
    ALERT_SCHEMA,
    Alert,
    Evidence,
    Subject,
    decode_alert,
    encode_alert,
    make_alert_id,
)
from rules.errors import DuankaError, InvalidAlert, InvalidEvent
from rules.event import parse_event, pseudonymise
from rules.pseudonym import DEV_KEY, Pseudonymizer

CST = timezone(timedelta(hours=8))
PARTS = ("sim_nonlocal_monthly_limit", "k:8c1d", "CMCC-GS", "CMCC-GS-20261120-000123")


def example_alert(**overrides: object) -> Alert:
    event = pseudonymise(
        parse_event(strategies.encode(strategies.make_event())), Pseudonymizer(DEV_KEY)
    )
    fields: dict[str, object] = {
        "alert_id": make_alert_id("sim_nonlocal_monthly_limit", event.subject_key, *PARTS[2:]),
        "rule_id": "sim_nonlocal_monthly_limit",
        "severity": "high",
        "action": "review",
        "subject": Subject("identity", event.subject_key, event.id_masked, event.id_province),
        "event_time": event.occurred_at,
        "detected_at": datetime(2026, 11, 20, 10, 15, 0, 120000, tzinfo=CST),
        "source": "CMCC-GS",
        "region_code": "620102",
        "summary_zh": "外地身份证30天内办理第2张号卡",
        "summary_en": "non-local ID opened a 2nd SIM within 30 days",
        "facts": {"count": 2, "window": "30d"},
        "evidence": (
            Evidence(
                "CMCC-GS-20261020-000031", "CMCC-GS", "sim.activate", "2026-10-20T09:00:00+08:00"
            ),
            Evidence.from_event(event),
        ),
    }
    return Alert(**(fields | overrides))  # type: ignore[arg-type]


# ---------------------------------------------------------------- alert_id


def test_alert_id_is_32_hex_and_deterministic() -> None:
    alert_id = make_alert_id(*PARTS)
    assert re.fullmatch(r"[0-9a-f]{32}", alert_id)
    assert alert_id == make_alert_id(*PARTS)


def test_alert_id_pinned() -> None:
    # A changed id breaks deduplication against earlier runs: change it on purpose only.
    assert make_alert_id(*PARTS) == make_alert_id(*PARTS, shared_value=None)
    assert make_alert_id("a", "b", "c", "d") == _reference_id(["a", "b", "c", "d"])


def _reference_id(parts: list[str]) -> str:
    data = b"".join(b"%d:%b\x1f" % (len(p.encode()), p.encode()) for p in parts)
    return hashlib.sha256(data).hexdigest()[:32]


@pytest.mark.parametrize("position", range(4))
def test_alert_id_depends_on_each_part(position: int) -> None:
    changed = list(PARTS)
    changed[position] += "x"
    assert make_alert_id(*changed) != make_alert_id(*PARTS)


def test_alert_id_depends_on_the_shared_value() -> None:
    base = make_alert_id(*PARTS)
    assert make_alert_id(*PARTS, shared_value="dev-88c1") != base
    assert make_alert_id(*PARTS, shared_value="") != base
    assert make_alert_id(*PARTS, shared_value="a") != make_alert_id(*PARTS, shared_value="b")


def test_alert_id_parts_are_unambiguous() -> None:
    assert make_alert_id("a", "bc", "s", "e") != make_alert_id("ab", "c", "s", "e")
    assert make_alert_id("r", "k", "s\x1f", "e") != make_alert_id("r", "k", "s", "\x1fe")
    assert make_alert_id("r", "k", "s", "e", "") != make_alert_id("r", "k", "s", "e")
    assert make_alert_id("r", "k", "s", "1:e") != make_alert_id("r", "k", "s1:", "e")


@settings(max_examples=200, deadline=None)
@given(
    one=st.tuples(*[strategies.texts] * 4, st.none() | strategies.texts),
    two=st.tuples(*[strategies.texts] * 4, st.none() | strategies.texts),
)
def test_different_parts_give_different_ids(
    one: tuple[str, str, str, str, str | None], two: tuple[str, str, str, str, str | None]
) -> None:
    assert (make_alert_id(*one) == make_alert_id(*two)) == (one == two)


# ---------------------------------------------------------------- the record


def test_encode_alert_follows_the_contract() -> None:
    obj = orjson.loads(encode_alert(example_alert()))
    assert list(obj) == [
        "schema",
        "alert_id",
        "rule_id",
        "severity",
        "action",
        "subject",
        "event_time",
        "detected_at",
        "source",
        "region_code",
        "summary_zh",
        "summary_en",
        "facts",
        "evidence",
    ]
    assert obj["schema"] == ALERT_SCHEMA
    assert obj["event_time"] == "2026-11-20T10:15:00+08:00"
    assert obj["detected_at"] == "2026-11-20T10:15:00.120+08:00"
    assert obj["subject"]["id_masked"] == "1101**********002X"
    assert obj["subject"]["id_province"] == "11"
    assert obj["evidence"][0] == {
        "event_id": "CMCC-GS-20261020-000031",
        "source": "CMCC-GS",
        "event_type": "sim.activate",
        "occurred_at": "2026-10-20T09:00:00+08:00",
    }
    assert obj["evidence"][1]["occurred_at"] == "2026-11-20T10:15:00+08:00"
    assert "11010519491231002X" not in encode_alert(example_alert()).decode()


def test_subject_leaves_out_absent_fields() -> None:
    alert = example_alert(subject=Subject("outlet", "GS-LZ-0012"))
    assert orjson.loads(encode_alert(alert))["subject"] == {"kind": "outlet", "key": "GS-LZ-0012"}
    assert decode_alert(encode_alert(alert)) == alert


def test_detected_at_is_kept_to_the_millisecond() -> None:
    alert = example_alert(detected_at=datetime(2026, 11, 20, 2, 15, 0, 123999, tzinfo=UTC))
    assert alert.detected_at.microsecond == 123000
    assert orjson.loads(encode_alert(alert))["detected_at"] == "2026-11-20T02:15:00.123+00:00"
    whole = example_alert(detected_at=datetime(2026, 11, 20, 2, 15, tzinfo=UTC))
    assert orjson.loads(encode_alert(whole))["detected_at"] == "2026-11-20T02:15:00.000+00:00"


def test_evidence_given_as_a_list_becomes_a_tuple() -> None:
    alert = example_alert(evidence=list(example_alert().evidence))
    assert isinstance(alert.evidence, tuple)


def test_the_example_round_trips() -> None:
    alert = example_alert()
    assert decode_alert(encode_alert(alert)) == alert


@settings(max_examples=100, deadline=None)
@given(alert=strategies.alerts())
def test_alerts_round_trip(alert: Alert) -> None:
    again = decode_alert(encode_alert(alert))
    assert again == alert
    assert again.event_time.utcoffset() == alert.event_time.utcoffset()
    assert again.detected_at.utcoffset() == alert.detected_at.utcoffset()


# ---------------------------------------------------------------- invalid alerts


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("severity", "urgent"),
        ("action", "ignore"),
        ("event_time", datetime(2026, 11, 20)),  # noqa: DTZ001 - the naive time under test
        ("detected_at", datetime(2026, 11, 20)),  # noqa: DTZ001
    ],
)
def test_alert_checks_its_values(field: str, value: object) -> None:
    with pytest.raises(InvalidAlert) as caught:
        example_alert(**{field: value})
    assert caught.value.field == field


def test_subject_kind_is_checked() -> None:
    with pytest.raises(InvalidAlert) as caught:
        example_alert(subject=Subject("person", "k:1"))
    assert caught.value.field == "subject.kind"


def record(**changes: object) -> bytes:
    obj = orjson.loads(encode_alert(example_alert()))
    for path, value in changes.items():
        *parents, key = path.split("__")
        target = obj
        for parent in parents:
            target = target[int(parent)] if isinstance(target, list) else target[parent]
        if value is strategies.DROP:
            del target[key]
        else:
            target[key] = value
    return orjson.dumps(obj)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b"{", "record"),
        (b"[]", "record"),
        (b"", "record"),
        (record(schema="duanka.event/1"), "schema"),
        (record(alert_id=strategies.DROP), "alert_id"),
        (record(severity=3), "severity"),
        (record(severity="urgent"), "severity"),
        (record(subject=strategies.DROP), "subject"),
        (record(subject="k:1"), "subject"),
        (record(subject__key=strategies.DROP), "subject.key"),
        (record(subject__id_masked=5), "subject.id_masked"),
        (record(subject__kind="person"), "subject.kind"),
        (record(event_time="yesterday"), "event_time"),
        (record(detected_at="2026-11-20T10:15:00"), "detected_at"),
        (record(facts=[1]), "facts"),
        (record(evidence={}), "evidence"),
        (record(evidence=strategies.DROP), "evidence"),
        (record(evidence=[1]), "evidence.0"),
        (record(evidence__1__source=1), "evidence.1.source"),
    ],
)
def test_decode_alert_rejects_with_a_field(raw: bytes, field: str) -> None:
    with pytest.raises(InvalidAlert) as caught:
        decode_alert(raw)
    assert caught.value.field == field
    assert isinstance(caught.value, DuankaError)
    assert not isinstance(caught.value, InvalidEvent)


def test_decode_alert_ignores_extra_fields() -> None:
    alert = example_alert()
    obj = orjson.loads(encode_alert(alert)) | {"note": 1}
    assert decode_alert(orjson.dumps(obj)) == alert


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=200) | strategies.json_values.map(orjson.dumps))
def test_decode_alert_raises_only_invalid_alert(raw: bytes) -> None:
    with contextlib.suppress(InvalidAlert):
        decode_alert(raw)

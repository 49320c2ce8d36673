"""parse_event, encode_event and the pseudonymous event: the contract's event rules."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
import strategies
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import DROP, encode, make_event

from rules.errors import DuankaError, InvalidEvent
from rules.event import (
    EVENT_SCHEMA,
    MAX_RECORD_BYTES,
    Delivery,
    Event,
    PseudonymousEvent,
    encode_event,
    parse_event,
    pseudonymise,
    pseudonymous_from_row,
    pseudonymous_row,
)
from rules.pseudonym import DEV_KEY, Pseudonymizer

CST = timezone(timedelta(hours=8))
REQUIRED = (
    "schema",
    "event_id",
    "event_type",
    "occurred_at",
    "source",
    "id_type",
    "id_number",
    "region_code",
    "outlet_id",
    "channel",
    "verification",
)
STRING_FIELDS = (
    *REQUIRED,
    "agent_id",
    "msisdn",
    "sim_kind",
    "account_id",
    "account_kind",
    "account_class",
    "check_id",
    "device_id",
    "contact_phone",
)
ENUMS = {
    "event_type": "bank.close, bank.open, sim.activate, sim.cancel",
    "id_type": "other, resident_id",
    "channel": "counter, dealer, online",
    "verification": "in_person, none, remote_face",
    "sim_kind": "iot, personal",
}
PSEUDONYMIZER = Pseudonymizer(DEV_KEY)


def rejection(record: object) -> tuple[str, str]:
    """(field, reason) of the InvalidEvent for a record (an object, or raw bytes)."""
    raw = record if isinstance(record, bytes) or record is None else encode(record)
    with pytest.raises(InvalidEvent) as caught:
        parse_event(raw)
    error = caught.value
    assert str(error) == f"{error.field}: {error.reason}"
    return error.field, error.reason


def bank_event(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "event_type": "bank.open",
        "source": "ICBC-GS",
        "msisdn": DROP,
        "sim_kind": DROP,
        "account_id": "6222020000000001",
        "account_kind": "personal",
    }
    return make_event(**(base | overrides))


# ---------------------------------------------------------------- the example


def test_the_contract_example_parses() -> None:
    event = parse_event(encode(make_event()))
    assert event == Event(
        event_id="CMCC-GS-20261120-000123",
        event_type="sim.activate",
        occurred_at=datetime(2026, 11, 20, 10, 15, tzinfo=CST),
        source="CMCC-GS",
        id_type="resident_id",
        id_number="11010519491231002X",
        region_code="620102",
        outlet_id="GS-LZ-0012",
        channel="online",
        verification="remote_face",
        agent_id="A-77812",
        msisdn="13912345678",
        sim_kind="personal",
        delivery=Delivery("mail", "530102", "a1f3c9"),
        device_id="dev-88c1",
        contact_phone="13800000000",
    )
    assert event.occurred_at.utcoffset() == timedelta(hours=8)


def test_derived_facts_of_the_example() -> None:
    event = parse_event(encode(make_event()))
    assert event.id_province == "11"
    assert event.id_prefecture == "1101"
    assert event.outlet_province == "62"
    assert event.is_nonlocal
    assert event.delivery_province == "53"
    assert event.is_opening


def test_derived_facts_of_a_local_other_id_and_a_cancel() -> None:
    other = parse_event(encode(make_event(id_type="other", id_number="E12345678")))
    assert other.id_province is None and other.id_prefecture is None
    assert not other.is_nonlocal
    local = parse_event(encode(make_event(id_number=strategies.valid_resident_id("62"))))
    assert not local.is_nonlocal
    cancel = parse_event(encode(make_event(event_type="sim.cancel", delivery=DROP)))
    assert not cancel.is_opening and cancel.delivery_province is None
    assert parse_event(encode(bank_event())).is_opening
    assert not parse_event(encode(bank_event(event_type="bank.close"))).is_opening


def test_the_example_as_pretty_printed_in_the_contract() -> None:
    pretty = orjson.dumps(make_event(), option=orjson.OPT_INDENT_2)
    assert parse_event(pretty) == parse_event(encode(make_event()))


# ---------------------------------------------------------------- record level


def test_a_record_over_64_kib_is_rejected() -> None:
    record = make_event(padding="")
    room = MAX_RECORD_BYTES - len(encode(record))
    at_limit = encode(make_event(padding="p" * room))
    assert len(at_limit) == MAX_RECORD_BYTES
    assert parse_event(at_limit).event_id == "CMCC-GS-20261120-000123"
    over = encode(make_event(padding="p" * (room + 1)))
    assert rejection(over) == ("record", "larger than 64 KiB (65537 bytes)")


@pytest.mark.parametrize(
    "raw", [b"", b"{", b"\xff\xfe", b'{"a":1}{}', b"NaN", b"\xef\xbb\xbf{}", b'{"a":"\\ud800"}']
)
def test_not_json(raw: bytes) -> None:
    assert rejection(raw) == ("record", "not valid JSON")


def test_not_utf8() -> None:
    raw = encode(make_event()).replace(b"GS-LZ-0012", b"GS-LZ-\xff012")
    assert rejection(raw) == ("record", "not valid JSON")


@pytest.mark.parametrize("raw", [b"[]", b"1", b"null", b'"x"', b"true", b"[{}]"])
def test_not_an_object(raw: bytes) -> None:
    assert rejection(raw) == ("record", "not a JSON object")


def test_a_null_record_is_rejected() -> None:
    assert rejection(None) == ("record", "no value (a null record)")


def test_schema_must_be_exact() -> None:
    assert rejection(make_event(schema="duanka.event/2")) == (
        "schema",
        f"unknown value 'duanka.event/2' (expected {EVENT_SCHEMA})",
    )
    assert rejection(make_event(schema=1)) == ("schema", "must be a string")


# ---------------------------------------------------------------- fields


@pytest.mark.parametrize("field", REQUIRED)
def test_each_missing_required_field(field: str) -> None:
    assert rejection(make_event(**{field: DROP})) == (field, "missing")
    assert rejection(make_event(**{field: None})) == (field, "missing")


@pytest.mark.parametrize("field", REQUIRED)
def test_each_empty_required_field(field: str) -> None:
    assert rejection(make_event(**{field: ""})) == (field, "must not be empty")


@pytest.mark.parametrize("field", STRING_FIELDS)
@pytest.mark.parametrize("value", [1, 1.5, True, False, [], ["x"], {}, {"a": "b"}])
def test_each_wrong_type(field: str, value: object) -> None:
    assert rejection(make_event(**{field: value})) == (field, "must be a string")


@pytest.mark.parametrize("value", ["mail", 1, True, [], [{"method": "mail"}]])
def test_delivery_must_be_an_object(value: object) -> None:
    assert rejection(make_event(delivery=value)) == ("delivery", "must be an object")


@pytest.mark.parametrize(("field", "allowed"), ENUMS.items())
def test_each_unknown_enum_value(field: str, allowed: str) -> None:
    expected = f"unknown value 'bogus' (expected one of: {allowed})"
    assert rejection(make_event(**{field: "bogus"})) == (field, expected)


def test_enum_values_are_case_sensitive() -> None:
    assert rejection(make_event(channel="Online"))[0] == "channel"


def test_account_kind_and_delivery_method_enums() -> None:
    assert rejection(bank_event(account_kind="savings")) == (
        "account_kind",
        "unknown value 'savings' (expected one of: corporate, payment, personal)",
    )
    assert rejection(make_event(delivery={"method": "drone"})) == (
        "delivery.method",
        "unknown value 'drone' (expected one of: mail, pickup)",
    )


def test_long_and_odd_values_are_cut_and_escaped_in_reasons() -> None:
    _, reason = rejection(make_event(channel="x" * 1000))
    assert len(reason) < 120 and "…" in reason
    assert rejection(make_event(channel="a\nb"))[1].startswith("unknown value 'a\\nb'")


# ---------------------------------------------------------------- occurred_at


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-20T10:15:00+08:00", datetime(2026, 11, 20, 10, 15, tzinfo=CST)),
        ("2026-11-20T02:15:00Z", datetime(2026, 11, 20, 2, 15, tzinfo=UTC)),
        ("2026-11-20t02:15:00z", datetime(2026, 11, 20, 2, 15, tzinfo=UTC)),
        ("2026-11-20T02:15:00-00:00", datetime(2026, 11, 20, 2, 15, tzinfo=UTC)),
        ("2026-11-20T10:15:00.5+08:00", datetime(2026, 11, 20, 10, 15, 0, 500000, tzinfo=CST)),
        ("2026-11-20T10:15:00.123456789+08:00", datetime(2026, 11, 20, 10, 15, 0, 123456, CST)),
        (
            "2024-02-29T00:00:00-05:30",
            datetime(2024, 2, 29, tzinfo=timezone(-timedelta(hours=5.5))),
        ),
    ],
)
def test_rfc3339_times(text: str, expected: datetime) -> None:
    when = parse_event(encode(make_event(occurred_at=text))).occurred_at
    assert when == expected and when.utcoffset() == expected.utcoffset()


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-20T10:15:00",
        "2026-11-20 10:15:00+08:00",
        "2026-11-20",
        "2026-11-20T10:15+08:00",
        "2026-11-20T10:15:00+0800",
        "2026-11-20T10:15:00+08",
        "2026-11-20T10:15:00+08:60",
        "2026-11-20T10:15:00+24:00",
        "2026-11-20T10:15:00,5+08:00",
        "20261120T101500Z",
        "2026-W47-5T10:15:00Z",
        "26-11-20T10:15:00Z",
        "2026-11-20T10:15:00+08:00\n",
        "１９９０-11-20T10:15:00Z",
        "yesterday",
    ],
)
def test_not_rfc3339(text: str) -> None:
    assert rejection(make_event(occurred_at=text)) == (
        "occurred_at",
        "not an RFC 3339 time with offset",
    )


@pytest.mark.parametrize(
    "text",
    [
        "2025-02-29T10:15:00+08:00",
        "2100-02-29T10:15:00+08:00",
        "2026-13-01T10:15:00+08:00",
        "2026-04-31T10:15:00+08:00",
        "2026-11-20T24:00:00+08:00",
        "2026-11-20T10:60:00+08:00",
        "2016-12-31T23:59:60Z",
        "0000-01-01T00:00:00Z",
    ],
)
def test_impossible_dates(text: str) -> None:
    assert rejection(make_event(occurred_at=text)) == ("occurred_at", "impossible date")


@pytest.mark.parametrize(
    "text",
    [
        "1969-12-31T23:59:59Z",
        "1970-01-01T07:59:59+08:00",
        "2100-01-01T00:00:00Z",
        "0001-01-01T00:00:00+08:00",
        "9999-12-31T23:59:59-23:59",
        "0001-01-01T00:00:00+23:59",
    ],
)
def test_times_outside_the_engines_range(text: str) -> None:
    assert rejection(make_event(occurred_at=text)) == (
        "occurred_at",
        "out of range (must be from 1970 to 2099 UTC)",
    )


def test_edges_of_the_range() -> None:
    for text in ("1970-01-01T00:00:00Z", "1970-01-01T08:00:00+08:00", "2099-12-31T23:59:59Z"):
        assert parse_event(encode(make_event(occurred_at=text))).occurred_at.year in (1970, 2099)


# ---------------------------------------------------------------- id_number, region_code


def test_resident_id_problems_name_the_id_number() -> None:
    valid = strategies.valid_resident_id
    cases = {
        "1101051949123100": "must be 18 characters",
        "1101051949123100AX": "must be 17 digits and a check digit",
        "110105194912310021": "bad check digit",
        valid("99"): "unknown province code '99'",
        valid(birth="20230229"): "impossible birth date '20230229'",
        valid(birth="19000229"): "impossible birth date '19000229'",
    }
    for number, reason in cases.items():
        assert rejection(make_event(id_number=number)) == ("id_number", reason)
    assert parse_event(encode(make_event(id_number=valid(birth="20000229")))).id_province == "11"


def test_lowercase_x_is_normalised() -> None:
    event = parse_event(encode(make_event(id_number="11010519491231002x")))
    assert event.id_number == "11010519491231002X"


def test_other_ids() -> None:
    event = parse_event(encode(make_event(id_type="other", id_number="E12345678")))
    assert event.id_number == "E12345678"
    assert rejection(make_event(id_type="other", id_number="e12345678")) == (
        "id_number",
        "must contain only A-Z, 0-9 and '-'",
    )
    assert rejection(make_event(id_type="other", id_number="A" * 33)) == (
        "id_number",
        "must be 1 to 32 characters",
    )
    # A resident number checked as `other`: valid as 18 characters of A-Z0-9.
    assert parse_event(encode(make_event(id_type="other"))).id_province is None


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("990102", "unknown province code '99'"),
        ("000000", "unknown province code '00'"),
        ("62010", "must be 6 digits"),
        ("6201020", "must be 6 digits"),
        ("62O102", "must be 6 digits"),
        ("６２０１０２", "must be 6 digits"),
    ],
)
def test_region_code(code: str, reason: str) -> None:
    assert rejection(make_event(region_code=code)) == ("region_code", reason)
    delivery = {"method": "mail", "region_code": code}
    assert rejection(make_event(delivery=delivery)) == ("delivery.region_code", reason)


def test_a_province_level_region_code_is_valid() -> None:
    assert parse_event(encode(make_event(region_code="620000"))).outlet_province == "62"


# ---------------------------------------------------------------- per event type


def test_sim_activate_needs_msisdn_and_sim_kind() -> None:
    assert rejection(make_event(msisdn=DROP)) == ("msisdn", "missing")
    assert rejection(make_event(sim_kind=DROP)) == ("sim_kind", "missing")
    assert rejection(make_event(msisdn="")) == ("msisdn", "must not be empty")


def test_sim_cancel_needs_msisdn_only() -> None:
    cancel = parse_event(encode(make_event(event_type="sim.cancel", sim_kind=DROP)))
    assert cancel.sim_kind is None
    assert rejection(make_event(event_type="sim.cancel", msisdn=DROP)) == ("msisdn", "missing")
    assert rejection(make_event(event_type="sim.cancel", sim_kind="x"))[0] == "sim_kind"


def test_sim_events_need_no_account() -> None:
    assert parse_event(encode(make_event(account_id=DROP))).account_id is None
    with_account = parse_event(encode(make_event(account_id="6222", account_kind="payment")))
    assert with_account.account_kind == "payment"


def test_bank_open_needs_account_id_and_kind() -> None:
    event = parse_event(encode(bank_event()))
    assert (event.account_id, event.account_kind, event.msisdn) == (
        "6222020000000001",
        "personal",
        None,
    )
    assert rejection(bank_event(account_id=DROP)) == ("account_id", "missing")
    assert rejection(bank_event(account_kind=DROP)) == ("account_kind", "missing")
    assert rejection(bank_event(account_id="")) == ("account_id", "must not be empty")


def test_bank_close_needs_account_id_only() -> None:
    event = parse_event(encode(bank_event(event_type="bank.close", account_kind=DROP)))
    assert event.account_kind is None
    assert rejection(bank_event(event_type="bank.close", account_id=DROP)) == (
        "account_id",
        "missing",
    )


def test_account_class_is_optional_and_one_of_three() -> None:
    assert parse_event(encode(bank_event())).account_class is None
    assert parse_event(encode(bank_event(account_class="I"))).account_class == "I"
    closed = parse_event(encode(bank_event(event_type="bank.close", account_class="III")))
    assert closed.account_class == "III"
    assert rejection(bank_event(account_class="IV")) == (
        "account_class",
        "unknown value 'IV' (expected one of: I, II, III)",
    )
    assert rejection(bank_event(account_class="i"))[0] == "account_class"
    assert rejection(bank_event(account_class=1)) == ("account_class", "must be a string")


def test_check_id_is_kept() -> None:
    assert parse_event(encode(make_event())).check_id is None
    event = parse_event(encode(make_event(check_id="CMCC-GS-chk-000981")))
    assert event.check_id == "CMCC-GS-chk-000981"
    again = pseudonymise(event, PSEUDONYMIZER)
    assert again.check_id == "CMCC-GS-chk-000981"
    assert encode_event(event).count(b'"check_id":"CMCC-GS-chk-000981"') == 1


def test_bank_events_may_carry_a_msisdn() -> None:
    assert parse_event(encode(bank_event(msisdn="13900000000"))).msisdn == "13900000000"


# ---------------------------------------------------------------- delivery


def test_mail_delivery_needs_a_region_code() -> None:
    assert rejection(make_event(delivery={"method": "mail"})) == (
        "delivery.region_code",
        "missing",
    )
    assert rejection(make_event(delivery={"method": "mail", "region_code": ""})) == (
        "delivery.region_code",
        "must not be empty",
    )
    assert rejection(make_event(delivery={"method": "mail", "region_code": 530102})) == (
        "delivery.region_code",
        "must be a string",
    )


def test_pickup_delivery() -> None:
    event = parse_event(encode(make_event(delivery={"method": "pickup"})))
    assert event.delivery == Delivery("pickup")
    assert event.delivery_province is None
    with_region = parse_event(
        encode(make_event(delivery={"method": "pickup", "region_code": "620102"}))
    )
    assert with_region.delivery_province == "62"


def test_delivery_problems() -> None:
    assert rejection(make_event(delivery={})) == ("delivery.method", "missing")
    assert rejection(make_event(delivery={"method": None})) == ("delivery.method", "missing")
    bad_key = {"method": "pickup", "address_key": 7}
    assert rejection(make_event(delivery=bad_key)) == ("delivery.address_key", "must be a string")
    assert parse_event(encode(make_event(delivery=None))).delivery is None


# ---------------------------------------------------------------- optional and extra fields


def test_optional_fields_may_be_absent_null_or_empty() -> None:
    optional = ("agent_id", "device_id", "contact_phone", "delivery")
    absent = parse_event(encode(make_event(**dict.fromkeys(optional, DROP))))
    null = parse_event(encode(make_event(**dict.fromkeys(optional, None))))
    empty = parse_event(encode(make_event(**dict.fromkeys(optional[:3], ""), delivery=None)))
    assert absent == null == empty
    assert (absent.agent_id, absent.device_id, absent.contact_phone) == (None, None, None)


def test_empty_address_key_counts_as_absent() -> None:
    event = parse_event(encode(make_event(delivery={"method": "pickup", "address_key": ""})))
    assert event.delivery == Delivery("pickup")


def test_unknown_extra_fields_are_accepted_and_ignored() -> None:
    extras = {"note": "x", "__class__": 1, "nested": {"a": [1, 2]}, "id_province": "99"}
    event = parse_event(encode(make_event(**extras)))
    assert event == parse_event(encode(make_event()))
    delivery = {"method": "mail", "region_code": "530102", "courier": "SF"}
    assert parse_event(encode(make_event(delivery=delivery))).delivery == Delivery("mail", "530102")


def test_duplicate_keys_take_the_last_value() -> None:
    raw = encode(make_event()).replace(b'"channel":"online"', b'"channel":"x","channel":"online"')
    assert parse_event(raw).channel == "online"


# ---------------------------------------------------------------- order of validation


def test_the_first_problem_in_contract_order_is_reported() -> None:
    assert rejection({}) == ("schema", "missing")
    assert rejection(make_event(event_type="x", source=DROP)) == rejection(
        make_event(event_type="x")
    )
    assert rejection(make_event(occurred_at="x", id_number="1"))[0] == "occurred_at"
    assert rejection(make_event(region_code="x", channel="x"))[0] == "region_code"
    assert rejection(make_event(agent_id=1, channel="x"))[0] == "agent_id"
    assert rejection(make_event(msisdn=DROP, delivery={}))[0] == "msisdn"
    assert rejection(make_event(delivery={}, device_id=1))[0] == "delivery.method"


def test_a_wrong_id_type_is_reported_before_the_id_number() -> None:
    assert rejection(make_event(id_type="passport", id_number="x")) == (
        "id_type",
        "unknown value 'passport' (expected one of: other, resident_id)",
    )


def test_invalid_event_is_a_duanka_error_and_pickles() -> None:
    error = InvalidEvent("delivery.region_code", "missing")
    assert isinstance(error, DuankaError)
    assert str(error) == "delivery.region_code: missing"
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.field, copy.reason, str(copy)) == (error.field, error.reason, str(error))


# ---------------------------------------------------------------- encoding


def test_encode_event_writes_the_contract_json() -> None:
    event = parse_event(encode(make_event()))
    assert orjson.loads(encode_event(event)) == make_event()
    assert list(orjson.loads(encode_event(event))) == list(make_event())


def test_encode_event_leaves_out_absent_optionals() -> None:
    event = parse_event(
        encode(bank_event(agent_id=DROP, device_id=None, delivery={"method": "pickup"}))
    )
    obj = orjson.loads(encode_event(event))
    for absent in ("agent_id", "msisdn", "sim_kind", "device_id"):
        assert absent not in obj
    assert obj["delivery"] == {"method": "pickup"}


@settings(max_examples=300, deadline=None)
@given(event=strategies.valid_events())
def test_valid_events_round_trip(event: Event) -> None:
    again = parse_event(encode_event(event))
    assert again == event
    assert again.occurred_at.utcoffset() == event.occurred_at.utcoffset()


@settings(max_examples=100, deadline=None)
@given(obj=strategies.valid_event_objects(), extra=strategies.json_values)
def test_extra_fields_never_change_the_event(obj: dict[str, Any], extra: object) -> None:
    assert parse_event(encode(obj | {"x-extra": extra})) == parse_event(encode(obj))


# ---------------------------------------------------------------- robustness


def parses_or_rejects(raw: bytes) -> None:
    """parse_event may only return an Event or raise InvalidEvent; an Event re-encodes."""
    try:
        event = parse_event(raw)
    except InvalidEvent as error:
        assert error.field and error.reason
        return
    assert parse_event(encode_event(event)) == event


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=300))
def test_arbitrary_bytes_are_rejected_cleanly(raw: bytes) -> None:
    parses_or_rejects(raw)


@settings(max_examples=300, deadline=None)
@given(value=strategies.json_values)
def test_arbitrary_json_is_rejected_cleanly(value: object) -> None:
    parses_or_rejects(encode(value))


MUTABLE_KEYS = (
    *STRING_FIELDS,
    "delivery",
    "delivery.method",
    "delivery.region_code",
    "delivery.address_key",
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    obj=strategies.valid_event_objects(),
    key=st.sampled_from(MUTABLE_KEYS),
    value=strategies.json_values | st.just(DROP),
)
def test_one_mutated_field_never_breaks_the_parser(
    obj: dict[str, Any], key: str, value: object
) -> None:
    target = obj
    if key.startswith("delivery."):
        target = obj.setdefault("delivery", {})
        key = key.removeprefix("delivery.")
    if value is DROP:
        target.pop(key, None)
    else:
        target[key] = value
    parses_or_rejects(encode(obj))


@settings(max_examples=200, deadline=None)
@given(obj=strategies.valid_event_objects(), cut=st.integers(min_value=0))
def test_truncated_records_are_rejected_cleanly(obj: dict[str, Any], cut: int) -> None:
    raw = encode(obj)
    parses_or_rejects(raw[: cut % max(len(raw), 1)])


# ---------------------------------------------------------------- pseudonymous events


def test_pseudonymise_drops_the_raw_number() -> None:
    event = parse_event(encode(make_event()))
    redacted = pseudonymise(event, PSEUDONYMIZER)
    assert not hasattr(redacted, "id_number")
    assert redacted.subject_key == PSEUDONYMIZER.subject_key("resident_id", "11010519491231002X")
    assert redacted.id_masked == "1101**********002X"
    assert (redacted.id_province, redacted.id_prefecture) == ("11", "1101")
    row = orjson.dumps(pseudonymous_row(redacted))
    assert b"11010519491231002X" not in row
    assert b"19491231" not in row


def test_pseudonymise_keeps_a_keyed_token_of_the_address_key() -> None:
    mailed = {"method": "mail", "region_code": "530102", "address_key": "a1f3c9"}
    redacted = pseudonymise(parse_event(encode(make_event(delivery=mailed))), PSEUDONYMIZER)
    assert redacted.delivery is not None
    assert redacted.delivery.address_key == PSEUDONYMIZER.token("address", "a1f3c9")
    assert (redacted.delivery.method, redacted.delivery.region_code) == ("mail", "530102")
    assert b"a1f3c9" not in orjson.dumps(pseudonymous_row(redacted))


def test_lowercase_and_uppercase_x_get_one_pseudonym() -> None:
    upper = parse_event(encode(make_event()))
    lower = parse_event(encode(make_event(id_number="11010519491231002x")))
    assert pseudonymise(upper, PSEUDONYMIZER) == pseudonymise(lower, PSEUDONYMIZER)


@settings(max_examples=200, deadline=None)
@given(event=strategies.valid_events())
def test_pseudonymous_events_keep_the_derived_facts(event: Event) -> None:
    redacted = pseudonymise(event, PSEUDONYMIZER)
    for fact in ("outlet_province", "is_nonlocal", "delivery_province", "is_opening"):
        assert getattr(redacted, fact) == getattr(event, fact)
    assert (redacted.id_province, redacted.id_prefecture) == (
        event.id_province,
        event.id_prefecture,
    )


@settings(max_examples=200, deadline=None)
@given(event=strategies.pseudonymous_events())
def test_pseudonymous_events_round_trip(event: PseudonymousEvent) -> None:
    again = pseudonymous_from_row(orjson.loads(orjson.dumps(pseudonymous_row(event))))
    assert again == event
    assert again.occurred_at.utcoffset() == event.occurred_at.utcoffset()
    # the time's number and text, cached once per event, are the datetime's own
    for one in (event, again):
        assert one.epoch() == one.occurred_at.timestamp()
        assert one.iso() == one.occurred_at.isoformat()


@pytest.mark.parametrize("row", [None, [], {}, "x", [1] * 21, ["x"] * 20])
def test_pseudonymous_from_row_rejects_other_rows(row: object) -> None:
    with pytest.raises(InvalidEvent) as caught:
        pseudonymous_from_row(row)
    assert caught.value.field == "record"


def test_pseudonymous_from_row_checks_types() -> None:
    redacted = pseudonymise(parse_event(encode(make_event())), PSEUDONYMIZER)
    row = pseudonymous_row(redacted)
    for index, value in ((0, 1), (2, "2026-11-20T10:15:00"), (16, "x"), (16, ["mail"])):
        changed = list(row)
        changed[index] = value
        with pytest.raises(InvalidEvent):
            pseudonymous_from_row(changed)

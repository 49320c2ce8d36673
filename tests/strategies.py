"""Hypothesis strategies and small builders for duanka records, for every test suite.

`import strategies` works from any test module (tests/conftest.py puts this
directory on sys.path).
"""

from __future__ import annotations

import copy
from datetime import date, datetime, timedelta, timezone
from typing import Any

import orjson
from hypothesis import strategies as st

from rules.alert import SEVERITIES, SUBJECT_KINDS, Alert, Evidence, Subject
from rules.event import (
    ACCOUNT_CLASSES,
    ACCOUNT_KINDS,
    CHANNELS,
    SIM_KINDS,
    VERIFICATIONS,
    Delivery,
    Event,
    PseudonymousEvent,
    encode_event,
    pseudonymise,
)
from rules.idnumber import check_digit
from rules.pseudonym import DEV_KEY, Pseudonymizer
from rules.regions import PROVINCES

PROVINCE_CODES = sorted(PROVINCES)

# The example event of the contract (EVENTS.md), as a JSON object.
CONTRACT_EXAMPLE: dict[str, object] = {
    "schema": "duanka.event/1",
    "event_id": "CMCC-GS-20261120-000123",
    "event_type": "sim.activate",
    "occurred_at": "2026-11-20T10:15:00+08:00",
    "source": "CMCC-GS",
    "id_type": "resident_id",
    "id_number": "11010519491231002X",
    "region_code": "620102",
    "outlet_id": "GS-LZ-0012",
    "agent_id": "A-77812",
    "channel": "online",
    "verification": "remote_face",
    "msisdn": "13912345678",
    "sim_kind": "personal",
    "delivery": {"method": "mail", "region_code": "530102", "address_key": "a1f3c9"},
    "device_id": "dev-88c1",
    "contact_phone": "13800000000",
}

DROP: Any = object()
"""Pass as an override to `make_event` to leave that field out."""


def make_event(**overrides: object) -> dict[str, object]:
    """A valid sim.activate event (the contract's example) with `overrides` applied."""
    event = copy.deepcopy(CONTRACT_EXAMPLE)
    for key, value in overrides.items():
        if value is DROP:
            event.pop(key, None)
        else:
            event[key] = value
    return event


def encode(obj: object) -> bytes:
    """JSON bytes of a test record."""
    return orjson.dumps(obj)


def valid_resident_id(province: str = "11", birth: str = "19900101", seq: str = "123") -> str:
    """A valid resident id number: address code `province` + "0101", then birth, seq, check."""
    first17 = f"{province}0101{birth}{seq}"
    return first17 + check_digit(first17)


def digits(n: int) -> st.SearchStrategy[str]:
    return st.text("0123456789", min_size=n, max_size=n)


province_codes = st.sampled_from(PROVINCE_CODES)
region_codes = st.builds(str.__add__, province_codes, digits(4))


@st.composite
def resident_ids(draw: st.DrawFn, province: st.SearchStrategy[str] = province_codes) -> str:
    """Valid resident ids: any known province, any real birth date (0001 to 9999)."""
    first17 = draw(province) + draw(digits(4)) + yyyymmdd(draw(st.dates())) + draw(digits(3))
    return first17 + check_digit(first17)


def yyyymmdd(day: date) -> str:
    """The date as 8 digits; strftime("%Y") does not pad years before 1000."""
    return f"{day.year:04d}{day.month:02d}{day.day:02d}"


other_ids = st.from_regex(r"[A-Z0-9-]{1,32}", fullmatch=True)
texts = st.text(st.characters(codec="utf-8"), min_size=1, max_size=24)
offsets = st.integers(-(23 * 60 + 59), 23 * 60 + 59).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
# Local times a day inside the accepted range, so any offset keeps them in it.
event_times = st.datetimes(
    min_value=datetime(1970, 1, 2),  # noqa: DTZ001 - bounds of a tz-aware strategy
    max_value=datetime(2099, 12, 30),  # noqa: DTZ001
    timezones=offsets,
)


def optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


@st.composite
def deliveries(draw: st.DrawFn) -> Delivery:
    method = draw(st.sampled_from(["pickup", "mail"]))
    region = draw(region_codes) if method == "mail" else draw(optional(region_codes))
    return Delivery(method, region, draw(optional(texts)))


@st.composite
def valid_events(draw: st.DrawFn) -> Event:
    """Valid events of all four types, optional fields present or not."""
    event_type = draw(st.sampled_from(["sim.activate", "sim.cancel", "bank.open", "bank.close"]))
    id_type = draw(st.sampled_from(["resident_id", "other"]))
    is_sim = event_type.startswith("sim.")
    return Event(
        event_id=draw(texts),
        event_type=event_type,
        occurred_at=draw(event_times),
        source=draw(texts),
        id_type=id_type,
        id_number=draw(resident_ids() if id_type == "resident_id" else other_ids),
        region_code=draw(region_codes),
        outlet_id=draw(st.just("online") | texts),
        channel=draw(st.sampled_from(sorted(CHANNELS))),
        verification=draw(st.sampled_from(sorted(VERIFICATIONS))),
        agent_id=draw(optional(texts)),
        msisdn=draw(texts if is_sim else optional(texts)),
        sim_kind=draw(_enum(SIM_KINDS, required=event_type == "sim.activate")),
        delivery=draw(optional(deliveries())),
        account_id=draw(optional(texts) if is_sim else texts),
        account_kind=draw(_enum(ACCOUNT_KINDS, required=event_type == "bank.open")),
        device_id=draw(optional(texts)),
        contact_phone=draw(optional(texts)),
        account_class=draw(_enum(ACCOUNT_CLASSES, required=False)),
        check_id=draw(optional(texts)),
    )


def _enum(values: frozenset[str], required: bool) -> st.SearchStrategy[str | None]:
    choice = st.sampled_from(sorted(values))
    return choice if required else optional(choice)


def valid_event_objects() -> st.SearchStrategy[dict[str, Any]]:
    """Valid events as the JSON objects a producer would send."""
    return valid_events().map(lambda e: orjson.loads(encode_event(e)))


def pseudonymous_events() -> st.SearchStrategy[PseudonymousEvent]:
    return valid_events().map(lambda e: pseudonymise(e, Pseudonymizer(DEV_KEY)))


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(codec="utf-8"), max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)


@st.composite
def alerts(draw: st.DrawFn) -> Alert:
    """Alerts that follow the contract, with JSON facts and 1 to 4 evidence events."""
    evidence = draw(st.lists(pseudonymous_events(), min_size=1, max_size=4))
    last = evidence[-1]
    return Alert(
        alert_id=draw(digits(32)),
        rule_id=draw(texts),
        severity=draw(st.sampled_from(SEVERITIES)),
        action=draw(st.sampled_from(["review", "block", "report"])),
        subject=Subject(
            kind=draw(st.sampled_from(SUBJECT_KINDS)),
            key=last.subject_key,
            id_masked=draw(optional(st.just(last.id_masked))),
            id_province=last.id_province,
        ),
        event_time=last.occurred_at,
        detected_at=draw(event_times),
        source=last.source,
        region_code=last.region_code,
        summary_zh=draw(texts),
        summary_en=draw(texts),
        facts=draw(st.dictionaries(texts, json_values, max_size=5)),
        evidence=tuple(Evidence.from_event(e) for e in evidence),
    )

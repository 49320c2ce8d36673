"""The input event of the wire contract (`duanka.event/1`): model, validation, codecs.

`parse_event` turns one Kafka record into an `Event` or raises `InvalidEvent`
naming the first field that breaks the contract, checked in the order of the
contract's table, so a record always gets the same single reason.
`pseudonymise` then drops the raw id number: `PseudonymousEvent` is what the
rules, the rule state and the internal topic see.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from rules.errors import InvalidEvent
from rules.idnumber import RESIDENT_ID, id_number_problem, normalise_id_number
from rules.pseudonym import Pseudonymizer, mask_id
from rules.regions import region_code_problem

EVENT_SCHEMA = "duanka.event/1"
CHECK_SCHEMA = "duanka.check/1"
CHECK_PREFIX = "check:"  # the event id a check's opening has while it is only asked about
MAX_RECORD_BYTES = 64 * 1024

EVENT_TYPES = frozenset({"sim.activate", "sim.cancel", "bank.open", "bank.close"})
ID_TYPES = frozenset({"resident_id", "other"})
CHANNELS = frozenset({"counter", "online", "dealer"})
VERIFICATIONS = frozenset({"in_person", "remote_face", "none"})
SIM_KINDS = frozenset({"personal", "iot"})
ACCOUNT_KINDS = frozenset({"personal", "corporate", "payment"})
ACCOUNT_CLASSES = frozenset({"I", "II", "III"})
DELIVERY_METHODS = frozenset({"pickup", "mail"})
OPENING_TYPES = frozenset({"sim.activate", "bank.open"})

# Event times the engine can do window arithmetic and Kafka timestamps on.
EARLIEST_TIME = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_TIME = datetime(2100, 1, 1, tzinfo=UTC)

# RFC 3339 date-time; "t" and "z" may be lowercase (its ABNF is case-insensitive).
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?"
    r"(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
)
_QUOTE_LIMIT = 40

# Events are made several times per input record (parsed, pseudonymised, and
# read back by each stage). A frozen dataclass's __init__ sets each field with
# object.__setattr__ and costs 3.7 us for these 21 fields, a plain one 0.4 us,
# so these are plain slotted dataclasses that no code changes after making them.


@dataclass(slots=True)
class Delivery:
    """How the SIM or card reaches the customer."""

    method: str
    region_code: str | None = None
    address_key: str | None = None

    @property
    def province(self) -> str | None:
        """The delivery province (first 2 digits of region_code), if given."""
        return self.region_code[:2] if self.region_code else None


@dataclass(slots=True)
class Event:
    """A validated `duanka.event/1` record. Holds the raw id number."""

    event_id: str
    event_type: str
    occurred_at: datetime
    source: str
    id_type: str
    id_number: str
    region_code: str
    outlet_id: str
    channel: str
    verification: str
    agent_id: str | None = None
    msisdn: str | None = None
    sim_kind: str | None = None
    delivery: Delivery | None = None
    account_id: str | None = None
    account_kind: str | None = None
    device_id: str | None = None
    contact_phone: str | None = None
    account_class: str | None = None  # I, II or III; None: unknown
    check_id: str | None = None  # the pre-opening check this opening followed

    @property
    def id_province(self) -> str | None:
        """First 2 digits of a resident id number; None for other ids."""
        return self.id_number[:2] if self.id_type == RESIDENT_ID else None

    @property
    def id_prefecture(self) -> str | None:
        """First 4 digits of a resident id number; None for other ids."""
        return self.id_number[:4] if self.id_type == RESIDENT_ID else None

    @property
    def outlet_province(self) -> str:
        return self.region_code[:2]

    @property
    def is_nonlocal(self) -> bool:
        """外地身份证: a resident id from another province than the outlet's."""
        return self.id_type == RESIDENT_ID and self.id_number[:2] != self.region_code[:2]

    @property
    def delivery_province(self) -> str | None:
        return self.delivery.province if self.delivery else None

    @property
    def is_opening(self) -> bool:
        return self.event_type in OPENING_TYPES


@dataclass(slots=True)
class PseudonymousEvent:
    """An event as the rules see it: no personal data, only pseudonyms, tokens and masks.

    The id number is replaced by its pseudonym (`subject_key`), and the phone
    number, account number, device id, contact phone and the delivery's
    address key by keyed tokens (`*_key`, made like the pseudonym): equal
    values give equal tokens, so the rules can still tell that people share
    a device, a phone or an address. Device
    id and contact phone are kept masked too, for the alerts that name them.
    """

    event_id: str
    event_type: str
    occurred_at: datetime
    source: str
    id_type: str
    subject_key: str
    id_masked: str
    id_province: str | None
    id_prefecture: str | None
    region_code: str
    outlet_id: str
    channel: str
    verification: str
    agent_id: str | None = None
    msisdn_key: str | None = None
    sim_kind: str | None = None
    delivery: Delivery | None = None
    account_key: str | None = None
    account_kind: str | None = None
    device_key: str | None = None
    contact_key: str | None = None
    device_masked: str | None = None
    contact_masked: str | None = None
    account_class: str | None = None
    check_id: str | None = None
    # `occurred_at` as seconds since the epoch and as ISO 8601 text, each
    # worked out once (a datetime with an offset takes 1-3 us for either)
    _epoch: float | None = field(default=None, init=False, compare=False, repr=False)
    _iso: str | None = field(default=None, init=False, compare=False, repr=False)

    def epoch(self) -> float:
        """`occurred_at` in seconds since the epoch."""
        epoch = self._epoch
        if epoch is None:
            epoch = self._epoch = self.occurred_at.timestamp()
        return epoch

    def iso(self) -> str:
        """`occurred_at` as `datetime.isoformat` writes it."""
        iso = self._iso
        if iso is None:
            iso = self._iso = self.occurred_at.isoformat()
        return iso

    @property
    def outlet_province(self) -> str:
        return self.region_code[:2]

    @property
    def is_nonlocal(self) -> bool:
        """外地身份证: a resident id from another province than the outlet's."""
        return self.id_province is not None and self.id_province != self.region_code[:2]

    @property
    def delivery_province(self) -> str | None:
        return self.delivery.province if self.delivery else None

    @property
    def is_opening(self) -> bool:
        return self.event_type in OPENING_TYPES


# ---------------------------------------------------------------- parsing


def parse_event(raw: bytes | None) -> Event:
    """Validate one record of an input topic; raises InvalidEvent with the first problem.

    A null record (a tombstone, `raw is None`) is rejected too.
    """
    if raw is None:
        raise InvalidEvent("record", "no value (a null record)")
    return _event_from(_json_object(raw))


def _json_object(raw: bytes) -> dict[str, Any]:
    """The JSON object of a record of at most 64 KiB; InvalidEvent("record", ...) if not one."""
    if len(raw) > MAX_RECORD_BYTES:
        raise InvalidEvent("record", f"larger than 64 KiB ({len(raw)} bytes)")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidEvent("record", "not valid JSON") from None
    if type(obj) is not dict:
        raise InvalidEvent("record", "not a JSON object")
    return obj


def parse_check(raw: bytes | None) -> Event:
    """Validate a pre-opening check (`duanka.check/1`); raises InvalidEvent with the first problem.

    A check is the `sim.activate` or `bank.open` it asks about, with
    `check_id` in place of `event_id` (CHECK.md), validated like an event.
    The opening it gives has event id `check:` + check_id.
    """
    if raw is None or len(raw) == 0:
        raise InvalidEvent("record", "no body")
    obj = _json_object(raw)
    schema = _required(obj, "schema")
    if schema != CHECK_SCHEMA:
        raise InvalidEvent("schema", f"unknown value {_quote(schema)} (expected {CHECK_SCHEMA})")
    check_id = _required(obj, "check_id")
    if obj.get("event_type") in ("sim.cancel", "bank.close"):
        raise InvalidEvent(
            "event_type", "a check asks about an opening (expected one of: bank.open, sim.activate)"
        )
    obj = obj | {"event_id": CHECK_PREFIX + check_id, "check_id": check_id}
    return _event_from(obj, check=True)


def _event_from(obj: dict[str, Any], check: bool = False) -> Event:
    if not check:
        _check_schema(obj)
    event_id = _required(obj, "event_id")
    event_type = _required_enum(obj, "event_type", EVENT_TYPES)
    occurred_at = _occurred_at(obj)
    source = _required(obj, "source")
    id_type = _required_enum(obj, "id_type", ID_TYPES)
    id_number = _id_number(obj, id_type)
    region_code = _region_code("region_code", _required(obj, "region_code"))
    outlet_id = _required(obj, "outlet_id")
    agent_id = _optional(obj, "agent_id")
    channel = _required_enum(obj, "channel", CHANNELS)
    verification = _required_enum(obj, "verification", VERIFICATIONS)
    is_sim = event_type.startswith("sim.")
    msisdn = _required(obj, "msisdn") if is_sim else _optional(obj, "msisdn")
    sim_kind = _enum_if(obj, "sim_kind", SIM_KINDS, event_type == "sim.activate")
    delivery = _delivery(obj.get("delivery"))
    account_id = _optional(obj, "account_id") if is_sim else _required(obj, "account_id")
    account_kind = _enum_if(obj, "account_kind", ACCOUNT_KINDS, event_type == "bank.open")
    account_class = _enum_if(obj, "account_class", ACCOUNT_CLASSES, False)
    check_id = _optional(obj, "check_id")
    device_id = _optional(obj, "device_id")
    contact_phone = _optional(obj, "contact_phone")
    return Event(
        event_id,
        event_type,
        occurred_at,
        source,
        id_type,
        id_number,
        region_code,
        outlet_id,
        channel,
        verification,
        agent_id,
        msisdn,
        sim_kind,
        delivery,
        account_id,
        account_kind,
        device_id,
        contact_phone,
        account_class,
        check_id,
    )


def _check_schema(obj: dict[str, Any]) -> None:
    schema = _required(obj, "schema")
    if schema != EVENT_SCHEMA:
        raise InvalidEvent("schema", f"unknown value {_quote(schema)} (expected {EVENT_SCHEMA})")


def _required(obj: dict[str, Any], key: str, prefix: str = "") -> str:
    """A required string: absent and null are "missing", "" is invalid."""
    value = obj.get(key)
    if type(value) is str and value:
        return value
    if value is None:
        raise InvalidEvent(prefix + key, "missing")
    if type(value) is not str:
        raise InvalidEvent(prefix + key, "must be a string")
    raise InvalidEvent(prefix + key, "must not be empty")


def _optional(obj: dict[str, Any], key: str, prefix: str = "") -> str | None:
    """An optional string: absent, null and "" all mean "not given".

    "" is not kept: a linking attribute sent empty by many outlets must not
    link their customers to one another.
    """
    value = obj.get(key)
    if type(value) is str:
        return value or None
    if value is None:
        return None
    raise InvalidEvent(prefix + key, "must be a string")


def _required_enum(obj: dict[str, Any], key: str, allowed: frozenset[str], prefix: str = "") -> str:
    value = obj.get(key)
    if type(value) is str and value in allowed:
        return value
    raise InvalidEvent(prefix + key, _unknown_value(_required(obj, key, prefix), allowed))


def _enum_if(obj: dict[str, Any], key: str, allowed: frozenset[str], required: bool) -> str | None:
    """An enum that `required` makes mandatory; when optional, checked only if given."""
    if required:
        return _required_enum(obj, key, allowed)
    value = _optional(obj, key)
    if value is not None and value not in allowed:
        raise InvalidEvent(key, _unknown_value(value, allowed))
    return value


def _unknown_value(value: str, allowed: frozenset[str]) -> str:
    return f"unknown value {_quote(value)} (expected one of: {', '.join(sorted(allowed))})"


def _quote(value: str) -> str:
    """The value for an error message: quoted, escaped, and cut if long."""
    if len(value) > _QUOTE_LIMIT:
        value = value[:_QUOTE_LIMIT] + "…"
    return repr(value)


def _occurred_at(obj: dict[str, Any]) -> datetime:
    return parse_time(_required(obj, "occurred_at"), "occurred_at")


def parse_time(text: str, field: str) -> datetime:
    """An RFC 3339 time with an offset, from 1970 to 2099 UTC; InvalidEvent(field, ...) if not."""
    if not _RFC3339.fullmatch(text):
        raise InvalidEvent(field, "not an RFC 3339 time with offset")
    try:
        when = datetime.fromisoformat(text.upper())
    except ValueError:
        raise InvalidEvent(field, "impossible date") from None
    # The year test alone settles all but the edge years, and is much cheaper
    # than comparing datetimes in different time zones.
    if not 1971 <= when.year <= 2098 and not EARLIEST_TIME <= when < LATEST_TIME:
        raise InvalidEvent(field, "out of range (must be from 1970 to 2099 UTC)")
    return when


def _id_number(obj: dict[str, Any], id_type: str) -> str:
    id_number = normalise_id_number(id_type, _required(obj, "id_number"))
    problem = id_number_problem(id_type, id_number)
    if problem is not None:
        raise InvalidEvent("id_number", problem)
    return id_number


def _region_code(field: str, value: str) -> str:
    problem = region_code_problem(value)
    if problem is not None:
        raise InvalidEvent(field, problem)
    return value


def _delivery(value: object) -> Delivery | None:
    if value is None:
        return None
    if type(value) is not dict:
        raise InvalidEvent("delivery", "must be an object")
    method = _required_enum(value, "method", DELIVERY_METHODS, "delivery.")
    if method == "mail":
        region_code: str | None = _required(value, "region_code", "delivery.")
    else:
        region_code = _optional(value, "region_code", "delivery.")
    if region_code is not None:
        _region_code("delivery.region_code", region_code)
    return Delivery(method, region_code, _optional(value, "address_key", "delivery."))


# ---------------------------------------------------------------- encoding


def encode_event(event: Event) -> bytes:
    """The contract JSON of `event`; optional fields that are None are left out."""
    return orjson.dumps(_event_object(event))


def _event_object(event: Event) -> dict[str, object]:
    obj: dict[str, object] = {
        "schema": EVENT_SCHEMA,
        "event_id": event.event_id,
        "event_type": event.event_type,
        "occurred_at": event.occurred_at.isoformat(),
        "source": event.source,
        "id_type": event.id_type,
        "id_number": event.id_number,
        "region_code": event.region_code,
        "outlet_id": event.outlet_id,
        "agent_id": event.agent_id,
        "channel": event.channel,
        "verification": event.verification,
        "msisdn": event.msisdn,
        "sim_kind": event.sim_kind,
        "delivery": _delivery_object(event.delivery),
        "account_id": event.account_id,
        "account_kind": event.account_kind,
        "device_id": event.device_id,
        "contact_phone": event.contact_phone,
        "account_class": event.account_class,
        "check_id": event.check_id,
    }
    return _without_none(obj)


def _delivery_object(delivery: Delivery | None) -> dict[str, object] | None:
    if delivery is None:
        return None
    return _without_none(
        {
            "method": delivery.method,
            "region_code": delivery.region_code,
            "address_key": delivery.address_key,
        }
    )


def _without_none(obj: dict[str, object]) -> dict[str, object]:
    return {key: value for key, value in obj.items() if value is not None}


# ---------------------------------------------------------------- pseudonyms


def pseudonymise(event: Event, pseudonymizer: Pseudonymizer) -> PseudonymousEvent:
    """The event without personal data: pseudonym, tokens, masks and the facts rules need."""
    token = pseudonymizer.token
    delivery = event.delivery
    if delivery is not None and delivery.address_key is not None:
        # a source's address key is opaque, but the same for everyone who sees that address
        # at that source: the engine keeps its own keyed token of it, like a phone's
        delivery = Delivery(
            delivery.method, delivery.region_code, token("address", delivery.address_key)
        )
    return PseudonymousEvent(
        event.event_id,
        event.event_type,
        event.occurred_at,
        event.source,
        event.id_type,
        pseudonymizer.subject_key(event.id_type, event.id_number),
        mask_id(event.id_number),
        event.id_province,
        event.id_prefecture,
        event.region_code,
        event.outlet_id,
        event.channel,
        event.verification,
        event.agent_id,
        token("msisdn", event.msisdn),
        event.sim_kind,
        delivery,
        token("account", event.account_id),
        event.account_kind,
        token("device", event.device_id),
        token("phone", event.contact_phone),
        None if event.device_id is None else mask_id(event.device_id),
        None if event.contact_phone is None else mask_id(event.contact_phone),
        event.account_class,
        event.check_id,
    )


def pseudonymous_row(event: PseudonymousEvent) -> list[object]:
    """The event as a JSON array, field by field: how the worker's envelopes carry it."""
    delivery = event.delivery
    return [
        event.event_id,
        event.event_type,
        event.iso(),
        event.source,
        event.id_type,
        event.subject_key,
        event.id_masked,
        event.id_province,
        event.id_prefecture,
        event.region_code,
        event.outlet_id,
        event.channel,
        event.verification,
        event.agent_id,
        event.msisdn_key,
        event.sim_kind,
        None if delivery is None else [delivery.method, delivery.region_code, delivery.address_key],
        event.account_key,
        event.account_kind,
        event.device_key,
        event.contact_key,
        event.device_masked,
        event.contact_masked,
        event.account_class,
        event.check_id,
    ]


def pseudonymous_from_row(row: object) -> PseudonymousEvent:
    """Read back `pseudonymous_row`; anything else raises InvalidEvent("record", ...).

    The envelopes are the engine's own, so this checks types, not the contract's rules.
    """
    try:
        if type(row) is not list or len(row) != _ROW_LENGTH:
            raise ValueError("not a row")
        delivery = row[16]
        iso = _str(row[2])
        event = PseudonymousEvent(
            _str(row[0]),
            _str(row[1]),
            _aware(datetime.fromisoformat(iso)),
            _str(row[3]),
            _str(row[4]),
            _str(row[5]),
            _str(row[6]),
            _opt(row[7]),
            _opt(row[8]),
            _str(row[9]),
            _str(row[10]),
            _str(row[11]),
            _str(row[12]),
            _opt(row[13]),
            _opt(row[14]),
            _opt(row[15]),
            None if delivery is None else _delivery_back(delivery),
            _opt(row[17]),
            _opt(row[18]),
            _opt(row[19]),
            _opt(row[20]),
            _opt(row[21]),
            _opt(row[22]),
            _opt(row[23]),
            _opt(row[24]),
        )
    except (ValueError, TypeError, IndexError):
        raise InvalidEvent("record", "not a pseudonymous event row") from None
    event._iso = iso  # the row holds what `iso()` wrote
    return event


_ROW_LENGTH = 25


def _delivery_back(row: object) -> Delivery:
    if type(row) is not list or len(row) != 3:
        raise ValueError("not a delivery row")
    return Delivery(_str(row[0]), _opt(row[1]), _opt(row[2]))


def _str(value: object) -> str:
    if type(value) is not str:
        raise TypeError("expected a string")
    return value


def _opt(value: object) -> str | None:
    return None if value is None else _str(value)


def _aware(when: datetime) -> datetime:
    if when.tzinfo is None:
        raise ValueError("naive time")
    return when

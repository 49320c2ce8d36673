"""Builders for rule tests, so a test reads like the story it tells.

`ev(T0 + 2 * DAY, id=BEIJING[0])` is a valid sim.activate by that person at a
Gansu outlet, two days after T0; every field of the contract can be
overridden (`DROP` removes one). The default event is plain: a local ID,
verified in person, picked up at the counter, no linking attributes, so it
fires no rule unless the test adds what a rule looks for.

`import rulekit` works from any test module (tests/conftest.py puts this
directory on sys.path).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import fields, replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
from strategies import DROP, make_event

from rules.alert import Alert, Evidence, Subject, make_alert_id
from rules.config import RuleSettings
from rules.engine import Engine, Screening
from rules.event import PseudonymousEvent, parse_event, pseudonymise
from rules.idnumber import check_digit
from rules.pseudonym import Pseudonymizer, mask_id
from rules.state import encode_agent, encode_identity, encode_outlet

CST = timezone(timedelta(hours=8))
T0 = datetime(2026, 11, 20, 10, 0, tzinfo=CST)
DETECTED = datetime(2026, 12, 1, 0, 0, tzinfo=UTC)
SECOND = timedelta(seconds=1)
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)

PSEUDONYMIZER = Pseudonymizer(b"rulekit-test-key")
OUTLET = "GS-LZ-0012"
GANSU_REGION = "620102"  # the default outlet is in Gansu (62)
SIM_SOURCE = "CMCC-GS"
BANK_SOURCE = "ICBC-GS"

_event_numbers = itertools.count(1)


def resident(province: str, n: int = 1, prefecture: str = "01") -> str:
    """A valid resident id: person `n` (1..999) of prefecture `province + prefecture`."""
    first17 = f"{province}{prefecture}01" + "19900101" + f"{n:03d}"
    return first17 + check_digit(first17)


# Ten people each: from Gansu (local at the default outlet) and from Beijing (non-local).
GANSU = [resident("62", n) for n in range(1, 11)]
BEIJING = [resident("11", n) for n in range(1, 11)]


def key_of(id_number: str, id_type: str = "resident_id") -> str:
    """The subject key the engine gives this person."""
    return PSEUDONYMIZER.subject_key(id_type, id_number)


def ev(
    when: datetime | timedelta,
    event_type: str = "sim.activate",
    *,
    id: str = GANSU[0],  # the id number: reads well in the stories
    event_id: str | None = None,
    source: str | None = None,
    outlet: str = OUTLET,
    region: str = GANSU_REGION,
    **fields: Any,
) -> PseudonymousEvent:
    """A valid, pseudonymised event at `when` (a time, or an offset from T0)."""
    occurred_at = T0 + when if isinstance(when, timedelta) else when
    is_sim = event_type.startswith("sim.")
    source = source or (SIM_SOURCE if is_sim else BANK_SOURCE)
    event_id = event_id or f"{source}-{next(_event_numbers):06d}"
    obj: dict[str, Any] = {
        "event_id": event_id,
        "event_type": event_type,
        "occurred_at": occurred_at.isoformat(),
        "source": source,
        "id_number": id,
        "region_code": region,
        "outlet_id": outlet,
        "agent_id": DROP,
        "channel": "counter",
        "verification": "in_person",
        "msisdn": "13912345678" if is_sim else DROP,
        "sim_kind": "personal" if event_type == "sim.activate" else DROP,
        "account_id": DROP if is_sim else "6222020000000001",
        "account_kind": "personal" if event_type == "bank.open" else DROP,
        "delivery": DROP,
        "device_id": DROP,
        "contact_phone": DROP,
    }
    obj.update(fields)
    return pseudonymise(parse_event(orjson.dumps(make_event(**obj))), PSEUDONYMIZER)


def bank(when: datetime | timedelta, source: str = BANK_SOURCE, **fields: Any) -> PseudonymousEvent:
    """A bank.open at bank `source`."""
    return ev(when, "bank.open", source=source, **fields)


def mailed(region_code: str, address_key: str = "addr-1") -> dict[str, str]:
    """A `delivery` field: mailed to `region_code`."""
    return {"method": "mail", "region_code": region_code, "address_key": address_key}


def rules(**changes: dict[str, Any]) -> RuleSettings:
    """Default rule settings with some rules changed: `rules(sim_churn={"cancels": 2})`."""
    defaults = RuleSettings()
    known = {f.name for f in fields(RuleSettings)}
    for rule_id, values in changes.items():
        assert rule_id in known, rule_id
        defaults = replace(defaults, **{rule_id: replace(getattr(defaults, rule_id), **values)})
    return defaults


def only(rule_id: str, **values: Any) -> RuleSettings:
    """Settings with every rule but `rule_id` disabled (`values` change that one)."""
    changes: dict[str, dict[str, Any]] = {
        f.name: {"enabled": False} for f in fields(RuleSettings) if f.name != rule_id
    }
    changes[rule_id] = values
    return rules(**changes)


def engine(settings: RuleSettings | None = None) -> Engine:
    """An engine with a fixed clock, so `detected_at` is DETECTED."""
    return Engine(settings or RuleSettings(), clock=lambda: DETECTED)


def screening(settings: RuleSettings | None = None) -> Screening:
    return Screening(engine(settings))


def run(
    s: Screening, events: Iterable[PseudonymousEvent], rule_id: str | None = None
) -> list[Alert]:
    """Screen `events` in order; the alerts of `rule_id` (or all of them)."""
    alerts = [alert for event in events for alert in s.screen(event)]
    return [a for a in alerts if rule_id is None or a.rule_id == rule_id]


def evidence(*events: PseudonymousEvent) -> tuple[Evidence, ...]:
    return tuple(Evidence.from_event(e) for e in events)


def identity_alert_id(rule_id: str, event: PseudonymousEvent) -> str:
    return make_alert_id(rule_id, event.subject_key, event.source, event.event_id)


def identity_subject(id_number: str) -> Subject:
    return Subject("identity", key_of(id_number), mask_id(id_number), id_number[:2])


def states(s: Screening) -> dict[str, bytes]:
    """Every state of a screening, encoded: to compare two screenings."""
    encoded = {f"i/{k}": encode_identity(v) for k, v in s.identities.items()}
    encoded |= {f"o/{k}": encode_outlet(v) for k, v in s.outlets.items()}
    encoded |= {f"a/{k}": encode_agent(v) for k, v in s.agents.items()}
    return encoded


# the contract's ten rules, written out here rather than read from the code
ALL_RULES = {
    "sim_churn",
    "sim_mail_out_of_province",
    "sim_nonlocal_monthly_limit",
    "sim_nonlocal_not_in_person",
    "watchlist_hit",
    "bank_multi_open",
    "two_cards_combo",
    "outlet_nonlocal_surge",
    "gang_batch_open",
    "agent_flag_rate",
    "sim_carrier_limit",
    "bank_type1_limit",
}
# CASES.md: numbers the police found in fraud cases, traced to their openings
IMPLICATED_RULES = {"implicated_opener", "outlet_implicated", "agent_implicated"}
ALL_RULES |= IMPLICATED_RULES

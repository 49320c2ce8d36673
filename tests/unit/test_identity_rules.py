"""sim_mail_out_of_province, and the engine that runs it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from strategies import DROP, make_event, pseudonymous_events, valid_resident_id

from rules.alert import make_alert_id
from rules.config import MailRuleSettings, RuleSettings
from rules.engine import Engine
from rules.event import PseudonymousEvent, parse_event, pseudonymise
from rules.identity import SimMailOutOfProvince
from rules.pseudonym import Pseudonymizer

NOW = datetime(2026, 11, 20, 2, 15, 1, tzinfo=UTC)
PSEUDONYMIZER = Pseudonymizer(b"unit-test-key")
GANSU = valid_resident_id("62", "19900101", "123")
SICHUAN = valid_resident_id("51", "19851231", "456")


def screened(**overrides: Any) -> PseudonymousEvent:
    fields: dict[str, Any] = {"id_number": GANSU, "region_code": "620102"}
    fields.update(overrides)
    return pseudonymise(parse_event(orjson.dumps(make_event(**fields))), PSEUDONYMIZER)


def mail_to(region: str | None, **overrides: Any) -> PseudonymousEvent:
    delivery: dict[str, str] = {"method": "mail", "address_key": "a1"}
    if region is not None:
        delivery["region_code"] = region
    return screened(delivery=delivery, **overrides)


RULE = SimMailOutOfProvince(MailRuleSettings())


@pytest.mark.parametrize(
    ("event", "severity"),
    [
        (mail_to("530102"), "high"),  # Yunnan: a hotspot
        (mail_to("450102"), "high"),  # Guangxi: a hotspot
        (mail_to("510104"), "medium"),  # Sichuan: not a hotspot, local ID
        (mail_to("510104", id_number=SICHUAN), "high"),  # non-local ID
    ],
)
def test_mail_out_of_province_alerts(event: PseudonymousEvent, severity: str) -> None:
    alert = RULE.evaluate(event, NOW)
    assert alert is not None
    assert alert.severity == severity
    assert alert.action == "review"
    assert alert.rule_id == "sim_mail_out_of_province"
    assert alert.subject.key == event.subject_key
    assert alert.subject.id_masked == event.id_masked
    assert alert.event_time == event.occurred_at
    assert alert.detected_at == NOW
    assert alert.alert_id == make_alert_id(
        "sim_mail_out_of_province", event.subject_key, event.source, event.event_id
    )
    assert [e.event_id for e in alert.evidence] == [event.event_id]
    assert alert.facts["delivery_province"] == event.delivery_province
    assert alert.facts["outlet_province"] == "62"


@pytest.mark.parametrize(
    "event",
    [
        mail_to("620502"),  # within Gansu
        screened(delivery={"method": "pickup"}),
        screened(delivery=DROP),
        screened(
            event_type="sim.cancel",
            sim_kind=DROP,
            delivery={"method": "mail", "region_code": "530102"},
        ),
        screened(
            event_type="bank.open",
            msisdn=DROP,
            sim_kind=DROP,
            account_id="6222",
            account_kind="personal",
            delivery={"method": "mail", "region_code": "530102"},
        ),
    ],
)
def test_no_alert(event: PseudonymousEvent) -> None:
    assert RULE.evaluate(event, NOW) is None


def test_summaries_state_the_provinces() -> None:
    alert = RULE.evaluate(mail_to("510104", id_number=SICHUAN), NOW)
    assert alert is not None
    assert (
        alert.summary_en
        == "SIM opened in Gansu (62) mailed out of province to Sichuan (51); non-local ID"
    )
    assert alert.summary_zh == "号卡在甘肃(62)办理后邮寄至外省四川(51)，且为外地身份证"


def test_hotspots_and_severities_come_from_settings() -> None:
    rule = SimMailOutOfProvince(
        MailRuleSettings(hotspot_provinces=("51",), severity="low", escalated_severity="critical")
    )
    assert rule.evaluate(mail_to("510104"), NOW).severity == "critical"  # type: ignore[union-attr]
    assert rule.evaluate(mail_to("530102"), NOW).severity == "low"  # type: ignore[union-attr]


def test_disabled_rule_gives_no_alerts() -> None:
    engine = Engine(RuleSettings(MailRuleSettings(enabled=False)), clock=lambda: NOW)
    assert engine.screen_identity(mail_to("530102")) == []


def test_engine_stamps_detection_time() -> None:
    engine = Engine(RuleSettings(), clock=lambda: NOW)
    [alert] = engine.screen_identity(mail_to("530102"))
    assert alert.detected_at == NOW


@settings(max_examples=200, deadline=None)
@given(pseudonymous_events())
def test_rule_fires_exactly_on_a_mailed_sim_to_another_province(
    event: PseudonymousEvent,
) -> None:
    mailed_away = (
        event.event_type == "sim.activate"
        and event.delivery is not None
        and event.delivery.method == "mail"
        and event.delivery_province not in (None, event.outlet_province)
    )
    assert (RULE.evaluate(event, NOW) is not None) == mailed_away

"""Rules whose subject is one identity (keyed by its pseudonym)."""

from __future__ import annotations

from datetime import datetime

from rules.alert import Alert, Evidence, Subject, make_alert_id
from rules.config import MailRuleSettings
from rules.event import PseudonymousEvent
from rules.regions import province_name


def identity_subject(event: PseudonymousEvent) -> Subject:
    return Subject(
        kind="identity",
        key=event.subject_key,
        id_masked=event.id_masked,
        id_province=event.id_province,
    )


class SimMailOutOfProvince:
    """`sim_mail_out_of_province`: a SIM opened here and mailed to another province.

    Stateless: each qualifying event alerts, no cooldown.
    """

    rule_id = "sim_mail_out_of_province"

    def __init__(self, settings: MailRuleSettings) -> None:
        self.settings = settings
        self.hotspots = frozenset(settings.hotspot_provinces)

    def evaluate(self, event: PseudonymousEvent, detected_at: datetime) -> Alert | None:
        if event.event_type != "sim.activate" or event.delivery is None:
            return None
        destination = event.delivery_province
        if event.delivery.method != "mail" or destination is None:
            return None
        if destination == event.outlet_province:
            return None
        hotspot = destination in self.hotspots
        escalated = hotspot or event.is_nonlocal
        return Alert(
            alert_id=make_alert_id(self.rule_id, event.subject_key, event.source, event.event_id),
            rule_id=self.rule_id,
            severity=self.settings.escalated_severity if escalated else self.settings.severity,
            action=self.settings.action,
            subject=identity_subject(event),
            event_time=event.occurred_at,
            detected_at=detected_at,
            source=event.source,
            region_code=event.region_code,
            summary_zh=_summary_zh(event.outlet_province, destination, hotspot, event.is_nonlocal),
            summary_en=_summary_en(event.outlet_province, destination, hotspot, event.is_nonlocal),
            facts={
                "outlet_province": event.outlet_province,
                "delivery_province": destination,
                "hotspot": hotspot,
                "nonlocal_id": event.is_nonlocal,
                "id_province": event.id_province,
            },
            evidence=(Evidence.from_event(event),),
        )


def _summary_zh(origin: str, destination: str, hotspot: bool, nonlocal_id: bool) -> str:
    text = (
        f"号卡在{province_name(origin, 'zh')}({origin})办理后"
        f"邮寄至外省{province_name(destination, 'zh')}({destination})"
    )
    if hotspot:
        text += "，寄往涉诈高发地区"
    if nonlocal_id:
        text += "，且为外地身份证"
    return text


def _summary_en(origin: str, destination: str, hotspot: bool, nonlocal_id: bool) -> str:
    text = (
        f"SIM opened in {province_name(origin)} ({origin}) mailed out of province "
        f"to {province_name(destination)} ({destination})"
    )
    if hotspot:
        text += ", a fraud hotspot"
    if nonlocal_id:
        text += "; non-local ID"
    return text

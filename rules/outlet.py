"""Rules whose subject is an outlet (business hall, branch, dealer)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from rules.alert import Alert, Evidence, Subject, make_alert_id
from rules.config import GangSettings, RuleConfig, SurgeSettings
from rules.event import PseudonymousEvent
from rules.identity import Finding
from rules.state import Opening, OutletState
from rules.wording import span_en, span_zh

ONLINE = "online"

# the linking attributes of gang_batch_open, with their words
LINKS = {
    "device_id": ("设备", "device"),
    "contact_phone": ("联系电话", "contact phone"),
    "address_key": ("收货地址", "delivery address"),
}


def outlet_alert(
    rule_id: str,
    settings: RuleConfig,
    event: PseudonymousEvent,
    finding: Finding,
    detected_at: datetime,
) -> Alert:
    return Alert(
        alert_id=make_alert_id(
            rule_id, event.outlet_id, event.source, event.event_id, finding.shared_value
        ),
        rule_id=rule_id,
        severity=finding.severity,
        action=settings.action,
        subject=Subject(kind="outlet", key=event.outlet_id),
        event_time=event.occurred_at,
        detected_at=detected_at,
        source=event.source,
        region_code=event.region_code,
        summary_zh=finding.summary_zh,
        summary_en=finding.summary_en,
        facts=finding.facts,
        evidence=finding.evidence,
    )


def _evidence(openings: list[Opening]) -> tuple[Evidence, ...]:
    return tuple(o.evidence() for o in openings)


class OutletNonlocalSurge:
    """`outlet_nonlocal_surge`: many openings by non-local IDs, and most of them (谁开卡谁负责)."""

    rule_id = "outlet_nonlocal_surge"

    def __init__(self, settings: SurgeSettings) -> None:
        self.settings = settings

    def evaluate(self, event: PseudonymousEvent, ts: float, state: OutletState) -> Finding | None:
        recent = state.openings.since(ts - self.settings.window_s, ts)
        nonlocal_count = sum(o.is_nonlocal for o in recent)
        if nonlocal_count < self.settings.nonlocal_openings:
            return None
        share = nonlocal_count / len(recent)
        if share < self.settings.nonlocal_share:
            return None
        window = self.settings.window
        percent = round(share * 100)
        return Finding(
            severity=self.settings.severity,
            summary_zh=(
                f"网点{span_zh(window)}内外地身份证开户{nonlocal_count}笔，"
                f"占全部{len(recent)}笔的{percent}%"
            ),
            summary_en=(
                f"{nonlocal_count} openings by non-local IDs within {span_en(window)}, "
                f"{percent}% of the outlet's {len(recent)}"
            ),
            facts={
                "nonlocal_openings": nonlocal_count,
                "openings": len(recent),
                "nonlocal_share": round(share, 4),
                "window": window,
            },
            evidence=_evidence(recent),
        )


# the opening's field that holds each linking attribute (tokens for device and phone)
FIELDS = {
    "device_id": "device_key",
    "contact_phone": "contact_key",
    "address_key": "address_key",
}


@dataclass(frozen=True, slots=True)
class Link:
    """One value several identities share: a device, say (its token, and masked to show)."""

    attribute: str
    value: str
    shown: str

    @property
    def shared_value(self) -> str:
        return f"{self.attribute}:{self.value}"


class GangBatchOpen:
    """`gang_batch_open`: several people sharing one device, phone, address or home (开卡团伙)."""

    rule_id = "gang_batch_open"

    def __init__(self, settings: GangSettings) -> None:
        self.settings = settings

    def links(self, event: PseudonymousEvent) -> list[Link]:
        """The values of the triggering event that a gang could share."""
        delivery = event.delivery
        address = delivery.address_key if delivery else None
        prefecture = event.id_prefecture if event.is_nonlocal else None
        values = {
            "device_id": (event.device_key, event.device_masked),
            "contact_phone": (event.contact_key, event.contact_masked),
            "address_key": (address, address),
            "id_prefecture": (prefecture, prefecture),
        }
        return [Link(name, value, shown or "") for name, (value, shown) in values.items() if value]

    def evaluate(
        self, event: PseudonymousEvent, ts: float, state: OutletState, link: Link
    ) -> Finding | None:
        recent = state.openings.since(ts - self.settings.window_s, ts)
        if link.attribute == "id_prefecture":
            linked = [o for o in recent if o.is_nonlocal and o.id_prefecture == link.value]
        else:
            field = FIELDS[link.attribute]
            linked = [o for o in recent if getattr(o, field) == link.value]
        identities = sorted({o.subject_key for o in linked})
        if len(identities) < self.settings.identities:
            return None
        return Finding(
            severity=self.settings.severity,
            summary_zh=self._zh(link, len(identities)),
            summary_en=self._en(link, len(identities)),
            facts={
                "shared": link.attribute,
                "value": link.shown,
                "identities": identities,
                "count": len(identities),
                "window": self.settings.window,
            },
            evidence=_evidence(linked),
            shared_value=link.shared_value,
        )

    def _zh(self, link: Link, count: int) -> str:
        window = span_zh(self.settings.window)
        if link.attribute == "id_prefecture":
            return f"网点{window}内{count}名同一籍贯地（{link.value}）的外地身份证人员开户"
        return f"网点{window}内{count}名不同人员共用同一{LINKS[link.attribute][0]}开户"

    def _en(self, link: Link, count: int) -> str:
        window = span_en(self.settings.window)
        if link.attribute == "id_prefecture":
            return (
                f"{count} non-local IDs from one home prefecture ({link.value}) "
                f"opened here within {window}"
            )
        return f"{count} identities shared one {LINKS[link.attribute][1]} here within {window}"

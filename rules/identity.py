"""Rules whose subject is one identity (keyed by its pseudonym).

Each rule looks at the triggering event and the identity's history, which
already holds the triggering event: windows are trailing and include it.
An event exactly one window before the trigger is inside the window.
Cooldowns are applied by the engine, not here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from rules.alert import Alert, Evidence, Subject, make_alert_id
from rules.config import (
    CarrierLimitSettings,
    ChurnSettings,
    MailRuleSettings,
    MultiBankSettings,
    NonlocalLimitSettings,
    NotInPersonSettings,
    RuleConfig,
    TwoCardsSettings,
    TypeOneLimitSettings,
    WatchlistSettings,
)
from rules.event import PseudonymousEvent
from rules.holdings import carrier_of
from rules.regions import province_name
from rules.state import IdentityState, Mark, by_order
from rules.wording import span_en, span_zh


@dataclass(frozen=True, slots=True)
class Finding:
    """What a rule found: the alert's variable parts."""

    severity: str
    summary_zh: str
    summary_en: str
    facts: dict[str, object]
    evidence: tuple[Evidence, ...]
    shared_value: str | None = None


def identity_subject(event: PseudonymousEvent) -> Subject:
    return Subject(
        kind="identity",
        key=event.subject_key,
        id_masked=event.id_masked,
        id_province=event.id_province,
    )


def identity_alert(
    rule_id: str,
    settings: RuleConfig,
    event: PseudonymousEvent,
    finding: Finding,
    detected_at: datetime,
) -> Alert:
    return Alert(
        alert_id=make_alert_id(rule_id, event.subject_key, event.source, event.event_id),
        rule_id=rule_id,
        severity=finding.severity,
        action=settings.action,
        subject=identity_subject(event),
        event_time=event.occurred_at,
        detected_at=detected_at,
        source=event.source,
        region_code=event.region_code,
        summary_zh=finding.summary_zh,
        summary_en=finding.summary_en,
        facts=finding.facts,
        evidence=finding.evidence,
    )


def _evidence(marks: Sequence[Mark]) -> tuple[Evidence, ...]:
    return tuple(mark.evidence() for mark in marks)


def _recent(state: IdentityState, ts: float, window_s: int, event_type: str) -> list[Mark]:
    return [m for m in state.history.since(ts - window_s, ts) if m.event_type == event_type]


def _province(code: str | None, lang: str = "en") -> str:
    if code is None:
        return "?"
    return (
        f"{province_name(code, lang)}({code})"
        if lang == "zh"
        else f"{province_name(code)} ({code})"
    )


class SimChurn:
    """`sim_churn`: the identity cancelled SIMs again and again (一年内多次注销开办卡)."""

    rule_id = "sim_churn"
    triggers = frozenset({"sim.activate", "sim.cancel"})

    def __init__(self, settings: ChurnSettings) -> None:
        self.settings = settings

    def evaluate(self, event: PseudonymousEvent, ts: float, state: IdentityState) -> Finding | None:
        cancels = _recent(state, ts, self.settings.window_s, "sim.cancel")
        if len(cancels) < self.settings.cancels:
            return None
        marks = list(cancels)
        if event.event_type != "sim.cancel":
            marks.append(Mark.of(event, ts))
        window = self.settings.window
        return Finding(
            severity=self.settings.severity,
            summary_zh=f"{span_zh(window)}内注销号卡{len(cancels)}次",
            summary_en=f"{len(cancels)} SIM cancellations within {span_en(window)}",
            facts={"cancellations": len(cancels), "window": window},
            evidence=_evidence(marks),
        )


class SimMailOutOfProvince:
    """`sim_mail_out_of_province`: a SIM opened here and mailed to another province."""

    rule_id = "sim_mail_out_of_province"
    triggers = frozenset({"sim.activate"})

    def __init__(self, settings: MailRuleSettings) -> None:
        self.settings = settings
        self.hotspots = frozenset(settings.hotspot_provinces)

    def evaluate(self, event: PseudonymousEvent, ts: float, state: IdentityState) -> Finding | None:
        delivery = event.delivery
        destination = event.delivery_province
        if delivery is None or delivery.method != "mail" or destination is None:
            return None
        origin = event.outlet_province
        if destination == origin:
            return None
        hotspot = destination in self.hotspots
        escalated = hotspot or event.is_nonlocal
        zh = f"号卡在{_province(origin, 'zh')}办理后邮寄至外省{_province(destination, 'zh')}"
        en = f"SIM opened in {_province(origin)} mailed out of province to {_province(destination)}"
        if hotspot:
            zh += "，寄往涉诈高发地区"
            en += ", a fraud hotspot"
        if event.is_nonlocal:
            zh += "，且为外地身份证"
            en += "; non-local ID"
        return Finding(
            severity=self.settings.escalated_severity if escalated else self.settings.severity,
            summary_zh=zh,
            summary_en=en,
            facts={
                "outlet_province": origin,
                "delivery_province": destination,
                "hotspot": hotspot,
                "nonlocal_id": event.is_nonlocal,
                "id_province": event.id_province,
            },
            evidence=(Evidence.from_event(event),),
        )


class SimNonlocalMonthlyLimit:
    """`sim_nonlocal_monthly_limit`: 外地身份证一个月内仅允许办理1张号卡."""

    rule_id = "sim_nonlocal_monthly_limit"
    triggers = frozenset({"sim.activate"})

    def __init__(self, settings: NonlocalLimitSettings) -> None:
        self.settings = settings

    def evaluate(self, event: PseudonymousEvent, ts: float, state: IdentityState) -> Finding | None:
        if not event.is_nonlocal:
            return None
        province = event.outlet_province
        same = [
            m
            for m in _recent(state, ts, self.settings.window_s, "sim.activate")
            if m.is_nonlocal and m.outlet_province == province
        ]
        if len(same) < self.settings.activations:
            return None
        window = self.settings.window
        return Finding(
            severity=self.settings.severity,
            summary_zh=(
                f"外地身份证{span_zh(window)}内在{_province(province, 'zh')}办理第{len(same)}张号卡"
            ),
            summary_en=(
                f"non-local ID opened SIM no. {len(same)} in {_province(province)} "
                f"within {span_en(window)}"
            ),
            facts={
                "activations": len(same),
                "window": window,
                "outlet_province": province,
                "id_province": event.id_province,
            },
            evidence=_evidence(same),
        )


class SimNonlocalNotInPerson:
    """`sim_nonlocal_not_in_person`: 外地身份证须到营业厅现场实人认证."""

    rule_id = "sim_nonlocal_not_in_person"
    triggers = frozenset({"sim.activate"})

    def __init__(self, settings: NotInPersonSettings) -> None:
        self.settings = settings

    def evaluate(self, event: PseudonymousEvent, ts: float, state: IdentityState) -> Finding | None:
        if not event.is_nonlocal or event.verification == "in_person":
            return None
        origin, here = event.id_province, event.outlet_province
        return Finding(
            severity=self.settings.severity,
            summary_zh=(
                f"外地身份证（{_province(origin, 'zh')}）在{_province(here, 'zh')}"
                f"未经现场实人认证办理号卡（{event.verification}）"
            ),
            summary_en=(
                f"non-local ID from {_province(origin)} opened a SIM in {_province(here)} "
                f"without in-person verification ({event.verification})"
            ),
            facts={
                "verification": event.verification,
                "channel": event.channel,
                "id_province": origin,
                "outlet_province": here,
            },
            evidence=(Evidence.from_event(event),),
        )


class WatchlistHit:
    """`watchlist_hit`: an opening by someone on the credit-punishment list."""

    rule_id = "watchlist_hit"
    triggers = frozenset({"sim.activate", "bank.open"})

    def __init__(self, settings: WatchlistSettings) -> None:
        self.settings = settings

    def evaluate(self, event: PseudonymousEvent, ts: float, state: IdentityState) -> Finding | None:
        entry = state.barring(event.event_type, event.occurred_at.date())
        if entry is None:
            return None
        what_zh, what_en = (
            ("号卡", "a SIM")
            if event.event_type == "sim.activate"
            else (
                "银行账户",
                "a bank account",
            )
        )
        zh = f"失信惩戒名单人员（{entry.list}，{entry.since}至{entry.until}）办理{what_zh}"
        en = (
            f"person on the {entry.list} list ({entry.scope}, {entry.since} to "
            f"{entry.until}) opened {what_en}"
        )
        facts: dict[str, object] = {
            "list": entry.list,
            "scope": entry.scope,
            "since": entry.since.isoformat(),
            "until": entry.until.isoformat(),
            "reason": entry.reason,
        }
        if entry.basis:
            zh += f"；依据：{entry.basis}"
            en += f"; basis: {entry.basis}"
            facts["basis"] = entry.basis
        return Finding(
            severity=self.settings.severity,
            summary_zh=zh,
            summary_en=en,
            facts=facts,
            evidence=(Evidence.from_event(event),),
        )


class BankMultiOpen:
    """`bank_multi_open`: accounts at several banks within days."""

    rule_id = "bank_multi_open"
    triggers = frozenset({"bank.open"})

    def __init__(self, settings: MultiBankSettings) -> None:
        self.settings = settings

    def evaluate(self, event: PseudonymousEvent, ts: float, state: IdentityState) -> Finding | None:
        opens = _recent(state, ts, self.settings.window_s, "bank.open")
        banks = sorted({m.source for m in opens})
        if len(banks) < self.settings.banks:
            return None
        window = self.settings.window
        return Finding(
            severity=self.settings.severity,
            summary_zh=f"{span_zh(window)}内在{len(banks)}家银行开户",
            summary_en=f"accounts opened at {len(banks)} banks within {span_en(window)}",
            facts={"banks": len(banks), "sources": banks, "window": window},
            evidence=_evidence(opens),
        )


class TwoCardsCombo:
    """`two_cards_combo`: a SIM and a bank account close together, one of them non-local."""

    rule_id = "two_cards_combo"
    triggers = frozenset({"sim.activate", "bank.open"})

    def __init__(self, settings: TwoCardsSettings) -> None:
        self.settings = settings

    def evaluate(self, event: PseudonymousEvent, ts: float, state: IdentityState) -> Finding | None:
        other = "bank.open" if event.event_type == "sim.activate" else "sim.activate"
        partners = [
            m
            for m in _recent(state, ts, self.settings.window_s, other)
            if event.is_nonlocal or m.is_nonlocal
        ]
        if not partners:
            return None
        window = self.settings.window
        marks = sorted([*partners, Mark.of(event, ts)], key=by_order)
        return Finding(
            severity=self.settings.severity,
            summary_zh=f"{span_zh(window)}内办理号卡和银行账户（两卡），涉及外地身份证",
            summary_en=(
                f"a SIM and a bank account opened within {span_en(window)}, with a non-local ID"
            ),
            facts={
                "window": window,
                "sims": sum(m.event_type == "sim.activate" for m in marks),
                "bank_accounts": sum(m.event_type == "bank.open" for m in marks),
                "id_province": event.id_province,
            },
            evidence=_evidence(marks),
        )


class SimCarrierLimit:
    """`sim_carrier_limit` (一证五号): more than five active personal SIMs at one carrier.

    Counted over all the carrier's sources (provinces), with the snapshot's
    cards (rules/state.py `Held`); the engine has applied the activation.
    """

    rule_id = "sim_carrier_limit"
    triggers = frozenset({"sim.activate"})

    def __init__(self, settings: CarrierLimitSettings) -> None:
        self.settings = settings

    def evaluate(self, event: PseudonymousEvent, ts: float, state: IdentityState) -> Finding | None:
        if event.sim_kind != "personal":
            return None
        carrier = carrier_of(event.source)
        after = state.held(carrier, "personal")
        limit = self.settings.sims
        if after <= limit:
            return None
        held = after - 1
        return Finding(
            severity=self.settings.severity,
            summary_zh=f"已在{carrier}持有{held}张个人号卡（上限{limit}张，一证五号），再办一张",
            summary_en=(
                f"already holds {held} personal SIMs at {carrier} (limit {limit}), opened one more"
            ),
            facts={"held": held, "limit": limit, "carrier": carrier},
            evidence=(Evidence.from_event(event),),
        )


class BankTypeOneLimit:
    """`bank_type1_limit` (一人一行一个I类户): more than one Type I account at one bank."""

    rule_id = "bank_type1_limit"
    triggers = frozenset({"bank.open"})

    def __init__(self, settings: TypeOneLimitSettings) -> None:
        self.settings = settings

    def evaluate(self, event: PseudonymousEvent, ts: float, state: IdentityState) -> Finding | None:
        if event.account_class != "I":
            return None
        bank = carrier_of(event.source)
        after = state.held(bank, "I")
        limit = self.settings.accounts
        if after <= limit:
            return None
        held = after - 1
        return Finding(
            severity=self.settings.severity,
            summary_zh=f"已在{bank}持有{held}个I类账户（上限{limit}个），再开一个",
            summary_en=(
                f"already holds {held} Type I accounts at {bank} (limit {limit}), opened one more"
            ),
            facts={"held": held, "limit": limit, "bank": bank},
            evidence=(Evidence.from_event(event),),
        )


IdentityRule = (
    SimChurn
    | SimMailOutOfProvince
    | SimNonlocalMonthlyLimit
    | SimNonlocalNotInPerson
    | WatchlistHit
    | BankMultiOpen
    | TwoCardsCombo
    | SimCarrierLimit
    | BankTypeOneLimit
)

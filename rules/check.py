"""The pre-opening check (CHECK.md): what the identity rules would say if this opening happened now.

`decide` works on the identity's state as its owner holds it. It tries the
opening on a copy of that state, with every reservation still running
applied first as if those openings had happened, so the reasons are the
identity alerts the stream would raise on the opening (same rules, facts,
cooldowns and holdings). An `allow` or `review` then reserves the opening's
place: later checks count it until its event (same `check_id`) takes it
over or `check.reservation_ttl` passes. The decision is kept, so the same
check_id gets the same answer again for `check.remember`.

Times here are seconds since the epoch: the stream passes the wall clock,
replay the check's `occurred_at`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any

from rules.alert import Alert
from rules.engine import Engine
from rules.event import PseudonymousEvent, pseudonymous_from_row, pseudonymous_row
from rules.state import CheckRecord, IdentityState, decode_identity, encode_identity

DECISION_SCHEMA = "duanka.decision/1"
DECISIONS = ("allow", "review", "refuse")
_MASKS = (6, 21, 22)  # id_masked, device_masked, contact_masked in a pseudonymous row


@dataclass(slots=True)
class Outcome:
    """A check's answer (decision, reasons, reservation, decided_at); `repeat`: given before."""

    answer: dict[str, Any]
    repeat: bool

    @property
    def decision(self) -> str:
        decision: str = self.answer["decision"]
        return decision

    @property
    def rule_ids(self) -> list[str]:
        return [reason["rule_id"] for reason in self.answer["reasons"]]


def check_key(source: str, check_id: str) -> str:
    return f"{source}\x1f{check_id}"


def decide(
    engine: Engine,
    state: IdentityState,
    opening: PseudonymousEvent,
    now: float,
    ttl_s: float,
    remember_s: float,
    pending: Sequence[PseudonymousEvent] = (),
) -> Outcome:
    """Decide on `opening` (made by `parse_check`) at `now`; reserves its place in `state`.

    `pending` are events of the identity already read but not yet applied to
    `state` (the stream holds them back for event-time order): the trial
    applies them first, as the stream will.
    """
    assert opening.check_id is not None
    forget(state, now)
    key = check_key(opening.source, opening.check_id)
    known = state.checks.get(key)
    if known is not None:
        return Outcome(known.answer, repeat=True)
    alerts = trial(engine, state, opening, now, pending)
    reasons = [reason_of(alert) for alert in alerts]
    if any(alert.action == "block" for alert in alerts):
        decision = "refuse"
    elif alerts:
        decision = "review"
    else:
        decision = "allow"
    zone = opening.occurred_at.tzinfo
    reserved: list[Any] | None = None
    reservation = None
    if decision != "refuse":
        reserved = pseudonymous_row(opening)
        for index in _MASKS:
            reserved[index] = "" if index == 6 else None
        reservation = {
            "id": f"{opening.source}/{opening.check_id}",
            "expires_at": _iso(now + ttl_s, zone),
        }
    answer = {
        "decision": decision,
        "reasons": reasons,
        "reservation": reservation,
        "decided_at": _iso(now, zone),
    }
    state.checks[key] = CheckRecord(now + remember_s, answer, reserved, now + ttl_s)
    return Outcome(answer, repeat=False)


def trial(
    engine: Engine,
    state: IdentityState,
    opening: PseudonymousEvent,
    now: float,
    pending: Sequence[PseudonymousEvent] = (),
) -> list[Alert]:
    """The identity alerts `opening` would raise now, on a copy of `state`.

    The copy first takes the `pending` events and the openings of the
    reservations still running, in event-time order, as if they had happened.
    """
    copy = decode_identity(encode_identity(state))
    earlier = [
        pseudonymous_from_row(record.reserved)
        for record in state.checks.values()
        if record.reserved is not None and record.expires > now
    ]
    earlier += pending
    for event in sorted(earlier, key=_order):
        engine.screen_identity(copy, event)
    return engine.screen_identity(copy, opening).alerts


def forget(state: IdentityState, now: float) -> None:
    """End the reservations that expired, and forget the checks past remembering."""
    if not state.checks:
        return
    for key in [key for key, record in state.checks.items() if record.until <= now]:
        del state.checks[key]
    for record in state.checks.values():
        if record.reserved is not None and record.expires <= now:
            record.reserved = None


def reason_of(alert: Alert) -> dict[str, Any]:
    return {
        "rule_id": alert.rule_id,
        "action": alert.action,
        "severity": alert.severity,
        "summary_zh": alert.summary_zh,
        "summary_en": alert.summary_en,
        "facts": alert.facts,
    }


def decision_document(
    opening: PseudonymousEvent, outcome: Outcome, stale: bool = False
) -> dict[str, Any]:
    """The `duanka.decision/1` answer: no raw id, the pseudonym and the masked id."""
    return {
        "schema": DECISION_SCHEMA,
        "check_id": opening.check_id,
        **outcome.answer,
        "subject": {"key": opening.subject_key, "id_masked": opening.id_masked},
        "stale": stale,
    }


def audit_document(
    opening: PseudonymousEvent, outcome: Outcome, stale: bool = False
) -> dict[str, Any]:
    """What `screening.decisions` keeps of a decision: the answer, where it was asked, a repeat."""
    return decision_document(opening, outcome, stale) | {
        "source": opening.source,
        "event_type": opening.event_type,
        "region_code": opening.region_code,
        "outlet_id": opening.outlet_id,
        "agent_id": opening.agent_id,
        "requested_at": opening.iso(),
        "repeat": outcome.repeat,
    }


def _order(event: PseudonymousEvent) -> tuple[float, str, str]:
    return (event.epoch(), event.source, event.event_id)


def _iso(ts: float, zone: tzinfo | None) -> str:
    return datetime.fromtimestamp(ts, zone).isoformat(timespec="milliseconds")

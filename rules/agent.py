"""The rule whose subject is an agent (受理工号): `agent_flag_rate`."""

from __future__ import annotations

from datetime import datetime

from rules.alert import Alert, Subject, make_alert_id
from rules.config import AgentFlagSettings
from rules.identity import Finding
from rules.state import AgentSignal, AgentState
from rules.wording import span_en, span_zh


class AgentFlagRate:
    """`agent_flag_rate`: an agent whose customers keep being flagged (一案双查)."""

    rule_id = "agent_flag_rate"

    def __init__(self, settings: AgentFlagSettings) -> None:
        self.settings = settings

    def evaluate(self, signal: AgentSignal, state: AgentState) -> Finding | None:
        recent = state.flags.since(signal.ts - self.settings.window_s, signal.ts)
        identities = sorted({f.subject_key for f in recent})
        if len(identities) < self.settings.identities:
            return None
        window = self.settings.window
        return Finding(
            severity=self.settings.severity,
            summary_zh=f"受理工号{span_zh(window)}内经办{len(identities)}名被预警客户",
            summary_en=(
                f"agent handled {len(identities)} alerted customers within {span_en(window)}"
            ),
            facts={
                "identities": identities,
                "count": len(identities),
                "alerts": sorted(f.alert_id for f in recent),
                "window": window,
            },
            # one event can give several identity alerts: list it once
            evidence=tuple(dict.fromkeys(f.evidence for f in recent)),
        )

    def alert(self, signal: AgentSignal, finding: Finding, detected_at: datetime) -> Alert:
        e = signal.evidence
        return Alert(
            alert_id=make_alert_id(self.rule_id, signal.agent_id, e.source, e.event_id),
            rule_id=self.rule_id,
            severity=finding.severity,
            action=self.settings.action,
            subject=Subject(kind="agent", key=signal.agent_id),
            event_time=datetime.fromisoformat(e.occurred_at),
            detected_at=detected_at,
            source=e.source,
            region_code=signal.region_code,
            summary_zh=finding.summary_zh,
            summary_en=finding.summary_en,
            facts=finding.facts,
            evidence=finding.evidence,
        )

"""The rule engine: every rule over one event, the same for the stream and replay."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from rules.alert import Alert
from rules.config import RuleSettings
from rules.event import PseudonymousEvent
from rules.identity import SimMailOutOfProvince

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class Engine:
    """Evaluates the configured rules; `clock` gives `detected_at`."""

    def __init__(self, settings: RuleSettings, clock: Clock = utc_now) -> None:
        self.clock = clock
        mail = settings.sim_mail_out_of_province
        self.identity_rules = [SimMailOutOfProvince(mail)] if mail.enabled else []

    def screen_identity(self, event: PseudonymousEvent) -> list[Alert]:
        """Alerts for one event, from the rules keyed by identity."""
        detected_at = self.clock()
        alerts = (rule.evaluate(event, detected_at) for rule in self.identity_rules)
        return [alert for alert in alerts if alert is not None]

"""The rule engine: every rule, the same for the stream and for replay.

`Engine` decides for one subject's state and one event; the state objects
are the caller's, so the stream can keep them in tables and replay in dicts.
`Screening` is the in-memory driver that replay (and the tests) use: it
routes each event to its identity, outlet and agent, in that order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from rules.agent import AgentFlagRate
from rules.alert import Alert, Evidence
from rules.cases import LinkRow, agent_links, identity_links, outlet_links
from rules.config import ImplicatedSettings, RuleConfig, RuleSettings
from rules.event import PseudonymousEvent
from rules.holdings import Snapshot
from rules.identity import (
    BankMultiOpen,
    BankTypeOneLimit,
    IdentityRule,
    SimCarrierLimit,
    SimChurn,
    SimMailOutOfProvince,
    SimNonlocalMonthlyLimit,
    SimNonlocalNotInPerson,
    TwoCardsCombo,
    WatchlistHit,
    identity_alert,
)
from rules.implicated import (
    ImplicatedPlace,
    NumberState,
    Opened,
    PlaceState,
    Report,
    Trace,
    number_key,
    opener_alert,
    opener_links,
    place_links,
)
from rules.outlet import ONLINE, GangBatchOpen, OutletNonlocalSurge, outlet_alert
from rules.state import (
    AgentSignal,
    AgentState,
    Flag,
    Held,
    IdentityState,
    Mark,
    Opening,
    OutletState,
    WatchEntry,
    expire_cooldowns,
)

Clock = Callable[[], datetime]
IDENTITY_TYPES = frozenset({"sim.activate", "sim.cancel", "bank.open", "bank.close"})
OPENING_TYPES = frozenset({"sim.activate", "bank.open"})


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class Decision:
    """What one event did to one subject: whether it changed the state, and the alerts."""

    applied: bool
    alerts: list[Alert] = field(default_factory=list)


@dataclass(slots=True)
class Traced:
    """What an implicated number's report did: the opening it traced to (None: none known)."""

    applied: bool
    trace: Trace | None = None
    alerts: list[Alert] = field(default_factory=list)


class Engine:
    """Evaluates the enabled rules; `clock` gives `detected_at`."""

    def __init__(
        self,
        settings: RuleSettings,
        clock: Clock = utc_now,
        implicated: ImplicatedSettings | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.number_retention = (implicated or ImplicatedSettings()).retention_s
        self.opener = settings.implicated_opener if settings.implicated_opener.enabled else None
        self.places = {
            kind: ImplicatedPlace(kind, config, self.number_retention)
            for kind, config in (
                ("outlet", settings.outlet_implicated),
                ("agent", settings.agent_implicated),
            )
            if config.enabled
        }
        candidates: list[tuple[RuleConfig, IdentityRule]] = [
            (settings.sim_churn, SimChurn(settings.sim_churn)),
            (
                settings.sim_mail_out_of_province,
                SimMailOutOfProvince(settings.sim_mail_out_of_province),
            ),
            (
                settings.sim_nonlocal_monthly_limit,
                SimNonlocalMonthlyLimit(settings.sim_nonlocal_monthly_limit),
            ),
            (
                settings.sim_nonlocal_not_in_person,
                SimNonlocalNotInPerson(settings.sim_nonlocal_not_in_person),
            ),
            (settings.watchlist_hit, WatchlistHit(settings.watchlist_hit)),
            (settings.bank_multi_open, BankMultiOpen(settings.bank_multi_open)),
            (settings.two_cards_combo, TwoCardsCombo(settings.two_cards_combo)),
            (settings.sim_carrier_limit, SimCarrierLimit(settings.sim_carrier_limit)),
            (settings.bank_type1_limit, BankTypeOneLimit(settings.bank_type1_limit)),
        ]
        self.identity_rules = [rule for config, rule in candidates if config.enabled]
        # the enabled rules each event type triggers, in the order above
        self._rules_for = {
            event_type: [rule for rule in self.identity_rules if event_type in rule.triggers]
            for event_type in IDENTITY_TYPES
        }
        # History is kept for the longest identity window, enabled or not: it is
        # also what recognises a repeated event, which must not depend on the rules on.
        self.identity_retention = max(
            getattr(rule.settings, "window_s", 0) for _, rule in candidates
        )
        self.surge = (
            OutletNonlocalSurge(settings.outlet_nonlocal_surge)
            if settings.outlet_nonlocal_surge.enabled
            else None
        )
        self.gang = (
            GangBatchOpen(settings.gang_batch_open) if settings.gang_batch_open.enabled else None
        )
        self.outlet_retention = max(
            settings.outlet_nonlocal_surge.window_s if self.surge else 0,
            settings.gang_batch_open.window_s if self.gang else 0,
        )
        self.agent_rule = (
            AgentFlagRate(settings.agent_flag_rate) if settings.agent_flag_rate.enabled else None
        )

    @staticmethod
    def _stamp(event: PseudonymousEvent) -> tuple[float, str]:
        """The event's time as a number and as text (each worked out once per event)."""
        return event.epoch(), event.iso()

    # -- identities

    @staticmethod
    def screens_identity(event: PseudonymousEvent) -> bool:
        return event.event_type in IDENTITY_TYPES

    def screen_identity(self, state: IdentityState, event: PseudonymousEvent) -> Decision:
        """Apply an event to its identity's state and evaluate the identity rules."""
        if event.event_type not in IDENTITY_TYPES or state.history.holds(
            event.source, event.event_id
        ):
            return Decision(applied=False)
        ts, iso = self._stamp(event)
        state.history.add(Mark.of(event, ts, iso))
        _hold(state, event, ts)
        if event.check_id is not None:
            _take_over(state, event)
        decision = Decision(applied=True)
        cooldowns = state.cooldowns
        for rule in self._rules_for[event.event_type]:
            if cooldowns and _cooling(cooldowns, rule.rule_id, ts):
                continue
            finding = rule.evaluate(event, ts, state)
            if finding is None:
                continue
            decision.alerts.append(
                identity_alert(rule.rule_id, rule.settings, event, finding, self.clock())
            )
            _cool(state.cooldowns, rule.rule_id, ts, rule.settings.cooldown_s)
        horizon = state.history.latest - self.identity_retention
        state.history.prune(horizon)
        held = state.holdings.get(event.source)
        if held is not None:
            held.prune(horizon)
        expire_cooldowns(state.cooldowns, state.history.latest)
        return decision

    @staticmethod
    def watch(state: IdentityState, entry: WatchEntry | None) -> None:
        """Set (or, with None, remove) an identity's watchlist entry."""
        state.watch = entry

    @staticmethod
    def punish(state: IdentityState, alert_id: str, entry: WatchEntry | None) -> None:
        """Set (or, with None, lift) the punishment the police's verdict on an alert gave."""
        if entry is None:
            state.punished.pop(alert_id, None)
        else:
            state.punished[alert_id] = entry

    @staticmethod
    def hold(state: IdentityState, snapshot: Snapshot) -> None:
        """Apply an inventory snapshot: it replaces the source's earlier one."""
        held = state.holdings.get(snapshot.source)
        if held is None:
            held = state.holdings[snapshot.source] = Held()
        held.snapshot(snapshot.as_of.timestamp(), dict(snapshot.sims + snapshot.accounts))

    # -- outlets

    def screens_outlet(self, event: PseudonymousEvent) -> bool:
        return (
            event.event_type in OPENING_TYPES
            and event.outlet_id != ONLINE
            and (self.surge is not None or self.gang is not None)
        )

    def screen_outlet(self, state: OutletState, event: PseudonymousEvent) -> Decision:
        """Apply an opening to its outlet's state and evaluate the outlet rules."""
        if not self.screens_outlet(event) or state.openings.holds(event.source, event.event_id):
            return Decision(applied=False)
        ts, iso = self._stamp(event)
        state.openings.add(Opening.of(event, ts, iso))
        decision = Decision(applied=True)
        surge = self.surge
        if surge is not None and not _cooling(state.cooldowns, surge.rule_id, ts):
            finding = surge.evaluate(event, ts, state)
            if finding is not None:
                decision.alerts.append(
                    outlet_alert(surge.rule_id, surge.settings, event, finding, self.clock())
                )
                _cool(state.cooldowns, surge.rule_id, ts, surge.settings.cooldown_s)
        gang = self.gang
        for link in gang.links(event) if gang is not None else ():
            assert gang is not None
            cooldown = f"{gang.rule_id}\x1f{link.shared_value}"
            if _cooling(state.cooldowns, cooldown, ts):
                continue
            finding = gang.evaluate(event, ts, state, link)
            if finding is not None:
                decision.alerts.append(
                    outlet_alert(gang.rule_id, gang.settings, event, finding, self.clock())
                )
                _cool(state.cooldowns, cooldown, ts, gang.settings.cooldown_s)
        state.openings.prune(state.openings.latest - self.outlet_retention)
        expire_cooldowns(state.cooldowns, state.openings.latest)
        return decision

    # -- agents

    def agent_signals(self, event: PseudonymousEvent, alerts: list[Alert]) -> list[AgentSignal]:
        """What the identity alerts on an event tell about the agent who handled it."""
        if self.agent_rule is None or not event.agent_id:
            return []
        ts, _ = self._stamp(event)
        return [
            AgentSignal(
                event.agent_id,
                ts,
                alert.subject.key,
                alert.alert_id,
                event.region_code,
                Evidence.from_event(event),
            )
            for alert in alerts
            if alert.subject.kind == "identity"
        ]

    def screen_agent(self, state: AgentState, signal: AgentSignal) -> Decision:
        rule = self.agent_rule
        if rule is None or state.flags.has(signal.alert_id):
            return Decision(applied=False)
        # Several identity alerts on one event are one more event for the agent, and
        # the agent's alert id is the event's: evaluate on its first signal only.
        again = any(f.evidence == signal.evidence for f in state.flags.since(signal.ts, signal.ts))
        state.flags.add(Flag(signal.ts, signal.subject_key, signal.alert_id, signal.evidence))
        decision = Decision(applied=True)
        if not again and not _cooling(state.cooldowns, rule.rule_id, signal.ts):
            finding = rule.evaluate(signal, state)
            if finding is not None:
                decision.alerts.append(rule.alert(signal, finding, self.clock()))
                _cool(state.cooldowns, rule.rule_id, signal.ts, rule.settings.cooldown_s)
        state.flags.prune(state.flags.latest - rule.settings.window_s)
        expire_cooldowns(state.cooldowns, state.flags.latest)
        return decision

    # -- implicated numbers

    def keep_opening(self, state: NumberState, opened: Opened) -> bool:
        """Keep the opening that created a number, to trace reports of it; False if known."""
        if not state.add(opened):
            return False
        state.prune(state.openings[-1].ts - self.number_retention)
        return True

    def trace(self, state: NumberState, report: Report) -> Traced:
        """Trace a report to its opening, and the identity's alert (once per case_ref)."""
        if report.case_ref in state.reports:
            return Traced(applied=False)
        state.reports.append(report.case_ref)
        opening = state.opening_for(report, self.number_retention)
        if opening is None:
            return Traced(applied=True)
        first = opening.ref not in state.cards
        if first:
            state.cards.append(opening.ref)
        trace = Trace(report, opening, first)
        alerts = [] if self.opener is None else [opener_alert(self.opener, trace, self.clock())]
        return Traced(True, trace, alerts)

    @staticmethod
    def places_of(trace: Trace) -> list[tuple[str, str]]:
        """(kind, key) of the outlet and the staff member a trace holds to account."""
        found = []
        if trace.opening.outlet_id and trace.opening.outlet_id != ONLINE:
            found.append(("outlet", trace.opening.outlet_id))
        if trace.opening.agent_id:
            found.append(("agent", trace.opening.agent_id))
        return found

    def screen_place(self, kind: str, key: str, state: PlaceState, trace: Trace) -> Decision:
        """Count an implicated card against its outlet or staff member."""
        rule = self.places.get(kind)
        if rule is None:
            return Decision(applied=False)
        applied, alert = rule.screen(state, key, trace, self.clock())
        return Decision(applied, [] if alert is None else [alert])


def _hold(state: IdentityState, event: PseudonymousEvent, ts: float) -> None:
    """What the event changes in the identity's holdings at its source (CHECK.md)."""
    event_type = event.event_type
    if event_type.startswith("sim."):
        token, kind = event.msisdn_key, event.sim_kind or ""
    else:
        token, kind = event.account_key, event.account_class or "unknown"
    if token is None:  # validation requires them: nothing to match without one
        return
    held = state.holdings.get(event.source)
    if held is None:
        held = state.holdings[event.source] = Held()
    if event_type in OPENING_TYPES:
        held.open(token, kind, ts)
    else:
        held.remove(token, kind, ts)


def _take_over(state: IdentityState, event: PseudonymousEvent) -> None:
    """The opening a check reserved has happened: its reservation ends (it counts as itself)."""
    record = state.checks.get(f"{event.source}\x1f{event.check_id}")
    if record is not None:
        record.reserved = None


def _cooling(cooldowns: dict[str, float], name: str, ts: float) -> bool:
    until = cooldowns.get(name)
    return until is not None and ts < until


def _cool(cooldowns: dict[str, float], name: str, ts: float, cooldown_s: int) -> None:
    if cooldown_s:
        cooldowns[name] = ts + cooldown_s


class Screening:
    """Every subject's state in memory, and the routing of an event through the rules."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.identities: dict[str, IdentityState] = {}
        self.outlets: dict[str, OutletState] = {}
        self.agents: dict[str, AgentState] = {}
        self.numbers: dict[tuple[str, str], NumberState] = {}
        self.places: dict[tuple[str, str], PlaceState] = {}

    def hold(self, subject_key: str, snapshot: Snapshot) -> None:
        state = self.identities.get(subject_key)
        if state is None:
            state = self.identities[subject_key] = IdentityState()
        self.engine.hold(state, snapshot)

    def watch(self, subject_key: str, entry: WatchEntry | None) -> None:
        state = self.identities.get(subject_key)
        if state is None:
            if entry is None:
                return
            state = self.identities[subject_key] = IdentityState()
        self.engine.watch(state, entry)

    def punish(self, subject_key: str, alert_id: str, entry: WatchEntry | None) -> None:
        self.engine.punish(self.identity(subject_key), alert_id, entry)

    def identity(self, subject_key: str) -> IdentityState:
        state = self.identities.get(subject_key)
        if state is None:
            state = self.identities[subject_key] = IdentityState()
        return state

    def screen(self, event: PseudonymousEvent) -> list[Alert]:
        """Alerts for one event: its identity's, then its agent's, then its outlet's."""
        self.keep_opening(event)
        return self.screen_people(event) + self.screen_outlet(event)

    def keep_opening(self, event: PseudonymousEvent) -> None:
        """Keep an opening's number, for the reports of implicated numbers."""
        number = number_key(event)
        if number is None:
            return
        state = self.numbers.get(number)
        if state is None:
            state = self.numbers[number] = NumberState()
        self.engine.keep_opening(state, Opened.of(event))

    def implicate(self, report: Report) -> tuple[Traced, list[Alert]]:
        """Trace a report; (what it traced to, every alert: the opener's, then the places')."""
        number = (report.kind, report.number_key)
        state = self.numbers.get(number)
        if state is None:
            state = self.numbers[number] = NumberState()
        traced = self.engine.trace(state, report)
        alerts = list(traced.alerts)
        if traced.trace is not None:
            for kind, key in self.engine.places_of(traced.trace):
                place = self.places.get((kind, key))
                if place is None:
                    place = self.places[(kind, key)] = PlaceState()
                alerts += self.engine.screen_place(kind, key, place, traced.trace).alerts
        return traced, alerts

    def screen_people(self, event: PseudonymousEvent) -> list[Alert]:
        """The identity rules' alerts on one event, then its agent's."""
        engine = self.engine
        alerts: list[Alert] = []
        if event.event_type in IDENTITY_TYPES:
            identity = self.identities.get(event.subject_key)
            if identity is None:
                identity = self.identities[event.subject_key] = IdentityState()
            alerts += engine.screen_identity(identity, event).alerts
        for signal in engine.agent_signals(event, alerts):
            agent = self.agents.get(signal.agent_id)
            if agent is None:
                agent = self.agents[signal.agent_id] = AgentState()
            alerts += engine.screen_agent(agent, signal).alerts
        return alerts

    def links(self, alert: Alert, event: PseudonymousEvent) -> list[LinkRow]:
        """What an alert just raised on `event` links by, for the cases (rules/cases.py)."""
        kind, key = alert.subject.kind, alert.subject.key
        if kind == "outlet":
            return outlet_links(alert, self.outlets[key])
        if kind == "agent":
            return agent_links(alert, self.agents[key])
        return identity_links(event)

    def implicated_links(self, alert: Alert, trace: Trace) -> list[LinkRow]:
        """What an alert a report raised links by, for the cases."""
        if alert.rule_id == "implicated_opener":
            return opener_links(trace)
        return place_links(alert, self.places[(alert.subject.kind, alert.subject.key)])

    def screen_outlet(self, event: PseudonymousEvent) -> list[Alert]:
        """The outlet rules' alerts on one event (they depend on no other rule's)."""
        engine = self.engine
        if not engine.screens_outlet(event):
            return []
        outlet = self.outlets.get(event.outlet_id)
        if outlet is None:
            outlet = self.outlets[event.outlet_id] = OutletState()
        return engine.screen_outlet(outlet, event).alerts

"""agent_flag_rate, fed by the identity alerts of real events through `Screening`."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from rulekit import (
    DAY,
    DETECTED,
    HOUR,
    SECOND,
    T0,
    engine,
    ev,
    evidence,
    key_of,
    mailed,
    only,
    resident,
    rules,
    run,
    screening,
)

from rules.alert import Alert, Subject, make_alert_id
from rules.engine import Screening
from rules.event import PseudonymousEvent
from rules.state import AgentState

RULE = "agent_flag_rate"
AGENT = "A-77812"


def person(n: int) -> str:
    """Person n from Beijing, each of another prefecture so no gang forms at the outlet."""
    return resident("11", n, prefecture=f"{n:02d}")


def flagged(when: timedelta, n: int, agent: str | None = AGENT, **fields: Any) -> PseudonymousEvent:
    """An activation by non-local person n without in-person checks: an identity alert."""
    if agent is not None:
        fields["agent_id"] = agent
    return ev(when, id=person(n), verification="remote_face", **fields)


def agent_id(event: PseudonymousEvent, agent: str = AGENT) -> str:
    return make_alert_id(RULE, agent, event.source, event.event_id)


def agent_state(s: Screening, agent: str = AGENT) -> AgentState:
    return s.agents[agent]


def screening_alerts(event: PseudonymousEvent) -> list[Alert]:
    """The alerts of one event screened alone."""
    return screening().screen(event)


def test_fires_on_the_10th_alerted_identity_with_its_content() -> None:
    s = screening()
    events = [flagged(n * HOUR, n) for n in range(1, 11)]
    out = [s.screen(event) for event in events]
    assert [[a.rule_id for a in alerts] for alerts in out] == [
        ["sim_nonlocal_not_in_person"]
    ] * 9 + [["sim_nonlocal_not_in_person", RULE]]
    trigger, alert = events[9], out[9][1]
    assert alert.alert_id == agent_id(trigger)
    assert (alert.severity, alert.action) == ("high", "review")
    assert alert.subject == Subject("agent", AGENT)
    assert (alert.event_time, alert.detected_at) == (trigger.occurred_at, DETECTED)
    assert (alert.source, alert.region_code) == (trigger.source, trigger.region_code)
    assert alert.facts == {
        "identities": sorted(key_of(person(n)) for n in range(1, 11)),
        "count": 10,
        "alerts": sorted(alerts[0].alert_id for alerts in out),
        "window": "30d",
    }
    assert alert.evidence == evidence(*events)
    assert alert.summary_zh == "受理工号30天内经办10名被预警客户"
    assert alert.summary_en == "agent handled 10 alerted customers within 30 days"


def test_threshold_comes_from_settings() -> None:
    events = [flagged(n * HOUR, n) for n in range(1, 5)]
    settings = rules(agent_flag_rate={"identities": 3, "severity": "critical", "cooldown": ""})
    alerts = run(screening(settings), events, RULE)
    assert [a.alert_id for a in alerts] == [agent_id(events[2]), agent_id(events[3])]
    assert [(a.facts["count"], a.severity) for a in alerts] == [(3, "critical"), (4, "critical")]


def test_the_same_identity_alerted_twice_counts_once() -> None:
    s = screening()
    # person 1 twice: the second time two rules fire (not in person, monthly limit)
    twice = [flagged(0 * DAY, 1), flagged(HOUR, 1)]
    others = [flagged(n * HOUR, n) for n in range(2, 10)]
    assert run(s, [*twice, *others], RULE) == []
    assert len(agent_state(s).flags.items) == 1 + 2 + 8
    tenth = flagged(10 * HOUR, 10)
    [alert] = run(s, [tenth], RULE)
    assert alert.facts["count"] == 10
    assert len(alert.facts["alerts"]) == 12  # type: ignore[arg-type]
    assert alert.evidence == evidence(*twice, *others, tenth)  # each event once


def test_one_event_with_two_identity_alerts_is_one_piece_of_evidence() -> None:
    settings = rules(agent_flag_rate={"identities": 2})
    first = flagged(0 * DAY, 1, delivery=mailed("530102"))  # mail and not-in-person
    second = flagged(HOUR, 2)
    alerts = run(screening(settings), [first, second], RULE)
    assert [a.alert_id for a in alerts] == [agent_id(second)]
    assert alerts[0].evidence == evidence(first, second)
    assert len(alerts[0].facts["alerts"]) == 3  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "extra",
    [
        flagged(10 * HOUR, 10, agent=None),  # no agent
        flagged(10 * HOUR, 10, agent="A-00001"),  # another agent
        ev(10 * HOUR, id=person(10), agent_id=AGENT),  # an agent's event with no alert
        ev(10 * HOUR, id=person(10), agent_id=AGENT, verification="none", event_type="sim.cancel"),
    ],
)
def test_counts_only_alerted_identities_on_this_agents_events(extra: PseudonymousEvent) -> None:
    events = [flagged(n * HOUR, n) for n in range(1, 10)]
    assert run(screening(), [*events, extra], RULE) == []


def test_events_without_agent_leave_no_agent_state() -> None:
    s = screening()
    assert [a.rule_id for a in run(s, [flagged(0 * DAY, 1, agent=None)])] == [
        "sim_nonlocal_not_in_person"
    ]
    assert s.agents == {}


@pytest.mark.parametrize(("gap", "fires"), [(30 * DAY, True), (30 * DAY + SECOND, False)])
def test_window_edge(gap: timedelta, fires: bool) -> None:
    events = [flagged(0 * DAY, 1), *[flagged(gap, n) for n in range(2, 11)]]
    alerts = run(screening(), events, RULE)
    assert [a.alert_id for a in alerts] == ([agent_id(events[-1])] if fires else [])


def test_cooldown_is_30_days() -> None:
    burst = [flagged(0 * DAY, n) for n in range(1, 11)]
    quiet = flagged(30 * DAY - SECOND, 11)
    again = flagged(30 * DAY, 12)
    alerts = run(screening(), [*burst, quiet, again], RULE)
    assert [a.alert_id for a in alerts] == [agent_id(burst[-1]), agent_id(again)]
    assert alerts[1].facts["count"] == 12


def test_a_repeated_event_is_not_flagged_twice() -> None:
    s = screening()
    events = [flagged(n * HOUR, n) for n in range(1, 10)]
    assert run(s, [*events, events[8], events[0]], RULE) == []
    assert [f.evidence for f in agent_state(s).flags.items] == list(evidence(*events))
    # the same signal applied twice directly changes nothing either
    [signal] = s.engine.agent_signals(events[0], screening_alerts(events[0])[:1])
    decision = s.engine.screen_agent(agent_state(s), signal)
    assert (decision.applied, decision.alerts) == (False, [])


def test_agent_state_forgets_flags_older_than_30_days_and_ended_cooldowns() -> None:
    s = screening()
    burst = [flagged(n * SECOND, n) for n in range(1, 11)]
    assert len(run(s, burst, RULE)) == 1
    state = agent_state(s)
    assert state.cooldowns == {RULE: (T0 + 10 * SECOND + 30 * DAY).timestamp()}
    later = flagged(30 * DAY + 5 * SECOND, 11)  # the flag at 5 s is exactly 30 days before
    assert run(s, [later], RULE) == []
    assert [f.evidence for f in state.flags.items] == list(evidence(*burst[4:], later))
    assert state.cooldowns == {RULE: (T0 + 10 * SECOND + 30 * DAY).timestamp()}
    last = flagged(60 * DAY, 12)
    assert run(s, [last], RULE) == []
    assert [f.evidence for f in state.flags.items] == list(evidence(later, last))
    assert state.flags.keys() == {f.alert_id for f in state.flags.items}
    assert state.cooldowns == {}


def test_agent_signals_come_from_identity_alerts_on_events_with_an_agent() -> None:
    e = engine()
    event = flagged(0 * DAY, 1)
    alerts = screening_alerts(event)
    [signal] = e.agent_signals(event, alerts)
    assert (signal.agent_id, signal.subject_key, signal.alert_id) == (
        AGENT,
        key_of(person(1)),
        alerts[0].alert_id,
    )
    assert (signal.ts, signal.region_code) == (event.occurred_at.timestamp(), "620102")
    assert signal.evidence == evidence(event)[0]
    assert e.agent_signals(flagged(0 * DAY, 1, agent=None), alerts) == []
    assert engine(only("sim_nonlocal_not_in_person")).agent_signals(event, alerts) == []


def test_outlet_alerts_do_not_feed_the_agent() -> None:
    # five people on one device: a gang alert (outlet), no identity alert
    events = [
        ev(n * SECOND, id=resident("62", n), device_id="dev-1", agent_id=AGENT) for n in range(1, 6)
    ]
    settings = rules(agent_flag_rate={"identities": 1})
    assert [a.rule_id for a in run(screening(settings), events)] == ["gang_batch_open"]


def test_without_a_cooldown_it_fires_once_per_event_not_once_per_identity_alert() -> None:
    settings = rules(agent_flag_rate={"identities": 2, "cooldown": ""})
    first = flagged(0 * DAY, 1)
    second = flagged(HOUR, 2, delivery=mailed("530102"))  # mail and not-in-person
    third = flagged(2 * HOUR, 3)
    s = screening(settings)
    alerts = run(s, [first, second, third], RULE)
    assert [a.alert_id for a in alerts] == [agent_id(second), agent_id(third)]
    assert alerts[1].facts["count"] == 3
    assert len(alerts[1].facts["alerts"]) == 4  # type: ignore[arg-type]
    assert alerts[1].evidence == evidence(first, second, third)

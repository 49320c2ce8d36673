"""The seven identity rules, through the engine: thresholds, windows, cooldowns, scope, content.

Each story screens plain events (rulekit.ev) with a fixed clock and looks at
the alerts of one rule; the state tests look at the IdentityState itself.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from typing import Any

import pytest
from rulekit import (
    BEIJING,
    CST,
    DAY,
    DETECTED,
    GANSU,
    HOUR,
    SECOND,
    T0,
    bank,
    engine,
    ev,
    evidence,
    identity_alert_id,
    identity_subject,
    key_of,
    mailed,
    only,
    rules,
    run,
    screening,
)

from rules.alert import Alert
from rules.engine import Screening
from rules.event import PseudonymousEvent
from rules.state import IdentityState, WatchEntry, decode_identity, encode_identity, event_key

CHURN = "sim_churn"
MAIL = "sim_mail_out_of_province"
MONTHLY = "sim_nonlocal_monthly_limit"
IN_PERSON = "sim_nonlocal_not_in_person"
WATCH = "watchlist_hit"
BANKS = "bank_multi_open"
TWO_CARDS = "two_cards_combo"

NONLOCAL = BEIJING[0]  # a Beijing ID at the (Gansu) default outlet
LOCAL = GANSU[0]


def ids(alerts: list[Alert]) -> list[str]:
    return [a.alert_id for a in alerts]


def fired_on(rule_id: str, *events: PseudonymousEvent) -> list[str]:
    """The alert ids `rule_id` gives when it fires on each of `events`."""
    return [identity_alert_id(rule_id, e) for e in events]


def identity(s: Screening, id_number: str) -> IdentityState:
    return s.identities[key_of(id_number)]


def cancel(when: timedelta, **fields: Any) -> PseudonymousEvent:
    return ev(when, "sim.cancel", **fields)


# ---------------------------------------------------------------- sim_churn


def test_churn_fires_on_the_third_cancellation_with_its_content() -> None:
    s = screening()
    c1, c2, c3 = cancel(0 * DAY), cancel(100 * DAY), cancel(200 * DAY)
    assert run(s, [c1, c2], CHURN) == []
    [alert] = run(s, [c3], CHURN)
    assert alert.alert_id == identity_alert_id(CHURN, c3)
    assert (alert.rule_id, alert.severity, alert.action) == (CHURN, "medium", "review")
    assert alert.subject == identity_subject(LOCAL)
    assert (alert.event_time, alert.detected_at) == (c3.occurred_at, DETECTED)
    assert (alert.source, alert.region_code) == ("CMCC-GS", "620102")
    assert alert.facts == {"cancellations": 3, "window": "365d"}
    assert alert.evidence == evidence(c1, c2, c3)
    assert alert.summary_zh == "365天内注销号卡3次"
    assert alert.summary_en == "3 SIM cancellations within 365 days"


def test_churn_threshold_comes_from_settings() -> None:
    c1, c2, c3 = cancel(0 * DAY), cancel(1 * DAY), cancel(2 * DAY)
    assert ids(run(screening(rules(sim_churn={"cancels": 2})), [c1, c2, c3], CHURN)) == fired_on(
        CHURN, c2
    )
    assert run(screening(rules(sim_churn={"cancels": 4})), [c1, c2, c3], CHURN) == []


@pytest.mark.parametrize(("gap", "fires"), [(365 * DAY, True), (365 * DAY + SECOND, False)])
def test_churn_window_edge(gap: timedelta, fires: bool) -> None:
    events = [cancel(0 * DAY), cancel(200 * DAY), cancel(gap)]
    alerts = run(screening(), events, CHURN)
    assert ids(alerts) == (fired_on(CHURN, events[2]) if fires else [])


def test_churn_cooldown_is_30_days_and_an_activation_fires_too() -> None:
    c1, c2, c3 = cancel(0 * DAY), cancel(1 * DAY), cancel(2 * DAY)
    t = 2 * DAY
    quiet = cancel(t + 30 * DAY - SECOND)
    again = ev(t + 30 * DAY)  # an activation, with 4 cancellations in the window
    alerts = run(screening(), [c1, c2, c3, quiet, again], CHURN)
    assert ids(alerts) == fired_on(CHURN, c3, again)
    assert alerts[1].facts == {"cancellations": 4, "window": "365d"}
    assert alerts[1].evidence == evidence(c1, c2, c3, quiet, again)
    # without the cooldown the quiet one would have fired
    no_cooldown = screening(rules(sim_churn={"cooldown": ""}))
    assert ids(run(no_cooldown, [c1, c2, c3, quiet, again], CHURN)) == fired_on(
        CHURN, c3, quiet, again
    )


def test_churn_counts_only_this_identitys_cancellations() -> None:
    others = [
        cancel(0 * DAY, id=GANSU[1]),
        cancel(1 * DAY, id=GANSU[2]),
        ev(2 * DAY),
        ev(3 * DAY, "bank.close"),
        bank(4 * DAY),
    ]
    events = [*others, cancel(5 * DAY), cancel(6 * DAY)]
    assert run(screening(), events, CHURN) == []


def test_churn_counts_a_repeated_cancellation_once() -> None:
    s = screening()
    c1, c2 = cancel(0 * DAY), cancel(1 * DAY)
    assert run(s, [c1, c2, c2, c1], CHURN) == []
    assert [m.event_id for m in identity(s, LOCAL).marks] == [c1.event_id, c2.event_id]
    # and the engine says the repeat changed nothing
    decision = s.engine.screen_identity(identity(s, LOCAL), c2)
    assert (decision.applied, decision.alerts) == (False, [])


def test_churn_state_is_pruned_to_365_days_and_its_cooldown_dropped() -> None:
    s = screening()
    c1, c2, c3 = cancel(0 * DAY), cancel(1 * DAY), cancel(2 * DAY)
    assert ids(run(s, [c1, c2, c3], CHURN)) == fired_on(CHURN, c3)
    state = identity(s, LOCAL)
    assert state.cooldowns == {CHURN: (T0 + 32 * DAY).timestamp()}
    later = ev(1 * DAY + 365 * DAY)  # c2 is exactly 365 days before it: kept
    assert run(s, [later], CHURN) == []
    assert [m.event_id for m in state.marks] == [c2.event_id, c3.event_id, later.event_id]
    assert state.history.keys() == {event_key(c2), event_key(c3), event_key(later)}
    assert state.history.latest == later.occurred_at.timestamp()
    assert state.cooldowns == {}
    # c2 and c3 still count, c1 is forgotten: three cancellations, not four
    c4 = cancel(1 * DAY + 365 * DAY)
    [alert] = run(s, [c4], CHURN)
    assert alert.facts == {"cancellations": 3, "window": "365d"}
    assert alert.evidence == evidence(c2, c3, c4)


# ---------------------------------------------------------------- sim_mail_out_of_province


@pytest.mark.parametrize(
    ("id_number", "destination", "severity"),
    [
        (LOCAL, "530102", "high"),  # Yunnan: a hotspot
        (LOCAL, "450102", "high"),  # Guangxi: a hotspot
        (LOCAL, "510104", "medium"),  # Sichuan, local ID
        (NONLOCAL, "510104", "high"),  # Sichuan, non-local ID
    ],
)
def test_mail_fires_on_every_mailed_sim_to_another_province(
    id_number: str, destination: str, severity: str
) -> None:
    first = ev(0 * DAY, id=id_number, delivery=mailed(destination))
    second = ev(1 * HOUR, id=id_number, delivery=mailed(destination))
    alerts = run(screening(), [first, second], MAIL)
    assert ids(alerts) == fired_on(MAIL, first, second)
    assert [a.severity for a in alerts] == [severity, severity]
    assert alerts[0].action == "review"
    assert alerts[0].subject == identity_subject(id_number)
    assert alerts[0].evidence == evidence(first)
    assert alerts[0].facts == {
        "outlet_province": "62",
        "delivery_province": destination[:2],
        "hotspot": destination[:2] in ("53", "45"),
        "nonlocal_id": id_number == NONLOCAL,
        "id_province": id_number[:2],
    }


def test_mail_summaries_state_the_provinces() -> None:
    [hotspot] = run(screening(), [ev(0 * DAY, delivery=mailed("530102"))], MAIL)
    assert hotspot.summary_zh == "号卡在甘肃(62)办理后邮寄至外省云南(53)，寄往涉诈高发地区"
    assert hotspot.summary_en == (
        "SIM opened in Gansu (62) mailed out of province to Yunnan (53), a fraud hotspot"
    )
    [both] = run(screening(), [ev(0 * DAY, id=NONLOCAL, delivery=mailed("450102"))], MAIL)
    assert both.summary_zh == (
        "号卡在甘肃(62)办理后邮寄至外省广西(45)，寄往涉诈高发地区，且为外地身份证"
    )
    assert both.summary_en == (
        "SIM opened in Gansu (62) mailed out of province to Guangxi (45), "
        "a fraud hotspot; non-local ID"
    )


@pytest.mark.parametrize(
    "event",
    [
        ev(0 * DAY, delivery=mailed("620502")),  # within Gansu
        ev(0 * DAY, delivery={"method": "pickup", "region_code": "530102"}),
        ev(0 * DAY),  # no delivery
        ev(0 * DAY, "sim.cancel", delivery=mailed("530102")),
        bank(0 * DAY, delivery=mailed("530102")),
    ],
)
def test_mail_does_not_fire(event: PseudonymousEvent) -> None:
    assert run(screening(), [event], MAIL) == []


def test_mail_hotspots_and_severities_come_from_settings() -> None:
    settings = rules(
        sim_mail_out_of_province={
            "hotspot_provinces": ("51",),
            "severity": "low",
            "escalated_severity": "critical",
        }
    )
    events = [ev(0 * DAY, delivery=mailed("510104")), ev(HOUR, delivery=mailed("530102"))]
    alerts = run(screening(settings), events, MAIL)
    assert [(a.severity, a.facts["hotspot"]) for a in alerts] == [
        ("critical", True),
        ("low", False),
    ]


def test_mail_fires_once_for_a_repeated_event() -> None:
    event = ev(0 * DAY, delivery=mailed("530102"))
    assert ids(run(screening(), [event, event], MAIL)) == fired_on(MAIL, event)


def test_a_disabled_rule_is_silent() -> None:
    settings = rules(sim_mail_out_of_province={"enabled": False})
    assert run(screening(settings), [ev(0 * DAY, delivery=mailed("530102"))]) == []


# ---------------------------------------------------------------- sim_nonlocal_monthly_limit


def test_monthly_limit_fires_on_the_second_nonlocal_sim_and_every_one_after() -> None:
    s = screening()
    first, second, third = (ev(d * DAY, id=NONLOCAL) for d in (0, 10, 20))
    assert run(s, [first], MONTHLY) == []
    [alert] = run(s, [second], MONTHLY)
    assert alert.alert_id == identity_alert_id(MONTHLY, second)
    assert (alert.severity, alert.action) == ("high", "block")
    assert alert.subject == identity_subject(NONLOCAL)
    assert alert.facts == {
        "activations": 2,
        "window": "30d",
        "outlet_province": "62",
        "id_province": "11",
    }
    assert alert.evidence == evidence(first, second)
    assert alert.summary_zh == "外地身份证30天内在甘肃(62)办理第2张号卡"
    assert alert.summary_en == "non-local ID opened SIM no. 2 in Gansu (62) within 30 days"
    [third_alert] = run(s, [third], MONTHLY)  # each event: no cooldown
    assert third_alert.alert_id == identity_alert_id(MONTHLY, third)
    assert third_alert.facts["activations"] == 3
    assert third_alert.evidence == evidence(first, second, third)


def test_monthly_limit_threshold_comes_from_settings() -> None:
    events = [ev(d * DAY, id=NONLOCAL) for d in (0, 1, 2)]
    settings = rules(sim_nonlocal_monthly_limit={"activations": 3, "action": "review"})
    alerts = run(screening(settings), events, MONTHLY)
    assert ids(alerts) == fired_on(MONTHLY, events[2])
    assert alerts[0].action == "review"


@pytest.mark.parametrize(("gap", "fires"), [(30 * DAY, True), (30 * DAY + SECOND, False)])
def test_monthly_limit_window_edge(gap: timedelta, fires: bool) -> None:
    events = [ev(0 * DAY, id=NONLOCAL), ev(gap, id=NONLOCAL)]
    assert ids(run(screening(), events, MONTHLY)) == (fired_on(MONTHLY, events[1]) if fires else [])


@pytest.mark.parametrize(
    "events",
    [
        # local ID: no limit
        [ev(0 * DAY), ev(1 * DAY)],
        # the first SIM was in Shanghai (31), the second in Gansu: another outlet province
        [ev(0 * DAY, id=NONLOCAL, region="310101", outlet="SH-1"), ev(1 * DAY, id=NONLOCAL)],
        # the first SIM was local (in Beijing)
        [ev(0 * DAY, id=NONLOCAL, region="110101", outlet="BJ-1"), ev(1 * DAY, id=NONLOCAL)],
        # a bank account and a cancellation are not activations
        [
            bank(0 * DAY, id=NONLOCAL),
            ev(1 * DAY, "sim.cancel", id=NONLOCAL),
            ev(2 * DAY, id=NONLOCAL),
        ],
        # another person from Beijing
        [ev(0 * DAY, id=BEIJING[1]), ev(1 * DAY, id=NONLOCAL)],
        # the same activation twice
        [ev(0 * DAY, id=NONLOCAL, event_id="X-1"), ev(0 * DAY, id=NONLOCAL, event_id="X-1")],
    ],
)
def test_monthly_limit_scope(events: list[PseudonymousEvent]) -> None:
    assert run(screening(), events, MONTHLY) == []


def test_monthly_limit_counts_nonlocal_sims_in_the_same_province_at_other_outlets() -> None:
    events = [ev(0 * DAY, id=NONLOCAL, outlet="GS-TS-1", region="620502"), ev(DAY, id=NONLOCAL)]
    [alert] = run(screening(), events, MONTHLY)
    assert alert.evidence == evidence(*events)


def test_history_is_kept_for_the_longest_identity_window_even_of_a_disabled_rule() -> None:
    # it also recognises repeated events, which must not depend on which rules are on
    s = screening(only(MONTHLY))
    first, second = ev(0 * DAY, id=NONLOCAL), ev(10 * DAY, id=NONLOCAL)
    run(s, [first, second])
    later = ev(40 * DAY, id=NONLOCAL)  # second is exactly 30 days before: counted
    assert ids(run(s, [later])) == fired_on(MONTHLY, later)
    marks = [m.event_id for m in identity(s, NONLOCAL).marks]
    assert marks == [first.event_id, second.event_id, later.event_id]
    assert run(s, [first]) == []  # a repeat 40 days on is still known
    beyond = ev(406 * DAY, id=NONLOCAL)  # past 365 days (sim_churn's window, though off)
    run(s, [beyond])
    assert [m.event_id for m in identity(s, NONLOCAL).marks] == [beyond.event_id]


# ---------------------------------------------------------------- sim_nonlocal_not_in_person


def test_not_in_person_fires_on_each_remote_activation_by_a_nonlocal_id() -> None:
    remote = ev(0 * DAY, id=NONLOCAL, verification="remote_face", channel="online")
    unverified = ev(HOUR, id=NONLOCAL, verification="none", channel="dealer")
    alerts = run(screening(), [remote, unverified], IN_PERSON)
    assert ids(alerts) == fired_on(IN_PERSON, remote, unverified)
    first = alerts[0]
    assert (first.severity, first.action) == ("medium", "review")
    assert first.subject == identity_subject(NONLOCAL)
    assert first.facts == {
        "verification": "remote_face",
        "channel": "online",
        "id_province": "11",
        "outlet_province": "62",
    }
    assert first.evidence == evidence(remote)
    assert (
        first.summary_zh
        == "外地身份证（北京(11)）在甘肃(62)未经现场实人认证办理号卡（remote_face）"
    )
    assert first.summary_en == (
        "non-local ID from Beijing (11) opened a SIM in Gansu (62) "
        "without in-person verification (remote_face)"
    )
    assert alerts[1].facts["verification"] == "none"


@pytest.mark.parametrize(
    "event",
    [
        ev(0 * DAY, id=NONLOCAL, verification="in_person"),
        ev(0 * DAY, verification="remote_face"),  # local
        ev(0 * DAY, id="E12345678", id_type="other", verification="remote_face"),
        bank(0 * DAY, id=NONLOCAL, verification="remote_face"),
        ev(0 * DAY, "sim.cancel", id=NONLOCAL, verification="remote_face"),
    ],
)
def test_not_in_person_scope(event: PseudonymousEvent) -> None:
    assert run(screening(), [event], IN_PERSON) == []


def test_not_in_person_severity_comes_from_settings_and_repeats_do_not_fire() -> None:
    settings = rules(sim_nonlocal_not_in_person={"severity": "high", "action": "block"})
    event = ev(0 * DAY, id=NONLOCAL, verification="none")
    alerts = run(screening(settings), [event, event], IN_PERSON)
    assert ids(alerts) == fired_on(IN_PERSON, event)
    assert (alerts[0].severity, alerts[0].action) == ("high", "block")


# ---------------------------------------------------------------- watchlist_hit

ENTRY = WatchEntry("telecom", date(2025, 3, 1), date(2030, 3, 1), "credit_punishment", "sold")


def watched(entry: WatchEntry = ENTRY, id_number: str = LOCAL) -> Screening:
    s = screening()
    s.watch(key_of(id_number), entry)
    return s


def entry(
    scope: str = "telecom", since: str = "2025-03-01", until: str = "2030-03-01"
) -> WatchEntry:
    return WatchEntry(scope, date.fromisoformat(since), date.fromisoformat(until), "cp")


def test_watchlist_fires_on_every_opening_with_its_content() -> None:
    first, second = ev(0 * DAY), ev(DAY)
    alerts = run(watched(), [first, second], WATCH)
    assert ids(alerts) == fired_on(WATCH, first, second)
    alert = alerts[0]
    assert (alert.severity, alert.action) == ("critical", "block")
    assert alert.subject == identity_subject(LOCAL)
    assert alert.facts == {
        "list": "credit_punishment",
        "scope": "telecom",
        "since": "2025-03-01",
        "until": "2030-03-01",
        "reason": "sold",
    }
    assert alert.evidence == evidence(first)
    assert (
        alert.summary_zh == "失信惩戒名单人员（credit_punishment，2025-03-01至2030-03-01）办理号卡"
    )
    assert alert.summary_en == (
        "person on the credit_punishment list (telecom, 2025-03-01 to 2030-03-01) opened a SIM"
    )


def test_the_basis_of_a_listing_is_repeated_in_the_alert() -> None:
    basis = "2024 joint punishment, conviction"
    listed = WatchEntry(
        "telecom", date(2025, 3, 1), date(2028, 3, 1), "credit_punishment", "sold", basis
    )
    [alert] = run(watched(listed), [ev(0 * DAY)], WATCH)
    assert alert.facts["basis"] == basis
    assert alert.summary_en.endswith(f"opened a SIM; basis: {basis}")
    assert alert.summary_zh.endswith(f"办理号卡；依据：{basis}")
    state = decode_identity(encode_identity(watched(listed).identities[key_of(LOCAL)]))
    assert state.watch == listed


def test_watchlist_bank_summary_and_settings() -> None:
    s = screening(rules(watchlist_hit={"severity": "high", "action": "review"}))
    s.watch(key_of(LOCAL), entry("bank"))
    [alert] = run(s, [bank(0 * DAY)], WATCH)
    assert (alert.severity, alert.action) == ("high", "review")
    assert alert.summary_zh == "失信惩戒名单人员（cp，2025-03-01至2030-03-01）办理银行账户"
    assert alert.summary_en == (
        "person on the cp list (bank, 2025-03-01 to 2030-03-01) opened a bank account"
    )


@pytest.mark.parametrize(
    ("scope", "event_type", "fires"),
    [
        ("telecom", "sim.activate", True),
        ("telecom", "bank.open", False),
        ("bank", "sim.activate", False),
        ("bank", "bank.open", True),
        ("all", "sim.activate", True),
        ("all", "bank.open", True),
        ("all", "sim.cancel", False),
        ("all", "bank.close", False),
    ],
)
def test_watchlist_scope(scope: str, event_type: str, fires: bool) -> None:
    event = ev(0 * DAY, event_type)
    assert ids(run(watched(entry(scope)), [event], WATCH)) == (
        fired_on(WATCH, event) if fires else []
    )


EAST_8 = CST
WEST_5 = timezone(timedelta(hours=-5))


@pytest.mark.parametrize(
    ("when", "since", "until", "fires"),
    [
        # 2025-03-01 00:30 in +08:00 is still 2025-02-28 in UTC: the local date counts
        (datetime(2025, 3, 1, 0, 30, tzinfo=EAST_8), "2025-03-01", "2030-03-01", True),
        (datetime(2025, 3, 1, 0, 30, tzinfo=EAST_8), "2020-03-01", "2025-03-01", False),
        (datetime(2025, 2, 28, 23, 59, 59, tzinfo=EAST_8), "2025-03-01", "2030-03-01", False),
        (datetime(2025, 2, 28, 23, 59, 59, tzinfo=EAST_8), "2020-03-01", "2025-03-01", True),
        # 2025-02-28 20:00 in -05:00 is 2025-03-01 in UTC: still the 28th here
        (datetime(2025, 2, 28, 20, 0, tzinfo=WEST_5), "2025-03-01", "2030-03-01", False),
        (datetime(2025, 2, 28, 20, 0, tzinfo=WEST_5), "2020-03-01", "2025-03-01", True),
    ],
)
def test_watchlist_since_is_inclusive_and_until_exclusive_in_the_local_date(
    when: datetime, since: str, until: str, fires: bool
) -> None:
    event = ev(when)
    alerts = run(watched(entry(since=since, until=until)), [event], WATCH)
    assert ids(alerts) == (fired_on(WATCH, event) if fires else [])


def test_watchlist_entry_removed_replaced_and_other_people() -> None:
    s = watched()
    first = ev(0 * DAY)
    assert ids(run(s, [first, ev(0 * DAY, id=GANSU[1])], WATCH)) == fired_on(WATCH, first)
    s.watch(key_of(LOCAL), None)
    assert identity(s, LOCAL).watch is None
    assert run(s, [ev(DAY)], WATCH) == []
    s.watch(key_of(LOCAL), entry("bank"))
    assert run(s, [ev(2 * DAY)], WATCH) == []
    opening = bank(3 * DAY)
    assert ids(run(s, [opening], WATCH)) == fired_on(WATCH, opening)


def test_watchlist_removal_of_an_unknown_person_keeps_no_state() -> None:
    s = screening()
    s.watch(key_of(LOCAL), None)
    assert s.identities == {}


def test_a_police_punishment_bars_like_an_entry_and_coexists_with_the_list() -> None:
    s = screening()
    punished = WatchEntry("telecom", date(2025, 3, 1), date(2027, 3, 1), "police disposition")
    s.punish(key_of(LOCAL), "a1", punished)
    first = ev(0 * DAY)
    [alert] = run(s, [first], WATCH)
    assert alert.facts["list"] == "police disposition"
    state = decode_identity(encode_identity(identity(s, LOCAL)))
    assert state.punished == {"a1": punished}
    s.watch(key_of(LOCAL), entry("bank"))  # the list keepers' entry does not lift the police's
    assert len(run(s, [ev(DAY)], WATCH)) == 1
    s.punish(key_of(LOCAL), "a1", None)  # the appeal
    assert run(s, [ev(2 * DAY)], WATCH) == []
    opening = bank(3 * DAY)
    assert ids(run(s, [opening], WATCH)) == fired_on(WATCH, opening)  # the list's bank entry


def test_watchlist_repeated_event_fires_once() -> None:
    event = ev(0 * DAY)
    assert ids(run(watched(), [event, event], WATCH)) == fired_on(WATCH, event)


# ---------------------------------------------------------------- bank_multi_open


def test_bank_multi_open_fires_at_the_third_distinct_bank_with_its_content() -> None:
    s = screening()
    icbc, abc, icbc2 = bank(0 * DAY), bank(DAY, "ABC-GS"), bank(2 * DAY)
    assert run(s, [icbc, abc, icbc2], BANKS) == []  # ICBC twice is one bank
    ccb = bank(3 * DAY, "CCB-GS")
    [alert] = run(s, [ccb], BANKS)
    assert alert.alert_id == identity_alert_id(BANKS, ccb)
    assert (alert.severity, alert.action) == ("high", "review")
    assert alert.subject == identity_subject(LOCAL)
    assert (alert.source, alert.event_time) == ("CCB-GS", ccb.occurred_at)
    assert alert.facts == {"banks": 3, "sources": ["ABC-GS", "CCB-GS", "ICBC-GS"], "window": "7d"}
    assert alert.evidence == evidence(icbc, abc, icbc2, ccb)
    assert alert.summary_zh == "7天内在3家银行开户"
    assert alert.summary_en == "accounts opened at 3 banks within 7 days"


def test_bank_multi_open_threshold_comes_from_settings() -> None:
    events = [bank(0 * DAY), bank(DAY, "ABC-GS"), bank(2 * DAY, "CCB-GS")]
    two = run(screening(rules(bank_multi_open={"banks": 2})), events, BANKS)
    assert ids(two) == fired_on(BANKS, events[1])
    assert run(screening(rules(bank_multi_open={"banks": 4})), events, BANKS) == []


@pytest.mark.parametrize(("gap", "fires"), [(7 * DAY, True), (7 * DAY + SECOND, False)])
def test_bank_multi_open_window_edge(gap: timedelta, fires: bool) -> None:
    events = [bank(0 * DAY), bank(DAY, "ABC-GS"), bank(gap, "CCB-GS")]
    assert ids(run(screening(), events, BANKS)) == (fired_on(BANKS, events[2]) if fires else [])


def test_bank_multi_open_cooldown_is_7_days() -> None:
    # three banks within one second: all of them stay in every window below
    opens = [bank(0 * DAY), bank(0 * DAY, "ABC-GS"), bank(SECOND, "CCB-GS")]
    t = SECOND
    quiet = bank(t + 7 * DAY - SECOND, "BOC-GS")
    again = bank(t + 7 * DAY, "CMB-GS")
    alerts = run(screening(), [*opens, quiet, again], BANKS)
    assert ids(alerts) == fired_on(BANKS, opens[2], again)
    # ICBC and ABC are 7 days + 1 s old by then: out of the window
    assert alerts[1].facts == {
        "banks": 3,
        "sources": ["BOC-GS", "CCB-GS", "CMB-GS"],
        "window": "7d",
    }
    assert alerts[1].evidence == evidence(opens[2], quiet, again)


def test_bank_multi_open_counts_a_repeated_event_once_and_other_people_not() -> None:
    icbc, abc = bank(0 * DAY), bank(DAY, "ABC-GS")
    others = [bank(DAY, "CCB-GS", id=GANSU[1]), ev(DAY)]
    assert run(screening(), [icbc, abc, abc, icbc, *others], BANKS) == []
    ccb = bank(2 * DAY, "CCB-GS")
    [alert] = run(screening(), [icbc, icbc, abc, ccb], BANKS)
    assert alert.evidence == evidence(icbc, abc, ccb)


def test_bank_multi_open_state_keeps_a_running_cooldown_and_drops_old_marks() -> None:
    s = screening(only(BANKS))
    opens = [bank(0 * DAY), bank(DAY, "ABC-GS"), bank(2 * DAY, "CCB-GS")]
    run(s, opens)
    state = identity(s, LOCAL)
    until = (T0 + 9 * DAY).timestamp()
    assert state.cooldowns == {BANKS: until}
    later = bank(8 * DAY + SECOND, "BOC-GS")  # the first two are out of the 7-day window
    assert run(s, [later]) == []
    assert state.cooldowns == {BANKS: until}  # still running
    last = bank(9 * DAY, "BOC-GS")  # two banks in 7 days: no alert; the cooldown has ended
    assert run(s, [last]) == []
    assert state.cooldowns == {}
    # marks stay for the longest identity window (sim_churn's 365 days), then go
    assert [m.event_id for m in state.marks] == [e.event_id for e in (*opens, later, last)]
    gone = bank(400 * DAY, "BOC-GS")
    run(s, [gone])
    assert [m.event_id for m in state.marks] == [gone.event_id]


# ---------------------------------------------------------------- two_cards_combo


def test_two_cards_fires_on_a_bank_account_after_a_nonlocal_sim() -> None:
    sim = ev(0 * DAY, id=NONLOCAL)
    account = bank(48 * HOUR, id=NONLOCAL, region="110101", outlet="BJ-ICBC-1")  # local
    [alert] = run(screening(), [sim, account], TWO_CARDS)
    assert alert.alert_id == identity_alert_id(TWO_CARDS, account)
    assert (alert.severity, alert.action) == ("high", "review")
    assert alert.subject == identity_subject(NONLOCAL)
    assert alert.region_code == "110101"
    assert alert.facts == {"window": "48h", "sims": 1, "bank_accounts": 1, "id_province": "11"}
    assert alert.evidence == evidence(sim, account)
    assert alert.summary_zh == "48小时内办理号卡和银行账户（两卡），涉及外地身份证"
    assert (
        alert.summary_en == "a SIM and a bank account opened within 48 hours, with a non-local ID"
    )


def test_two_cards_fires_on_a_nonlocal_sim_after_a_local_account() -> None:
    account = bank(0 * DAY, id=NONLOCAL, region="110101", outlet="BJ-ICBC-1")
    sims = [ev(HOUR, id=NONLOCAL, region="110101", outlet="BJ-1"), ev(2 * HOUR, id=NONLOCAL)]
    [alert] = run(screening(), [account, *sims], TWO_CARDS)
    assert alert.alert_id == identity_alert_id(TWO_CARDS, sims[1])
    assert alert.evidence == evidence(account, sims[1])


def test_two_cards_lists_every_partner_in_the_window() -> None:
    sims = [ev(0 * DAY, id=NONLOCAL), ev(HOUR, id=NONLOCAL, source="CUCC-GS")]
    account = bank(2 * HOUR, id=NONLOCAL)
    [alert] = run(screening(), [*sims, account], TWO_CARDS)
    assert alert.facts["sims"] == 2
    assert alert.evidence == evidence(*sims, account)


@pytest.mark.parametrize(
    "events",
    [
        # both local
        [ev(0 * DAY), bank(HOUR)],
        # both local, for a Beijing ID in Beijing
        [ev(0 * DAY, id=NONLOCAL, region="110101"), bank(HOUR, id=NONLOCAL, region="110101")],
        # two SIMs, no account; two accounts, no SIM
        [ev(0 * DAY, id=NONLOCAL), ev(HOUR, id=NONLOCAL)],
        [bank(0 * DAY, id=NONLOCAL), bank(HOUR, id=NONLOCAL, source="ABC-GS")],
        # a cancellation and a closing are not openings
        [ev(0 * DAY, "sim.cancel", id=NONLOCAL), bank(HOUR, id=NONLOCAL, region="110101")],
        [ev(0 * DAY, "bank.close", id=NONLOCAL), ev(HOUR, id=NONLOCAL, region="110101")],
        # two people
        [ev(0 * DAY, id=NONLOCAL), bank(HOUR, id=BEIJING[1])],
    ],
)
def test_two_cards_scope(events: list[PseudonymousEvent]) -> None:
    assert run(screening(), events, TWO_CARDS) == []


@pytest.mark.parametrize(
    ("window", "gap", "fires"),
    [
        ("48h", 48 * HOUR, True),
        ("48h", 48 * HOUR + SECOND, False),
        ("24h", 24 * HOUR, True),
        ("24h", 25 * HOUR, False),
    ],
)
def test_two_cards_window_edge_and_setting(window: str, gap: timedelta, fires: bool) -> None:
    events = [ev(0 * DAY, id=NONLOCAL), bank(gap, id=NONLOCAL)]
    alerts = run(screening(rules(two_cards_combo={"window": window})), events, TWO_CARDS)
    assert ids(alerts) == (fired_on(TWO_CARDS, events[1]) if fires else [])


def test_two_cards_cooldown_is_7_days() -> None:
    sim, account = ev(0 * DAY, id=NONLOCAL), bank(HOUR, id=NONLOCAL)
    t = HOUR
    sim2 = ev(7 * DAY, id=NONLOCAL)
    quiet = bank(t + 7 * DAY - SECOND, id=NONLOCAL, source="ABC-GS")
    again = bank(t + 7 * DAY, id=NONLOCAL, source="CCB-GS")
    alerts = run(screening(), [sim, account, sim2, quiet, again], TWO_CARDS)
    assert ids(alerts) == fired_on(TWO_CARDS, account, again)
    assert alerts[1].evidence == evidence(sim2, again)


def test_two_cards_counts_a_repeated_event_once() -> None:
    sim, account = ev(0 * DAY, id=NONLOCAL), bank(HOUR, id=NONLOCAL)
    s = screening(rules(two_cards_combo={"cooldown": ""}))
    alerts = run(s, [sim, sim, account, account, sim], TWO_CARDS)
    assert ids(alerts) == fired_on(TWO_CARDS, account)
    assert alerts[0].evidence == evidence(sim, account)


# ---------------------------------------------------------------- identity state


def test_identity_state_forgets_events_older_than_365_days_of_every_kind() -> None:
    s = screening()
    s.watch(key_of(NONLOCAL), entry("all"))
    old = [
        ev(0 * DAY, id=NONLOCAL, delivery=mailed("530102"), verification="none"),
        ev(DAY, id=NONLOCAL),
        bank(2 * DAY, id=NONLOCAL),
        bank(3 * DAY, id=NONLOCAL, source="ABC-GS"),
        bank(3 * DAY, id=NONLOCAL, source="CCB-GS"),
        ev(4 * DAY, "sim.cancel", id=NONLOCAL),
    ]
    fired = {a.rule_id for a in run(s, old)}
    assert fired == {MAIL, MONTHLY, IN_PERSON, WATCH, BANKS, TWO_CARDS}
    state = identity(s, NONLOCAL)
    assert set(state.cooldowns) == {BANKS, TWO_CARDS}
    far = ev(3 * DAY + 365 * DAY, "sim.cancel", id=NONLOCAL)
    run(s, [far])
    kept = [old[3], old[4], old[5], far]  # exactly 365 days old is kept
    assert [m.event_id for m in state.marks] == [e.event_id for e in kept]
    assert state.history.keys() == {event_key(e) for e in kept}
    assert state.cooldowns == {}
    assert state.watch == entry("all")  # the watch entry is not history


def test_bank_close_fires_nothing_but_is_remembered_for_the_holdings() -> None:
    s = screening()
    state = IdentityState()
    closing = ev(0 * DAY, "bank.close")
    decision = s.engine.screen_identity(state, closing)
    assert (decision.applied, decision.alerts) == (True, [])
    assert state.history.holds(closing.source, closing.event_id)
    assert s.engine.screen_identity(state, closing).applied is False


def test_rules_see_no_event_later_than_the_trigger() -> None:
    # a late cancellation (earlier in event time) sees the ones before it only
    e = engine(rules(sim_churn={"cancels": 2, "cooldown": ""}))
    state = IdentityState()
    late, early = cancel(2 * DAY), cancel(DAY)
    assert e.screen_identity(state, late).alerts == []
    assert e.screen_identity(state, early).alerts == []
    assert [m.event_id for m in state.marks] == [early.event_id, late.event_id]
    third = cancel(3 * DAY)
    [alert] = e.screen_identity(state, third).alerts
    assert alert.evidence == evidence(early, late, third)


def test_an_online_opening_is_screened_for_its_identity_not_for_an_outlet() -> None:
    s = screening()
    event = ev(0 * DAY, id=NONLOCAL, outlet="online", channel="online", verification="none")
    assert ids(run(s, [event])) == fired_on(IN_PERSON, event)
    assert s.outlets == {}

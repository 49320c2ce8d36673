"""The outlet rules, through the engine: outlet_nonlocal_surge and gang_batch_open."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from rulekit import (
    DAY,
    DETECTED,
    HOUR,
    MINUTE,
    OUTLET,
    PSEUDONYMIZER,
    SECOND,
    T0,
    bank,
    ev,
    evidence,
    key_of,
    only,
    resident,
    rules,
    run,
    screening,
)

from rules.alert import Alert, Subject, make_alert_id
from rules.engine import Screening
from rules.event import PseudonymousEvent
from rules.pseudonym import mask_id
from rules.state import OutletState, event_key

SURGE = "outlet_nonlocal_surge"
GANG = "gang_batch_open"


def nonlocal_id(n: int) -> str:
    """Person n from Beijing; prefecture 1101 for all, so gang tests choose theirs."""
    return resident("11", n)


def local_id(n: int) -> str:
    return resident("62", n)


def outlet_id(rule_id: str, event: PseudonymousEvent, shared: str | None = None) -> str:
    return make_alert_id(rule_id, event.outlet_id, event.source, event.event_id, shared)


def ids(alerts: list[Alert]) -> list[str]:
    return [a.alert_id for a in alerts]


def outlet(s: Screening, name: str = OUTLET) -> OutletState:
    return s.outlets[name]


def openings(
    count: int, when: timedelta, *, nonlocal_: bool = True, first: int = 1, **fields: Any
) -> list[PseudonymousEvent]:
    """`count` openings by distinct people at `when`, person numbers from `first`."""
    person = nonlocal_id if nonlocal_ else local_id
    return [ev(when, id=person(n), **fields) for n in range(first, first + count)]


# ---------------------------------------------------------------- outlet_nonlocal_surge


def test_surge_fires_at_20_nonlocal_openings_that_are_half_of_40() -> None:
    s = screening()
    locals_ = [ev(i * SECOND, id=local_id(i)) for i in range(1, 21)]
    nonlocals = [ev(HOUR + i * SECOND, id=nonlocal_id(i)) for i in range(1, 21)]
    assert run(s, [*locals_, *nonlocals[:19]], SURGE) == []
    [alert] = run(s, [nonlocals[19]], SURGE)
    trigger = nonlocals[19]
    assert alert.alert_id == outlet_id(SURGE, trigger)
    assert (alert.rule_id, alert.severity, alert.action) == (SURGE, "high", "review")
    assert alert.subject == Subject("outlet", OUTLET)
    assert (alert.event_time, alert.detected_at) == (trigger.occurred_at, DETECTED)
    assert (alert.source, alert.region_code) == (trigger.source, "620102")
    assert alert.facts == {
        "nonlocal_openings": 20,
        "openings": 40,
        "nonlocal_share": 0.5,
        "window": "24h",
    }
    assert alert.evidence == evidence(*locals_, *nonlocals)
    assert alert.summary_zh == "网点24小时内外地身份证开户20笔，占全部40笔的50%"
    assert (
        alert.summary_en == "20 openings by non-local IDs within 24 hours, 50% of the outlet's 40"
    )


def test_surge_does_not_fire_when_20_nonlocal_openings_are_less_than_half() -> None:
    locals_ = [ev(i * SECOND, id=local_id(i)) for i in range(1, 22)]  # 21
    nonlocals = [ev(HOUR + i * SECOND, id=nonlocal_id(i)) for i in range(1, 21)]
    assert run(screening(), [*locals_, *nonlocals], SURGE) == []


def test_surge_does_not_fire_at_19_nonlocal_openings() -> None:
    assert run(screening(), openings(19, 0 * DAY), SURGE) == []


def test_surge_thresholds_come_from_settings() -> None:
    settings = rules(outlet_nonlocal_surge={"nonlocal_openings": 3, "nonlocal_share": 0.75})
    # 3 of 4: fires
    events = [ev(0 * DAY, id=local_id(1)), *openings(3, MINUTE)]
    alerts = run(screening(settings), events, SURGE)
    assert ids(alerts) == [outlet_id(SURGE, events[-1])]
    assert alerts[0].facts["nonlocal_share"] == 0.75
    # 3 of 5, then 4 of 6 and 5 of 7: no; 6 of 8: fires
    events = [*openings(2, 0 * DAY, nonlocal_=False), *openings(6, MINUTE)]
    assert ids(run(screening(settings), events, SURGE)) == [outlet_id(SURGE, events[-1])]


@pytest.mark.parametrize(("gap", "fires"), [(24 * HOUR, True), (24 * HOUR + SECOND, False)])
def test_surge_window_edge(gap: timedelta, fires: bool) -> None:
    events = [ev(0 * DAY, id=nonlocal_id(1)), *openings(19, gap, first=2)]
    alerts = run(screening(), events, SURGE)
    assert ids(alerts) == ([outlet_id(SURGE, events[-1])] if fires else [])


def test_surge_cooldown_is_24_hours() -> None:
    burst = openings(20, 0 * DAY)
    quiet = ev(24 * HOUR - SECOND, id=nonlocal_id(21))
    again = ev(24 * HOUR, id=nonlocal_id(22))
    alerts = run(screening(), [*burst, quiet, again], SURGE)
    assert ids(alerts) == [outlet_id(SURGE, burst[-1]), outlet_id(SURGE, again)]
    assert alerts[1].facts["nonlocal_openings"] == 22


def test_surge_counts_sims_and_bank_accounts_but_not_cancellations_or_closings() -> None:
    sims = openings(10, 0 * DAY)
    accounts = [bank(MINUTE, id=nonlocal_id(n)) for n in range(11, 21)]
    endings = [ev(2 * MINUTE, "sim.cancel", id=local_id(n)) for n in range(1, 16)]
    endings += [ev(2 * MINUTE, "bank.close", id=local_id(n)) for n in range(16, 31)]
    trigger = bank(3 * MINUTE, id=nonlocal_id(21), source="ABC-GS")
    alerts = run(screening(), [*sims, *accounts[:9], *endings, trigger], SURGE)
    assert ids(alerts) == [outlet_id(SURGE, trigger)]
    assert alerts[0].facts["openings"] == 20
    assert alerts[0].evidence == evidence(*sims, *accounts[:9], trigger)


@pytest.mark.parametrize("where", ["online", "two outlets"])
def test_surge_skips_online_and_counts_per_outlet(where: str) -> None:
    s = screening()
    if where == "online":
        events = openings(25, 0 * DAY, outlet="online", channel="online")
    else:
        events = [*openings(10, 0 * DAY), *openings(10, 0 * DAY, first=11, outlet="GS-LZ-9")]
    assert run(s, events, SURGE) == []
    assert "online" not in s.outlets


def test_surge_counts_a_repeated_opening_once() -> None:
    s = screening()
    first19 = openings(19, 0 * DAY)
    assert run(s, [*first19, first19[5], first19[18]], SURGE) == []
    decision = s.engine.screen_outlet(outlet(s), first19[0])
    assert (decision.applied, decision.alerts) == (False, [])
    twentieth = ev(MINUTE, id=nonlocal_id(20))
    [alert] = run(s, [twentieth], SURGE)
    assert alert.facts["openings"] == 20
    assert alert.evidence == evidence(*first19, twentieth)


def test_outlet_state_forgets_openings_older_than_24_hours_and_ended_cooldowns() -> None:
    s = screening()
    burst = openings(20, 0 * DAY)
    middle = ev(12 * HOUR, id=local_id(1))
    assert len(run(s, [*burst, middle], SURGE)) == 1
    state = outlet(s)
    assert state.cooldowns == {SURGE: (T0 + 24 * HOUR).timestamp()}
    later = ev(36 * HOUR, id=local_id(2))  # `middle` is exactly 24 hours before it: kept
    assert run(s, [later]) == []
    assert [o.event_id for o in state.openings.items] == [middle.event_id, later.event_id]
    assert state.openings.keys() == {event_key(middle), event_key(later)}
    assert state.cooldowns == {}


# ---------------------------------------------------------------- gang_batch_open

DEVICE = "dev-88c1"
TOKENS = {"device_id": "device", "contact_phone": "phone", "address_key": "address"}


def shared(attribute: str, value: str) -> str:
    """A gang alert's shared value: a device, phone or address by its token, as state holds it."""
    kind = TOKENS.get(attribute)
    return f"{attribute}:{PSEUDONYMIZER.token(kind, value) if kind else value}"


def test_gang_fires_when_5_people_share_a_device_with_its_content() -> None:
    s = screening()
    events = [ev(i * MINUTE, id=local_id(i), device_id=DEVICE) for i in range(1, 6)]
    assert run(s, events[:4], GANG) == []
    [alert] = run(s, [events[4]], GANG)
    trigger = events[4]
    assert alert.alert_id == outlet_id(GANG, trigger, shared("device_id", "dev-88c1"))
    assert (alert.rule_id, alert.severity, alert.action) == (GANG, "critical", "report")
    assert alert.subject == Subject("outlet", OUTLET)
    assert (alert.event_time, alert.source) == (trigger.occurred_at, trigger.source)
    assert alert.facts == {
        "shared": "device_id",
        "value": "d******1",  # dev-88c1, masked: the state holds only its token
        "identities": sorted(key_of(local_id(i)) for i in range(1, 6)),
        "count": 5,
        "window": "60m",
    }
    assert alert.evidence == evidence(*events)
    assert alert.summary_zh == "网点60分钟内5名不同人员共用同一设备开户"
    assert alert.summary_en == "5 identities shared one device here within 60 minutes"


def test_gang_threshold_comes_from_settings() -> None:
    events = [ev(i * MINUTE, id=local_id(i), device_id=DEVICE) for i in range(1, 6)]
    alerts = run(screening(rules(gang_batch_open={"identities": 3, "cooldown": ""})), events, GANG)
    assert ids(alerts) == [outlet_id(GANG, e, shared("device_id", "dev-88c1")) for e in events[2:]]
    assert [a.facts["count"] for a in alerts] == [3, 4, 5]


SHARED = [
    (
        {"contact_phone": "13800000000"},
        "contact_phone",
        "13800000000",
        "网点60分钟内5名不同人员共用同一联系电话开户",
        "5 identities shared one contact phone here within 60 minutes",
    ),
    (
        {"delivery": {"method": "mail", "region_code": "620502", "address_key": "a1f3c9"}},
        "address_key",
        "a1f3c9",
        "网点60分钟内5名不同人员共用同一收货地址开户",
        "5 identities shared one delivery address here within 60 minutes",
    ),
    (
        {"delivery": {"method": "pickup", "address_key": "a1f3c9"}},
        "address_key",
        "a1f3c9",
        "网点60分钟内5名不同人员共用同一收货地址开户",
        "5 identities shared one delivery address here within 60 minutes",
    ),
]


@pytest.mark.parametrize(("fields", "attribute", "value", "zh", "en"), SHARED)
def test_gang_links_by_phone_and_address(
    fields: dict[str, Any], attribute: str, value: str, zh: str, en: str
) -> None:
    events = [ev(i * MINUTE, id=local_id(i), **fields) for i in range(1, 6)]
    alerts = run(screening(), events, GANG)
    assert ids(alerts) == [outlet_id(GANG, events[4], shared(attribute, value))]
    # a phone is shown masked; an address by the engine's token of the source's key
    shown = (
        mask_id(value) if attribute == "contact_phone" else PSEUDONYMIZER.token("address", value)
    )
    assert (alerts[0].facts["shared"], alerts[0].facts["value"]) == (attribute, shown)
    assert (alerts[0].summary_zh, alerts[0].summary_en) == (zh, en)
    assert alerts[0].evidence == evidence(*events)


def test_gang_links_nonlocal_ids_from_one_home_prefecture() -> None:
    # five Sichuan IDs of prefecture 5113 (and one of 5101, which does not count)
    people = [resident("51", n, prefecture="13") for n in range(1, 6)]
    other = ev(0 * DAY, id=resident("51", 9, prefecture="01"))
    events = [ev(i * MINUTE, id=person) for i, person in enumerate(people, start=1)]
    alerts = run(screening(), [other, *events], GANG)
    assert ids(alerts) == [outlet_id(GANG, events[4], "id_prefecture:5113")]
    alert = alerts[0]
    assert alert.facts == {
        "shared": "id_prefecture",
        "value": "5113",
        "identities": sorted(key_of(p) for p in people),
        "count": 5,
        "window": "60m",
    }
    assert alert.evidence == evidence(*events)
    assert alert.summary_zh == "网点60分钟内5名同一籍贯地（5113）的外地身份证人员开户"
    assert (
        alert.summary_en
        == "5 non-local IDs from one home prefecture (5113) opened here within 60 minutes"
    )


@pytest.mark.parametrize(
    "events",
    [
        # five local IDs of one prefecture (6201): not a gang of outsiders
        [ev(i * MINUTE, id=local_id(i)) for i in range(1, 6)],
        # the same person five times on one device
        [ev(i * MINUTE, id=local_id(1), device_id=DEVICE) for i in range(1, 6)],
        # four people, one of them twice
        [ev(i * MINUTE, id=local_id(min(i, 4)), device_id=DEVICE) for i in range(1, 6)],
        # five people, five devices
        [ev(i * MINUTE, id=local_id(i), device_id=f"dev-{i}") for i in range(1, 6)],
        # the fifth one cancels: not an opening
        [
            *[ev(i * MINUTE, id=local_id(i), device_id=DEVICE) for i in range(1, 5)],
            ev(5 * MINUTE, "sim.cancel", id=local_id(5), device_id=DEVICE),
        ],
        # online openings are left out
        [
            ev(i * MINUTE, id=local_id(i), device_id=DEVICE, outlet="online", channel="online")
            for i in range(1, 6)
        ],
        # two outlets
        [
            ev(i * MINUTE, id=local_id(i), device_id=DEVICE, outlet=f"GS-{i % 2}")
            for i in range(1, 6)
        ],
        # "other" ids have no prefecture
        [ev(i * MINUTE, id=f"P{i:08d}", id_type="other") for i in range(1, 6)],
    ],
)
def test_gang_scope(events: list[PseudonymousEvent]) -> None:
    assert run(screening(), events, GANG) == []


def test_gang_counts_distinct_people_and_lists_every_linked_opening() -> None:
    events = [ev(i * MINUTE, id=local_id(min(i, 4)), device_id=DEVICE) for i in range(1, 7)]
    events[5] = ev(6 * MINUTE, id=local_id(5), device_id=DEVICE)
    [alert] = run(screening(), events, GANG)
    assert alert.facts["count"] == 5
    assert alert.evidence == evidence(*events)  # person 4 twice: both openings


def test_gang_gives_one_alert_per_shared_value_of_the_triggering_event() -> None:
    both = {"device_id": DEVICE, "contact_phone": "13800000000"}
    events = [ev(i * MINUTE, id=nonlocal_id(i), **both) for i in range(1, 6)]
    alerts = run(screening(), events, GANG)
    trigger = events[4]
    assert ids(alerts) == [
        outlet_id(GANG, trigger, shared("device_id", "dev-88c1")),
        outlet_id(GANG, trigger, shared("contact_phone", "13800000000")),
        outlet_id(GANG, trigger, "id_prefecture:1101"),
    ]
    assert [a.facts["shared"] for a in alerts] == ["device_id", "contact_phone", "id_prefecture"]


@pytest.mark.parametrize(("gap", "fires"), [(60 * MINUTE, True), (60 * MINUTE + SECOND, False)])
def test_gang_window_edge(gap: timedelta, fires: bool) -> None:
    events = [
        ev(0 * DAY, id=local_id(1), device_id=DEVICE),
        *[ev(gap, id=local_id(i), device_id=DEVICE) for i in range(2, 6)],
    ]
    alerts = run(screening(), events, GANG)
    assert ids(alerts) == (
        [outlet_id(GANG, events[4], shared("device_id", "dev-88c1"))] if fires else []
    )


def test_gang_cooldown_is_60_minutes_per_outlet_and_shared_value() -> None:
    first = [ev(0 * DAY, id=local_id(i), device_id="dev-1") for i in range(1, 6)]
    second = [ev(MINUTE, id=local_id(i), device_id="dev-2") for i in range(6, 11)]
    elsewhere = [
        ev(2 * MINUTE, id=local_id(i), device_id="dev-1", outlet="GS-LZ-9") for i in range(1, 6)
    ]
    quiet = ev(60 * MINUTE - SECOND, id=local_id(11), device_id="dev-1")
    again = ev(60 * MINUTE, id=local_id(12), device_id="dev-1")
    alerts = run(screening(), [*first, *second, *elsewhere, quiet, again], GANG)
    assert ids(alerts) == [
        outlet_id(GANG, first[4], shared("device_id", "dev-1")),
        outlet_id(GANG, second[4], shared("device_id", "dev-2")),
        outlet_id(GANG, elsewhere[4], shared("device_id", "dev-1")),
        outlet_id(GANG, again, shared("device_id", "dev-1")),
    ]
    assert [a.subject.key for a in alerts] == [OUTLET, OUTLET, "GS-LZ-9", OUTLET]
    assert alerts[3].facts["count"] == 7


def test_gang_counts_a_repeated_opening_once() -> None:
    s = screening()
    four = [ev(i * MINUTE, id=local_id(i), device_id=DEVICE) for i in range(1, 5)]
    assert run(s, [*four, four[3], four[0]], GANG) == []
    fifth = ev(5 * MINUTE, id=local_id(5), device_id=DEVICE)
    [alert] = run(s, [fifth, fifth], GANG)
    assert alert.evidence == evidence(*four, fifth)


def test_gang_alone_keeps_60_minutes_of_openings_and_drops_its_ended_cooldowns() -> None:
    s = screening(only(GANG))
    events = [ev(i * MINUTE, id=local_id(i), device_id=DEVICE) for i in range(1, 6)]
    assert len(run(s, events)) == 1
    state = outlet(s)
    cooling = f"{GANG}\x1f{shared('device_id', DEVICE)}"
    assert state.cooldowns == {cooling: (T0 + 65 * MINUTE).timestamp()}
    later = ev(64 * MINUTE, id=local_id(6))  # the opening at 4 minutes is exactly 60 before
    assert run(s, [later]) == []
    assert [o.event_id for o in state.openings.items] == [
        e.event_id for e in (events[3], events[4], later)
    ]
    assert len(state.cooldowns) == 1
    last = ev(65 * MINUTE, id=local_id(7))
    run(s, [last])
    assert state.cooldowns == {}
    assert [o.event_id for o in state.openings.items] == [
        e.event_id for e in (events[4], later, last)
    ]


def test_outlet_retention_is_the_longest_enabled_window() -> None:
    s = screening()  # surge's 24 hours
    events = [ev(0 * DAY, id=local_id(1)), ev(23 * HOUR, id=local_id(2))]
    run(s, events)
    assert [o.event_id for o in outlet(s).openings.items] == [e.event_id for e in events]

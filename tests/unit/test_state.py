"""Rule state: the window, the codecs, and the properties the stream relies on.

The stream keeps every state in a table (encoded with the codecs) and may
stop and resume between any two events, and see a record twice: the alerts
must not depend on either.
"""

from __future__ import annotations

from collections import Counter
from datetime import date, timedelta
from typing import Any

import hypothesis
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st
from rulekit import (
    ALL_RULES,
    BEIJING,
    DAY,
    GANSU,
    HOUR,
    IMPLICATED_RULES,
    MINUTE,
    SECOND,
    T0,
    ev,
    key_of,
    mailed,
    resident,
    rules,
    screening,
    states,
)

from rules.alert import Alert, Evidence
from rules.config import RuleSettings
from rules.engine import Screening
from rules.event import PseudonymousEvent
from rules.holdings import Snapshot
from rules.state import (
    NEVER,
    SMALL,
    AgentState,
    Flag,
    IdentityState,
    Mark,
    OutletState,
    WatchEntry,
    Window,
    decode_agent,
    decode_identity,
    decode_outlet,
    encode_agent,
    encode_identity,
    encode_outlet,
    expire_cooldowns,
    signal_from_row,
    signal_row,
)

# ---------------------------------------------------------------- Window


def mark(ts: float, event_id: str, source: str = "S") -> Mark:
    return Mark(ts, source, event_id, "sim.cancel", "", "62", False)


def test_window_keeps_items_in_order_whatever_order_they_come_in() -> None:
    w = Window()
    for item in [mark(5, "c"), mark(1, "a"), mark(5, "b"), mark(9, "d"), mark(1, "a", "R")]:
        w.add(item)
    assert [(m.ts, m.source, m.event_id) for m in w.items] == [
        (1, "R", "a"),
        (1, "S", "a"),
        (5, "S", "b"),
        (5, "S", "c"),
        (9, "S", "d"),
    ]
    assert w.latest == 9
    assert w.keys() == {"R\x1fa", "S\x1fa", "S\x1fb", "S\x1fc", "S\x1fd"}


def test_window_since_includes_both_ends_and_prune_keeps_the_horizon() -> None:
    w = Window()
    for ts in (1, 2, 3, 4, 5):
        w.add(mark(ts, str(ts)))
    assert [m.ts for m in w.since(2, 4)] == [2, 3, 4]
    w.prune(3)
    assert [m.ts for m in w.items] == [3, 4, 5]
    assert w.keys() == {"S\x1f3", "S\x1f4", "S\x1f5"}
    assert w.latest == 5


@given(
    st.lists(st.integers(0, 50), max_size=30),
    st.integers(-5, 55),
    st.integers(-5, 55),
    st.integers(-5, 55),
)
@settings(max_examples=60, deadline=None)
def test_window_since_and_prune_are_filters(
    times: list[int], start: int, end: int, horizon: int
) -> None:
    w = Window()
    for i, ts in enumerate(times):
        w.add(mark(ts, f"{i:03d}"))
    ordered = sorted((ts, f"{i:03d}") for i, ts in enumerate(times))
    assert [(m.ts, m.event_id) for m in w.items] == ordered
    assert [(m.ts, m.event_id) for m in w.since(start, end)] == [
        o for o in ordered if start <= o[0] <= end
    ]
    w.prune(horizon)
    kept = [o for o in ordered if o[0] >= horizon]
    assert [(m.ts, m.event_id) for m in w.items] == kept
    assert w.keys() == {f"S\x1f{event_id}" for _, event_id in kept}


def test_expire_cooldowns_drops_the_ended_ones() -> None:
    cooldowns = {"a": 10.0, "b": 11.0, "c": 9.0}
    expire_cooldowns(cooldowns, 10.0)
    assert cooldowns == {"b": 11.0}


def test_empty_states_round_trip() -> None:
    for state, encode, decode in [
        (IdentityState(), encode_identity, decode_identity),
        (OutletState(), encode_outlet, decode_outlet),
        (AgentState(), encode_agent, decode_agent),
    ]:
        back = decode(encode(state))  # type: ignore[operator]
        assert back == state
    assert decode_identity(encode_identity(IdentityState())).history.latest == NEVER


def test_identity_codec_holds_no_raw_id_number() -> None:
    s = screening()
    s.screen(ev(0 * DAY, id=BEIJING[0], verification="none", delivery=mailed("530102")))
    for raw in states(s).values():
        assert BEIJING[0].encode() not in raw
        assert BEIJING[0][:17].encode() not in raw


# ---------------------------------------------------------------- generated stories

PEOPLE = [
    BEIJING[0],
    BEIJING[1],
    resident("11", 3, prefecture="02"),
    resident("53", 1),
    GANSU[0],
    GANSU[1],
    "E12345678",  # a passport: id_type other
]
OUTLETS = [("GS-1", "620102"), ("GS-2", "620502"), ("online", "620102"), ("BJ-1", "110101")]
# a fast story trips the windowed rules, a slow one outlives windows and cooldowns
FAST_STEPS = [timedelta(0), SECOND, MINUTE, 10 * MINUTE, HOUR, 6 * HOUR, DAY]
SLOW_STEPS = [*FAST_STEPS, 10 * DAY, 40 * DAY, 200 * DAY]
DELIVERIES: list[Any] = [
    None,
    None,
    mailed("530102", "addr-1"),
    mailed("620502", "addr-2"),
    {"method": "pickup", "address_key": "addr-1"},
]
# thresholds low enough that a short story trips every rule now and then
LOW = rules(
    sim_churn={"cancels": 2},
    bank_multi_open={"banks": 2},
    outlet_nonlocal_surge={"nonlocal_openings": 2},
    gang_batch_open={"identities": 2},
    agent_flag_rate={"identities": 2},
    sim_carrier_limit={"sims": 1},
)
SETTINGS = st.sampled_from([LOW, LOW, RuleSettings()])

Watch = tuple[str, WatchEntry | None]
Hold = tuple[str, Snapshot]
Op = PseudonymousEvent | Watch | Hold

# two provinces of a carrier, and a bank's sources with and without a province
SIM_SOURCES = ["CMCC-GS", "CUCC-GS", "CMCC-SC"]
BANK_SOURCES = ["ICBC", "ABC", "CCB", "ICBC-SC"]
# one as_of per source: some before the stories begin, some after their first events
AS_OF = {
    source: (T0 - DAY if n % 2 else T0 + 2 * HOUR)
    for n, source in enumerate(SIM_SOURCES + BANK_SOURCES)
}
NUMBERS = ["13900000001", "13900000002", "13900000003", "13900000004"]
ACCOUNTS = ["6222020000000001", "6222020000000002", "6222020000000003"]

WATCH_ENTRIES = [
    None,
    WatchEntry("all", date(2025, 1, 1), date(2030, 1, 1), "cp", "sold cards"),
    WatchEntry("bank", date(2026, 11, 21), date(2026, 12, 31), "cp"),
]


@st.composite
def events_at(draw: st.DrawFn, when: timedelta, number: int) -> PseudonymousEvent:
    event_type = draw(
        st.sampled_from(
            ["sim.activate"] * 4 + ["sim.cancel"] * 2 + ["bank.open"] * 3 + ["bank.close"]
        )
    )
    is_sim = event_type.startswith("sim.")
    who = draw(st.sampled_from(PEOPLE))
    outlet, region = draw(st.sampled_from(OUTLETS))
    fields: dict[str, Any] = {
        "id": who,
        "id_type": "resident_id" if who[:1].isdigit() else "other",
        "event_id": f"E{number:04d}",
        "source": draw(st.sampled_from(SIM_SOURCES if is_sim else BANK_SOURCES)),
        "outlet": outlet,
        "region": region,
        "verification": draw(st.sampled_from(["in_person", "remote_face", "none"])),
    }
    optional = {
        "delivery": draw(st.sampled_from(DELIVERIES)),
        "device_id": draw(st.sampled_from([None, None, "dev-1", "dev-2"])),
        "contact_phone": draw(st.sampled_from([None, None, "13800000001"])),
        "agent_id": draw(st.sampled_from([None, "A-1", "A-1", "A-2"])),
    }
    if is_sim:
        fields["msisdn"] = draw(st.sampled_from(NUMBERS))
        if event_type == "sim.activate":
            fields["sim_kind"] = draw(st.sampled_from(["personal", "personal", "iot"]))
    else:
        fields["account_id"] = draw(st.sampled_from(ACCOUNTS))
        optional["account_class"] = draw(st.sampled_from([None, "I", "I", "II", "III"]))
    fields.update({k: v for k, v in optional.items() if v is not None})
    return ev(when, event_type, **fields)


@st.composite
def snapshots(draw: st.DrawFn) -> Hold:
    """An inventory snapshot of one person at one source (a later one replaces it)."""
    person = draw(st.sampled_from(PEOPLE))
    source = draw(st.sampled_from(SIM_SOURCES + BANK_SOURCES))
    sims: tuple[tuple[str, int], ...] = ()
    accounts: tuple[tuple[str, int], ...] = ()
    if source in SIM_SOURCES:
        personal, iot = draw(st.integers(0, 6)), draw(st.integers(0, 2))
        sims = tuple((k, n) for k, n in (("personal", personal), ("iot", iot)) if n)
    else:
        type_one, type_two = draw(st.integers(0, 2)), draw(st.integers(0, 1))
        accounts = tuple((k, n) for k, n in (("I", type_one), ("II", type_two)) if n)
    id_type = "resident_id" if person[:1].isdigit() else "other"
    return key_of(person, id_type), Snapshot(source, AS_OF[source], sims, accounts)


@st.composite
def stories(draw: st.DrawFn, max_span: timedelta | None = None, max_size: int = 40) -> list[Op]:
    """Events in (mostly) time order with repeats, watchlist changes and snapshots mixed in."""
    ops: list[Op] = []
    sent: list[PseudonymousEvent] = []
    when = timedelta(0)
    steps = draw(st.sampled_from([FAST_STEPS, FAST_STEPS, SLOW_STEPS]))
    for number in range(draw(st.integers(1, max_size))):
        kind = draw(st.integers(0, 20))
        if kind == 0:
            person = draw(st.sampled_from(PEOPLE[:5]))
            ops.append((key_of(person), draw(st.sampled_from(WATCH_ENTRIES))))
        elif kind == 1:
            ops.append(draw(snapshots()))
        elif kind <= 3 and sent:
            ops.append(draw(st.sampled_from(sent)))  # a repeated record
        else:
            step = draw(st.sampled_from(steps))
            if max_span is None or when + step <= max_span:
                when += step
            sent.append(draw(events_at(when, number)))
            ops.append(sent[-1])
    return ops


def apply(s: Screening, op: Op) -> list[Alert]:
    if isinstance(op, tuple):
        key, value = op
        if isinstance(value, Snapshot):
            s.hold(key, value)
        else:
            s.watch(key, value)
        return []
    return s.screen(op)


def play(s: Screening, ops: list[Op]) -> list[Alert]:
    return [alert for op in ops for alert in apply(s, op)]


def reloaded(s: Screening) -> Screening:
    """A screening with every state of `s` written out and read back, as the stream does."""
    back = Screening(s.engine)
    back.identities = {k: decode_identity(encode_identity(v)) for k, v in s.identities.items()}
    back.outlets = {k: decode_outlet(encode_outlet(v)) for k, v in s.outlets.items()}
    back.agents = {k: decode_agent(encode_agent(v)) for k, v in s.agents.items()}
    return back


# ---------------------------------------------------------------- properties

CODEC_EXAMPLES = 40
BATCH_EXAMPLES = 100
IDEMPOTENCE_EXAMPLES = 40


@given(stories(), SETTINGS, st.data())
@settings(max_examples=CODEC_EXAMPLES, deadline=None)
def test_codecs_round_trip_and_behave_the_same_after(
    ops: list[Op], rule_settings: RuleSettings, data: st.DataObject
) -> None:
    cut = data.draw(st.integers(0, len(ops)), label="cut")
    s = screening(rule_settings)
    play(s, ops[:cut])
    for state in s.identities.values():
        raw = encode_identity(state)
        assert decode_identity(raw) == state
        assert encode_identity(decode_identity(raw)) == raw
    for outlet in s.outlets.values():
        raw = encode_outlet(outlet)
        assert decode_outlet(raw) == outlet
        assert encode_outlet(decode_outlet(raw)) == raw
    for agent in s.agents.values():
        raw = encode_agent(agent)
        assert decode_agent(raw) == agent
        assert encode_agent(decode_agent(raw)) == raw
    copy = reloaded(s)
    assert play(copy, ops[cut:]) == play(s, ops[cut:])
    assert states(copy) == states(s)


@given(stories(), SETTINGS)
@settings(max_examples=CODEC_EXAMPLES // 2, deadline=None)
def test_signal_codec_round_trips(ops: list[Op], rule_settings: RuleSettings) -> None:
    s = screening(rule_settings)
    for op in ops:
        alerts = apply(s, op)
        if not isinstance(op, tuple):
            for signal in s.engine.agent_signals(op, alerts):
                assert signal_from_row(orjson.loads(orjson.dumps(signal_row(signal)))) == signal
                assert isinstance(signal.evidence, Evidence)


def test_alerts_do_not_depend_on_how_the_events_are_batched() -> None:
    fired: Counter[str] = Counter()
    examples: list[bool] = []

    # derandomized: the last assertion is about the stories drawn, so the same
    # ones are drawn each run (twelve rules in 100 stories: a random draw missed
    # one now and then)
    @given(stories(), SETTINGS, st.sets(st.integers(0, 40), max_size=8))
    @settings(max_examples=BATCH_EXAMPLES, deadline=None, derandomize=True)
    def check(ops: list[Op], rule_settings: RuleSettings, cuts: set[int]) -> None:
        whole = screening(rule_settings)
        expected = play(whole, ops)
        batched = screening(rule_settings)
        got: list[Alert] = []
        for i, op in enumerate(ops):
            if i in cuts:
                batched = reloaded(batched)
            got += apply(batched, op)
        assert got == expected
        assert states(batched) == states(whole)
        examples.append(bool(expected))
        fired.update({a.rule_id for a in expected})
        hypothesis.event("alerts" if expected else "no alerts")

    check()
    # the stories are not noise: most of them alert, and every rule fires somewhere
    assert sum(examples) >= len(examples) / 2, (sum(examples), len(examples))
    # the stories hold no implicated numbers: tests/unit/test_implicated.py has those rules
    assert set(fired) == ALL_RULES - IMPLICATED_RULES, fired


@given(stories(max_span=300 * DAY), SETTINGS)
@settings(max_examples=IDEMPOTENCE_EXAMPLES, deadline=None)
def test_screening_the_same_events_again_changes_nothing(
    ops: list[Op], rule_settings: RuleSettings
) -> None:
    s = screening(rule_settings)
    first = play(s, ops)
    hypothesis.event("alerts" if first else "no alerts")
    before = states(s)
    assert play(s, ops) == []
    assert states(s) == before


def test_a_long_window_indexes_its_keys_and_a_pruned_one_drops_the_index() -> None:
    w = Window()
    flags = [
        Flag(float(n), f"k:{n}", f"alert-{n}", Evidence(str(n), "S", "x", "t")) for n in range(20)
    ]
    for flag in flags[:SMALL]:
        w.add(flag)
    assert w.index is None and w.has("alert-3") and not w.has("alert-19")
    for flag in flags[SMALL:]:
        w.add(flag)
    assert w.index == {f.alert_id for f in flags}
    assert w.has("alert-19") and not w.has("alert-99")
    w.prune(15.0)  # 5 left
    assert w.index is None
    assert w.has("alert-15") and not w.has("alert-14")
    assert decode_agent(encode_agent(AgentState(w))).flags.has("alert-19")

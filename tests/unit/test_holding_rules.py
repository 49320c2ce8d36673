"""Holdings (CHECK.md): what an identity holds, snapshots, and the two limit rules.

`sim_carrier_limit` (一证五号) and `bank_type1_limit` count what the identity
holds after the opening, summed over a carrier's (or bank's) provinces, with
the snapshot's cards; events before a snapshot's `as_of` change nothing.
"""

from __future__ import annotations

from datetime import datetime

from rulekit import (
    BEIJING,
    DAY,
    GANSU,
    HOUR,
    T0,
    bank,
    ev,
    key_of,
    only,
    run,
    screening,
)

from rules.engine import Screening
from rules.event import PseudonymousEvent
from rules.holdings import Snapshot
from rules.state import IdentityState, decode_identity, encode_identity

PERSON = GANSU[0]


def sim(n: int, when: float, **fields: object) -> PseudonymousEvent:
    """A personal SIM activation of number n, `when` days after T0."""
    return ev(when * DAY, msisdn=f"139000000{n:02d}", **fields)


def cancel(n: int, when: float, **fields: object) -> PseudonymousEvent:
    return ev(when * DAY, "sim.cancel", msisdn=f"139000000{n:02d}", **fields)


def account(n: int, when: float, klass: str | None = "I", **fields: object) -> PseudonymousEvent:
    extra = {"account_class": klass} if klass else {}
    return bank(when * DAY, account_id=f"62220200000000{n:02d}", **(extra | fields))


def close(n: int, when: float, klass: str | None = None, **fields: object) -> PseudonymousEvent:
    extra = {"account_class": klass} if klass else {}
    return ev(when * DAY, "bank.close", account_id=f"62220200000000{n:02d}", **(extra | fields))


def carrier_limit() -> Screening:
    return screening(only("sim_carrier_limit"))


def type1_limit() -> Screening:
    return screening(only("bank_type1_limit"))


def snapshot(
    source: str, as_of: datetime, sims: dict[str, int] | None = None, **accounts: int
) -> Snapshot:
    return Snapshot(source, as_of, tuple((sims or {}).items()), tuple(accounts.items()))


def held(s: Screening, kind: str, carrier: str = "CMCC", person: str = PERSON) -> int:
    return s.identities[key_of(person)].held(carrier, kind)


# ---------------------------------------------------------------- 一证五号


def test_five_sims_at_one_carrier_are_allowed_the_sixth_is_not() -> None:
    s = carrier_limit()
    assert run(s, [sim(n, n) for n in range(1, 6)]) == []  # at the limit: five
    assert held(s, "personal") == 5
    sixth = sim(6, 6)
    [alert] = run(s, [sixth])
    assert (alert.rule_id, alert.action, alert.severity) == ("sim_carrier_limit", "block", "high")
    assert alert.facts == {"held": 5, "limit": 5, "carrier": "CMCC"}
    assert alert.evidence[0].event_id == sixth.event_id
    assert "5 personal SIMs at CMCC" in alert.summary_en


def test_four_held_and_a_fifth_is_below_the_limit() -> None:
    s = carrier_limit()
    assert run(s, [sim(n, n) for n in range(1, 5)]) == []
    assert run(s, [sim(5, 5)]) == []


def test_cancellations_free_slots() -> None:
    s = carrier_limit()
    run(s, [sim(n, n) for n in range(1, 6)])
    assert run(s, [cancel(2, 6), cancel(3, 6.5)]) == []
    assert held(s, "personal") == 3
    assert run(s, [sim(7, 7), sim(8, 8)]) == []  # back to five
    assert [a.rule_id for a in run(s, [sim(9, 9)])] == ["sim_carrier_limit"]


def test_a_cancel_and_reopen_of_the_same_number_counts_once() -> None:
    s = carrier_limit()
    run(s, [sim(n, n) for n in range(1, 6)])
    assert run(s, [cancel(5, 6), sim(5, 7)]) == []
    assert held(s, "personal") == 5


def test_a_carriers_provinces_are_summed() -> None:
    s = carrier_limit()
    gansu = [sim(n, n) for n in range(1, 4)]
    sichuan = [sim(n, n + 3, source="CMCC-SC", region="510104") for n in range(4, 6)]
    assert run(s, gansu + sichuan) == []
    [alert] = run(s, [sim(6, 6, source="CMCC-BJ", region="110101")])
    assert alert.facts == {"held": 5, "limit": 5, "carrier": "CMCC"}


def test_other_carriers_and_iot_cards_do_not_count() -> None:
    s = carrier_limit()
    run(s, [sim(n, n) for n in range(1, 6)])
    assert run(s, [sim(6, 6, source="CUCC-GS")]) == []
    assert run(s, [sim(7, 7, sim_kind="iot")]) == []
    assert (held(s, "personal"), held(s, "iot"), held(s, "personal", "CUCC")) == (5, 1, 1)


def test_each_person_counts_alone() -> None:
    s = carrier_limit()
    run(s, [sim(n, n) for n in range(1, 6)])
    assert run(s, [sim(6, 6, id=BEIJING[0], region="110101")]) == []


def test_a_snapshot_seeds_the_counts() -> None:
    s = carrier_limit()
    s.hold(key_of(PERSON), snapshot("CMCC-GS", T0, {"personal": 4, "iot": 2}))
    assert held(s, "personal") == 4
    assert run(s, [sim(1, 1)]) == []
    [alert] = run(s, [sim(2, 2)])
    assert alert.facts["held"] == 5


def test_events_before_the_snapshot_are_already_in_it() -> None:
    s = carrier_limit()
    s.hold(key_of(PERSON), snapshot("CMCC-GS", T0 + 10 * DAY, {"personal": 5}))
    # openings and cancellations before as_of change nothing, in either order of arrival
    run(s, [sim(1, 1), sim(2, 2), cancel(3, 3)])
    assert held(s, "personal") == 5
    late = carrier_limit()
    run(late, [sim(1, 1), sim(2, 2), cancel(3, 3)])
    late.hold(key_of(PERSON), snapshot("CMCC-GS", T0 + 10 * DAY, {"personal": 5}))
    assert held(late, "personal") == 5


def test_a_cancel_after_the_snapshot_takes_one_of_its_cards() -> None:
    s = carrier_limit()
    s.hold(key_of(PERSON), snapshot("CMCC-GS", T0, {"personal": 5}))
    assert [a.rule_id for a in run(s, [sim(1, 1)])] == ["sim_carrier_limit"]
    run(s, [cancel(1, 2)])  # the one opened after the snapshot
    assert held(s, "personal") == 5
    run(s, [cancel(40, 3), cancel(41, 4)])  # two the engine never saw opened
    assert held(s, "personal") == 3
    run(s, [cancel(n, 5) for n in range(42, 50)])  # never below zero
    assert held(s, "personal") == 0


def test_a_newer_snapshot_replaces_the_older_and_keeps_what_came_after_it() -> None:
    s = carrier_limit()
    s.hold(key_of(PERSON), snapshot("CMCC-GS", T0, {"personal": 2}))
    run(s, [sim(1, 1), cancel(40, 2), sim(2, 12), cancel(41, 13), cancel(1, 14)])
    assert held(s, "personal") == 1  # 2 + 1 - 1 + 1 - 1 - 1
    # as of day 10: the inventory counts the day-1 card and not the day-2 cancel's
    s.hold(key_of(PERSON), snapshot("CMCC-GS", T0 + 10 * DAY, {"personal": 3}))
    # the day-12 opening stays; the day-13 cancel and the day-14 one (of the
    # day-1 card, which the new snapshot counts) each take one of its three
    assert held(s, "personal") == 1 + 1
    same = carrier_limit()
    same.hold(key_of(PERSON), snapshot("CMCC-GS", T0 + 10 * DAY, {"personal": 3}))
    run(same, [sim(1, 1), cancel(40, 2), sim(2, 12), cancel(41, 13), cancel(1, 14)])
    assert held(same, "personal") == held(s, "personal")


def test_holdings_survive_the_codec() -> None:
    s = carrier_limit()
    s.hold(key_of(PERSON), snapshot("CMCC-GS", T0, {"personal": 2}))
    run(s, [sim(1, 1), cancel(40, 2), account(1, 3)])
    state = s.identities[key_of(PERSON)]
    again = decode_identity(encode_identity(state))
    assert again.holdings == state.holdings
    assert again.held("CMCC", "personal") == 2
    assert decode_identity(encode_identity(IdentityState())).holdings == {}


def test_holdings_state_holds_no_phone_or_account_number() -> None:
    s = carrier_limit()
    run(s, [sim(1, 1), account(1, 2)])
    raw = encode_identity(s.identities[key_of(PERSON)])
    assert b"13900000001" not in raw and b"6222020000000001" not in raw
    assert PERSON.encode() not in raw


# ---------------------------------------------------------------- one Type I account per bank


def test_one_type1_account_per_bank() -> None:
    s = type1_limit()
    assert run(s, [account(1, 1)]) == []  # at the limit
    [alert] = run(s, [account(2, 2)])
    assert (alert.rule_id, alert.action) == ("bank_type1_limit", "block")
    assert alert.facts == {"held": 1, "limit": 1, "bank": "ICBC"}


def test_type2_and_3_and_unknown_accounts_do_not_count() -> None:
    s = type1_limit()
    events = [account(1, 1), account(2, 2, "II"), account(3, 3, "III"), account(4, 4, None)]
    assert run(s, events) == []
    assert (held(s, "I", "ICBC"), held(s, "II", "ICBC"), held(s, "unknown", "ICBC")) == (1, 1, 1)


def test_a_closed_type1_account_frees_the_slot() -> None:
    s = type1_limit()
    run(s, [account(1, 1)])
    assert run(s, [close(1, 2), account(2, 3)]) == []


def test_type1_accounts_at_a_banks_provinces_are_summed_and_other_banks_apart() -> None:
    s = type1_limit()
    run(s, [account(1, 1)])
    assert run(s, [account(2, 2, source="CCB-GS")]) == []
    [alert] = run(s, [account(3, 3, source="ICBC-SC", region="510104")])
    assert alert.facts["bank"] == "ICBC"


def test_a_bank_snapshot_and_a_close_of_one_of_its_accounts() -> None:
    s = type1_limit()
    s.hold(key_of(PERSON), snapshot("ICBC-GS", T0, I=1, II=2))
    assert [a.rule_id for a in run(s, [account(1, 1)])] == ["bank_type1_limit"]
    run(s, [close(1, 2), close(30, 3, "I")])  # the new one, then the snapshot's Type I
    assert held(s, "I", "ICBC") == 0
    run(s, [close(31, 4)])  # no class given: one of the unknown ones, and there are none
    assert held(s, "II", "ICBC") == 2
    assert run(s, [account(2, 5)]) == []


def test_the_limits_come_from_the_config() -> None:
    s = screening(only("sim_carrier_limit", sims=1))
    assert run(s, [sim(1, 0)]) == []
    assert [a.facts["limit"] for a in run(s, [sim(2, HOUR / DAY)])] == [1]

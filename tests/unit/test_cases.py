"""Cases: linked alerts form one case whatever their order; verdicts count and punish."""

from __future__ import annotations

import hashlib
import random
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
import pytest

from rules.cases import Cases, DictStore, LinkRow, case_id_of
from rules.config import CaseSettings
from rules.disposition import Disposition, Punishment

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


def aid(n: int) -> str:
    """An alert id like the engine's (hexadecimal, 32 digits), for alert `n`."""
    return hashlib.sha256(str(n).encode()).hexdigest()[:32]


def alert(
    n: int, day: float = 0, rule: str = "two_cards_combo", kind: str = "identity", key: str = ""
) -> dict[str, Any]:
    alert_id = aid(n)
    return {
        "alert_id": alert_id,
        "rule_id": rule,
        "severity": "high",
        "action": "review",
        "subject": {"kind": kind, "key": key or f"person-{n}", "id_masked": "110***1234"},
        "event_time": (T0 + timedelta(days=day)).isoformat(),
        "summary_zh": "",
        "summary_en": "",
        "facts": {},
        "evidence": [],
    }


def person(
    n: int, device: str = "", address: str = "", outlet: str = "", agent: str = ""
) -> list[LinkRow]:
    event = f"ev-{n}"
    rows = [[event, "identity", f"person-{n}", "110***1234"]]
    for attr, token in (
        ("device", device),
        ("address", address),
        ("outlet", outlet),
        ("agent", agent),
    ):
        if token:
            rows.append([event, attr, token, token])
    return rows


def gang() -> list[tuple[dict[str, Any], list[LinkRow]]]:
    """Six people, one device and one address, two outlets, one agent."""
    return [
        (
            alert(n, day=n * 0.1, key=f"person-{n}"),
            person(n, device="dev-g", address="addr-g", outlet=f"outlet-{n % 2}", agent="agent-g"),
        )
        for n in range(1, 7)
    ]


def loners() -> list[tuple[dict[str, Any], list[LinkRow]]]:
    return [
        (
            alert(100 + n, day=n, key=f"person-{100 + n}"),
            person(100 + n, device=f"dev-{n}", outlet=f"far-{n}", agent=f"clerk-{n}"),
        )
        for n in range(3)
    ]


def cases_of(items: list[tuple[dict[str, Any], list[LinkRow]]], **settings: Any) -> Cases:
    cases = Cases(CaseSettings(**settings), DictStore())
    for a, links in items:
        cases.add(a, links)
    return cases


def documents(cases: Cases) -> dict[str, dict[str, Any]]:
    store = cases.store
    assert isinstance(store, DictStore)
    ids = [k[1:] for k in store.data if k.startswith("c")]
    docs = [cases.document(i) for i in ids]
    return {d["case_id"]: d for d in docs if "merged_into" not in d}


def test_a_planted_gang_is_one_case_and_loners_are_their_own() -> None:
    docs = documents(cases_of(gang() + loners()))
    assert len(docs) == 4
    gang_case = docs[case_id_of(aid(1))]
    assert gang_case["alert_count"] == 6
    shared = {e["id"]: len(e["alerts"]) for e in gang_case["entities"]}
    assert shared["device:dev-g"] == shared["address:addr-g"] == shared["agent:agent-g"] == 6
    assert {e["id"] for e in gang_case["entities"] if e["kind"] == "outlet"} == {
        "outlet:outlet-0",
        "outlet:outlet-1",
    }
    edges = {(link["source"], link["target"]) for link in gang_case["links"]}
    assert ("identity:person-3", "device:dev-g") in edges
    for n in range(3):
        assert docs[case_id_of(aid(100 + n))]["alert_count"] == 1


def test_the_cases_do_not_depend_on_the_order_the_alerts_came_in() -> None:
    items = gang() + loners()
    expected = documents(cases_of(items))
    for seed in range(5):
        shuffled = items[:]
        random.Random(seed).shuffle(shuffled)
        assert documents(cases_of(shuffled)) == expected


def test_a_later_alert_joining_two_cases_keeps_the_earlier_id() -> None:
    cases = Cases(CaseSettings(), DictStore())
    first = cases.add(alert(1, day=0), person(1, device="d1"))
    second = cases.add(alert(2, day=1), person(2, device="d2"))
    assert (first.case_id, second.case_id) == (case_id_of(aid(1)), case_id_of(aid(2)))
    bridge = cases.add(alert(3, day=2), [*person(3, device="d1"), ["ev-3b", "device", "d2", ""]])
    assert bridge.case_id == first.case_id
    assert second.case_id in bridge.changed
    assert cases.document(str(second.case_id)) == {
        "schema": "duanka.case/1",
        "case_id": second.case_id,
        "merged_into": first.case_id,
    }
    assert cases.case_of(aid(2)) == first.case_id


def test_alerts_further_apart_than_the_window_are_not_linked_unless_chained() -> None:
    apart = cases_of(
        [(alert(1, day=0), person(1, device="d")), (alert(2, day=31), person(2, device="d"))]
    )
    assert len(documents(apart)) == 2
    edge = cases_of(
        [(alert(1, day=0), person(1, device="d")), (alert(2, day=30), person(2, device="d"))]
    )
    assert len(documents(edge)) == 1
    chained = cases_of(
        [
            (alert(1, day=0), person(1, device="d")),
            (alert(2, day=31), person(2, device="d")),
            (alert(3, day=15), person(3, device="d")),
        ]
    )
    assert len(documents(chained)) == 1


def test_link_by_leaves_out_what_is_not_listed() -> None:
    items = [(alert(1), person(1, device="d")), (alert(2, day=1), person(2, device="d"))]
    assert len(documents(cases_of(items))) == 1
    assert len(documents(cases_of(items, link_by=("identity", "contact")))) == 1 + 1


def test_two_alerts_at_one_outlet_are_not_linked_by_it_alone() -> None:
    items = [
        (alert(1), person(1, outlet="busy", agent="clerk")),
        (alert(2, day=1), person(2, outlet="busy", agent="clerk")),
    ]
    assert len(documents(cases_of(items))) == 2
    about = alert(3, day=2, rule="outlet_nonlocal_surge", kind="outlet", key="busy")
    joined = documents(cases_of([*items, (about, [["", "outlet", "busy", "busy"]])]))
    assert [d["alert_count"] for d in joined.values()] == [3]


def test_an_alert_taken_twice_changes_nothing() -> None:
    cases = Cases(CaseSettings(), DictStore())
    cases.add(alert(1), person(1, device="d"))
    before = dict(cases.store.data)  # type: ignore[attr-defined]
    assert cases.add(alert(1), person(1, device="d")).case_id is None
    assert cases.store.data == before  # type: ignore[attr-defined]


def test_old_token_entries_are_pruned() -> None:
    cases = Cases(CaseSettings(window="1d"), DictStore())
    cases.add(alert(1, day=0), person(1, device="d"))
    cases.add(alert(2, day=10), person(2, device="d"))
    assert cases.store.get("tdevice\x1fd") == [[(T0 + timedelta(days=10)).timestamp(), aid(2), 0]]


def verdict(n: int, status: str, punish: bool = False) -> Disposition:
    p = (
        Punishment("telecom", date(2026, 12, 2), date(2028, 12, 2), "card trade")
        if punish
        else None
    )
    return Disposition(aid(n), status, T0, "police-0042", "a note with 13912345678", p)


def test_a_confirmed_punishing_verdict_punishes_and_an_appeal_lifts_it() -> None:
    cases = cases_of(gang())
    outcome = cases.dispose(verdict(2, "confirmed", punish=True), now=0)
    assert outcome.status == "applied"
    assert outcome.punish is not None
    key, alert_id, entry = outcome.punish
    assert (key, alert_id) == ("person-2", aid(2))
    assert entry is not None and entry.scope == "telecom" and entry.basis == "card trade"
    assert cases.verdict_counts()["two_cards_combo"]["confirmed"] == 1
    lifted = cases.dispose(verdict(2, "dismissed"), now=1)
    assert lifted.punish == ("person-2", aid(2), None)
    counts = cases.verdict_counts()["two_cards_combo"]
    assert (counts["confirmed"], counts["dismissed"]) == (0, 1)
    doc = cases.document(case_id_of(aid(1)))
    assert doc["verdicts"]["dismissed"] == 1
    assert doc["verdicts_by_rule"] == {
        "two_cards_combo": {"investigating": 0, "confirmed": 0, "dismissed": 1}
    }
    assert "13912345678" not in repr(cases.store.data)  # type: ignore[attr-defined]


def test_a_verdict_without_punishment_lifts_nothing_it_did_not_put() -> None:
    cases = cases_of(gang())
    assert cases.dispose(verdict(3, "investigating"), now=0).punish is None
    assert cases.dispose(verdict(3, "confirmed"), now=0).punish is None


def test_punishing_an_outlet_alert_is_refused() -> None:
    cases = cases_of([(alert(9, rule="gang_batch_open", kind="outlet", key="o1"), person(9))])
    outcome = cases.dispose(verdict(9, "confirmed", punish=True), now=0)
    assert outcome.status == "invalid"
    assert "only for identity alerts" in outcome.reason


def test_a_verdict_waits_for_its_alert_then_expires() -> None:
    cases = Cases(CaseSettings(unknown_grace="60s"), DictStore())
    assert cases.dispose(verdict(1, "confirmed", punish=True), now=100).status == "pending"
    assert cases.dispose(verdict(5, "dismissed"), now=100).status == "pending"
    added = cases.add(alert(1), person(1))
    assert [o.status for o in added.verdicts] == ["applied"]
    assert added.verdicts[0].punish is not None
    assert cases.expire(now=159) == []
    assert [alert_id for alert_id, _ in cases.expire(now=160)] == [aid(5)]
    assert cases.store.get("p") is None


@pytest.mark.parametrize("rule", ["gang_batch_open", "agent_flag_rate"])
def test_place_alerts_join_the_people_they_name(rule: str) -> None:
    kind = "outlet" if rule == "gang_batch_open" else "agent"
    place: list[LinkRow] = [["", kind, "p1", "p1"]]
    place += [[f"ev-{n}", "identity", f"person-{n}", ""] for n in (1, 2)]
    items = [
        (alert(1), person(1)),
        (alert(2, day=1), person(2)),
        (alert(3, day=1, rule=rule, kind=kind, key="p1"), place),
    ]
    assert len(documents(cases_of(items))) == 1


def test_a_very_large_case_lists_its_most_named_entities_and_says_how_many_it_left_out() -> None:
    cases = Cases(CaseSettings(), DictStore())
    for n in range(1000):  # a thousand people on one device and address, each with a phone
        rows = [*person(n, device="shared", address="a"), [f"ev-{n}", "contact", f"ph-{n}", ""]]
        cases.add(alert(n, day=n / 1000), rows)
    [doc] = documents(cases).values()
    assert doc["alert_count"] == 1000 and len(doc["alerts"]) == 200
    kinds = [e["kind"] for e in doc["entities"]]
    # what most alerts share first, then people before their phones
    assert (kinds.count("device"), kinds.count("address"), kinds.count("identity")) == (1, 1, 798)
    assert doc["left_out"] == {"entities": 2002 - 800, "links": 3000 - 2 * 798}
    assert len(doc["links"]) == 2 * 798
    assert len(orjson.dumps(doc)) < 1024 * 1024

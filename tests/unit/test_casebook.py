"""The console's case book: latest documents, merges, search, precision, the graph."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from rules.cases import Cases, DictStore, LinkRow
from rules.config import CaseSettings
from rules.disposition import Disposition
from stream.casebook import CaseBook, CaseQuery, graph

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


def alert(n: int, day: float, masked: str, rule: str = "two_cards_combo") -> dict[str, Any]:
    return {
        "alert_id": f"{n:02d}" + "ab" * 15,
        "rule_id": rule,
        "severity": "critical" if rule == "watchlist_hit" else "high",
        "action": "review",
        "subject": {"kind": "identity", "key": f"p{n}", "id_masked": masked},
        "event_time": (T0 + timedelta(days=day)).isoformat(),
        "summary_zh": "",
        "summary_en": "",
        "facts": {},
        "evidence": [],
    }


def links(n: int, device: str, outlet: str) -> list[LinkRow]:
    return [
        [f"e{n}", "identity", f"p{n}", f"62{n:02d}**********0001"],
        [f"e{n}", "device", device, "dev***1"],
        [f"e{n}", "outlet", outlet, outlet],
    ]


def book_of(cases: Cases) -> CaseBook:
    book = CaseBook(topic="police.cases")
    store = cases.store
    assert isinstance(store, DictStore)
    book.receive(orjson.dumps(cases.document(case_id)) for case_id in store.case_ids())
    return book


def two_cases() -> Cases:
    cases = Cases(CaseSettings(), DictStore())
    cases.add(alert(1, 0, "6201**********0001"), links(1, "d1", "GS-LZ-0012"))
    cases.add(alert(2, 1, "6201**********0002"), links(2, "d1", "GS-LZ-0012"))
    cases.add(alert(3, 5, "4501**********0003", "watchlist_hit"), links(3, "d9", "GX-NN-0001"))
    return cases


def test_the_list_is_newest_first_and_search_finds_masked_ids_outlets_and_case_ids() -> None:
    book = book_of(two_cases())
    listed = book.search(CaseQuery())
    assert [c["alert_count"] for c in listed["cases"]] == [1, 2]
    assert listed["cases"][0]["severity"] == "critical"
    found = book.search(CaseQuery("6201**********0002"))["cases"]
    assert [c["alert_count"] for c in found] == [2]
    assert [c["alert_count"] for c in book.search(CaseQuery("gx-nn"))["cases"]] == [1]
    case_id = found[0]["case_id"]
    assert book.search(CaseQuery(case_id))["cases"][0]["case_id"] == case_id
    assert book.search(CaseQuery("no such thing"))["cases"] == []


def test_a_merged_case_id_leads_to_the_case_it_joined() -> None:
    cases = two_cases()
    bridge = alert(4, 6, "6201**********0004")
    joined = cases.add(bridge, [*links(4, "d1", "x"), ["e4b", "device", "d9", ""]])
    book = book_of(cases)
    assert len(book.cases) == 1
    for old in joined.changed:
        found = book.get(old)
        assert found is not None and found["case_id"] == joined.case_id


def test_precision_per_rule_from_the_standing_verdicts() -> None:
    cases = two_cases()
    now = T0
    for n, status in ((1, "confirmed"), (2, "dismissed"), (3, "confirmed")):
        cases.dispose(Disposition(f"{n:02d}" + "ab" * 15, status, now, "p-1"), now=0)
    cases.dispose(Disposition("01" + "ab" * 15, "confirmed", now, "p-1"), now=0)  # again
    precision = book_of(cases).precision()
    assert precision["two_cards_combo"]["confirmed"] == 1
    assert precision["two_cards_combo"]["precision"] == 0.5
    assert precision["watchlist_hit"]["precision"] == 1.0


def test_the_graph_shows_the_shared_device_once_with_both_people() -> None:
    cases = two_cases()
    book = book_of(cases)
    [doc] = [d for d in book.cases.values() if d["alert_count"] == 2]
    svg = graph(doc)
    root = ET.fromstring(svg)
    ids = [g.get("data-id") for g in root.iter("{http://www.w3.org/2000/svg}g") if g.get("data-id")]
    assert ids.count("device:d1") == 1
    lines = [
        (line.get("data-source"), line.get("data-target"))
        for line in root.iter("{http://www.w3.org/2000/svg}line")
    ]
    assert ("identity:p1", "device:d1") in lines or ("device:d1", "identity:p1") in lines
    assert "href" not in svg and "<script" not in svg

"""The console's view of the cases: the latest `duanka.case/1` document of each, from police.cases.

The case stage publishes a case's document whenever it changes, keyed by
case id, and `{"case_id": ..., "merged_into": ...}` for a case joined into
an earlier one (rules/cases.py). Every worker's console reads the topic as
any police consumer would (stream/console.py `read_topic`) and keeps the
latest document per case in memory: the list (newest and most severe
first), the search, a case's page, and precision per rule from the standing
verdicts the documents count.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from rules.alert import SEVERITIES
from rules.disposition import STATUSES, precision
from rules.errors import InvalidRecord
from stream.graph import Edge, Node, link_graph_svg

# the most cases the console keeps (the least recently changed go first)
CASES_KEPT = 50_000
LISTED = 200  # cases a list or search answers with at most


@dataclass(frozen=True, slots=True)
class CaseQuery:
    """A search: free text matched against case ids, masked ids, outlets and agents."""

    text: str = ""
    limit: int = LISTED

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> CaseQuery:
        text = params.get("q", "").strip()
        if len(text) > 64:
            raise ValueError("q must be at most 64 characters")
        return cls(text)


def _rank(doc: Mapping[str, Any]) -> tuple[str, int]:
    return (str(doc.get("latest") or ""), SEVERITIES.index(doc["severity"]))


class CaseBook:
    """The latest document of every case read, and where merged ids went."""

    def __init__(self, keep: int = CASES_KEPT, topic: str = "") -> None:
        self.topic = topic
        self.status = "starting"
        self.keep = keep
        self.cases: dict[str, dict[str, Any]] = {}  # insertion order: least recently changed first
        self.merged: dict[str, str] = {}
        self.skipped = 0

    def receive(self, values: Iterable[bytes | None]) -> list[InvalidRecord]:
        errors: list[InvalidRecord] = []
        for value in values:
            try:
                doc = orjson.loads(value or b"")
                case_id = doc["case_id"]
                if type(case_id) is not str:
                    raise TypeError
            except (orjson.JSONDecodeError, TypeError, KeyError):
                self.skipped += 1
                errors.append(InvalidRecord("record", "not a duanka.case/1 document"))
                continue
            into = doc.get("merged_into")
            self.cases.pop(case_id, None)
            if into:
                self.merged[case_id] = str(into)
                continue
            self.merged.pop(case_id, None)
            self.cases[case_id] = doc
            if len(self.cases) > self.keep:
                del self.cases[next(iter(self.cases))]
        return errors

    def get(self, case_id: str) -> dict[str, Any] | None:
        """A case's document, following merges."""
        for _ in range(100):
            if case_id in self.cases:
                return self.cases[case_id]
            if case_id not in self.merged:
                return None
            case_id = self.merged[case_id]
        return None

    def search(self, query: CaseQuery) -> dict[str, Any]:
        """The cases matching, newest then most severe first, as the list shows them."""
        text = query.text.lower()
        found = [doc for doc in self.cases.values() if not text or _matches(doc, text)]
        if text and not found:
            merged = self.get(query.text)
            found = [merged] if merged is not None else []
        found.sort(key=_rank, reverse=True)
        return {
            "cases": [summary(doc) for doc in found[: query.limit]],
            "matching": len(found),
            "total": len(self.cases),
            "precision": self.precision(),
            "topic": self.topic,
            "status": self.status,
        }

    def precision(self) -> dict[str, dict[str, Any]]:
        """Standing verdicts by rule over every case kept, and the precision they give."""
        counts: dict[str, dict[str, int]] = {}
        for doc in self.cases.values():
            for rule, by_status in doc.get("verdicts_by_rule", {}).items():
                total = counts.setdefault(rule, dict.fromkeys(STATUSES, 0))
                for status, n in by_status.items():
                    if status in total:
                        total[status] += n
        return {rule: {**c, "precision": precision(c)} for rule, c in sorted(counts.items())}


def _matches(doc: Mapping[str, Any], text: str) -> bool:
    if text in doc["case_id"].lower():
        return True
    for entity in doc["entities"]:
        if entity["kind"] in ("outlet", "agent") and text in entity["token"].lower():
            return True
        if entity["kind"] == "identity" and text in entity["shown"].lower():
            return True
    return any(
        text in str(alert["subject"].get("id_masked", "")).lower() for alert in doc["alerts"]
    )


def summary(doc: Mapping[str, Any]) -> dict[str, Any]:
    """What the list shows of a case."""
    kinds: dict[str, int] = {}
    for entity in doc["entities"]:
        kinds[entity["kind"]] = kinds.get(entity["kind"], 0) + 1
    return {
        "case_id": doc["case_id"],
        "severity": doc["severity"],
        "opened": doc["opened"],
        "latest": doc["latest"],
        "alert_count": doc["alert_count"],
        "rules": doc["rules"],
        "verdicts": doc["verdicts"],
        "entities": kinds,
        "outlets": sorted(e["token"] for e in doc["entities"] if e["kind"] == "outlet")[:5],
    }


LABELS = {"device": "device", "contact": "phone", "address": "address"}


def graph(doc: Mapping[str, Any]) -> str:
    """The case's link graph as an inline SVG: entities as nodes, what they share as edges."""
    severity = {a["alert_id"]: a["severity"] for a in doc["alerts"]}
    nodes = []
    for entity in doc["entities"]:
        kind, token, shown = entity["kind"], entity["token"], entity["shown"]
        if kind == "identity":
            label = shown or f"person {token[:6]}…"
        elif kind in ("outlet", "agent"):
            label = f"{kind} {token}"
        else:
            label = f"{LABELS[kind]} {shown or token[:6] + '…'}"
        worst = [severity[a] for a in entity["alerts"] if a in severity]
        top = max(worst, key=SEVERITIES.index) if worst else ""
        nodes.append(Node(entity["id"], kind, label, len(entity["alerts"]), top))
    edges = [
        Edge(link["source"], link["target"], link["attr"], len(link["events"]))
        for link in doc["links"]
    ]
    return link_graph_svg(nodes, edges)

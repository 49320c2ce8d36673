"""Cases: alerts linked through the people, devices, phones, addresses and places they share.

Two alerts are linked when an event of one and an event of the other share a
token of one of `cases.link_by` (an identity's pseudonym, a device or contact
phone token, a delivery address key, an outlet or an agent) and the alerts'
event times are at most `cases.window` apart. An outlet or an agent links an
alert about it (`outlet_nonlocal_surge`, `gang_batch_open`, `agent_flag_rate`)
with the alerts on events there; two people's alerts are not linked only
because they opened at one busy outlet. A case is a connected group of
linked alerts (CASES.md). Its id comes from its first alert, by event time
then alert id, so it does not depend on the order in which the alerts
arrive: when a new alert joins two cases, the merged case keeps the id of the
earlier one and the other id points to it.

`Cases` keeps everything in a key-value store of JSON values (`CaseStore`):
the stream's case table, or a dict in replay. Keys:

    a<alert_id>            the alert, its links, its case, its standing verdict
    c<case_id>             the case: its alerts, first alert, severity, verdict counts;
                           or {"into": case_id} once merged into another
    t<attr>\\x1f<token>     the alerts with that token: [[event time, alert_id, 1 if the
                           alert is about that outlet or agent else 0], ...]
    p                      verdicts waiting for an alert not known yet
    v                      standing verdicts counted by rule and status
    m                      the latest alert event time seen
    i<subject key>         the latest alert about that identity

An `implicated_opener` alert (a card the person opened turned up in a fraud
case, often months later) joins the case of the person's latest alert
whatever the time between them, and links by the window like any other too.

Every value holds pseudonyms, keyed tokens and masked values only; a
verdict's free-text note stays on the police's topic.
"""

from __future__ import annotations

from bisect import insort
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from rules.alert import SEVERITIES, Alert
from rules.config import CaseSettings
from rules.disposition import STATUSES, Disposition, Punishment
from rules.event import PseudonymousEvent
from rules.state import AgentState, OutletState, WatchEntry

CASE_SCHEMA = "duanka.case/1"
# a token's alerts are kept this long past the window, so that an alert that
# arrives late (another stage's, another worker's) still finds what it links to
SLACK_S = 86_400.0
# the most alerts, entities and links a case document lists (the case keeps counting the
# rest): a Kafka record is at most 1 MiB by default, and these keep a document well under it
LISTED_ALERTS = 200
LISTED_ENTITIES = 800
LISTED_LINKS = 1600
PLACES = ("outlet", "agent")
KINDS = ("identity", "device", "address", "contact", "outlet", "agent")  # whom a cut keeps first
LATEST = "m"
# rules whose alerts join the case of the identity's earlier alerts, however long before
JOINS_PERSON = frozenset({"implicated_opener"})
PENDING = "p"
VERDICTS = "v"

# A link row: [event_id, attribute, token, shown]: one thing an event of the
# alert names, and how the console may show it (a mask, an outlet id).
LinkRow = list[str]


class CaseStore(Protocol):
    def get(self, key: str) -> Any: ...

    def put(self, key: str, value: Any) -> None: ...


class DictStore:
    """A `CaseStore` in memory (replay, tests)."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def clear(self) -> None:
        self.data.clear()

    def case_ids(self) -> list[str]:
        """Every case id, merged ones too, sorted."""
        return sorted(key[1:] for key in self.data if key[0] == "c")

    def get(self, key: str) -> Any:
        return self.data.get(key)

    def put(self, key: str, value: Any) -> None:
        if value is None:
            self.data.pop(key, None)
        else:
            self.data[key] = value


# ---------------------------------------------------------------- what an alert links by


def identity_links(event: PseudonymousEvent) -> list[LinkRow]:
    """What an identity alert links by: its triggering event's identity, device, phone, place."""
    return _event_links(
        event.event_id,
        event.subject_key,
        event.id_masked,
        event.device_key,
        event.device_masked,
        event.contact_key,
        event.contact_masked,
        event.delivery.address_key if event.delivery else None,
        event.outlet_id,
        event.agent_id,
    )


def outlet_links(alert: Alert, state: OutletState) -> list[LinkRow]:
    """An outlet alert's links: the outlet, and the people and means of its evidence openings."""
    rows: list[LinkRow] = [["", "outlet", alert.subject.key, alert.subject.key]]
    wanted = {f"{e.source}\x1f{e.event_id}" for e in alert.evidence}
    for o in state.openings.items:
        if o.key in wanted:
            rows += _event_links(
                o.event_id,
                o.subject_key,
                "",
                o.device_key,
                "",
                o.contact_key,
                "",
                o.address_key,
                alert.subject.key,
                None,
            )
    return rows


def agent_links(alert: Alert, state: AgentState) -> list[LinkRow]:
    """An agent alert's links: the agent, and the alerted people it handled."""
    rows: list[LinkRow] = [["", "agent", alert.subject.key, alert.subject.key]]
    wanted = set(alert.evidence)
    for flag in state.flags.items:
        if flag.evidence in wanted:
            rows.append([flag.evidence.event_id, "identity", flag.subject_key, ""])
            rows.append([flag.evidence.event_id, "agent", alert.subject.key, alert.subject.key])
    return rows


def _event_links(
    event_id: str,
    identity: str,
    id_masked: str,
    device: str | None,
    device_masked: str | None,
    contact: str | None,
    contact_masked: str | None,
    address: str | None,
    outlet: str | None,
    agent: str | None,
) -> list[LinkRow]:
    rows = [[event_id, "identity", identity, id_masked]]
    if device:
        rows.append([event_id, "device", device, device_masked or ""])
    if contact:
        rows.append([event_id, "contact", contact, contact_masked or ""])
    if address:
        rows.append([event_id, "address", address, ""])
    if outlet:
        rows.append([event_id, "outlet", outlet, outlet])
    if agent:
        rows.append([event_id, "agent", agent, agent])
    return rows


# ---------------------------------------------------------------- the cases


def case_id_of(alert_id: str) -> str:
    """A case's id: from its first alert's."""
    return f"case-{alert_id[:16]}"


def event_epoch(alert: Mapping[str, Any]) -> float:
    return datetime.fromisoformat(str(alert["event_time"])).timestamp()


@dataclass(slots=True)
class Outcome:
    """What a verdict did: `applied`, `pending` (alert not known yet) or `invalid` (why)."""

    status: str
    alert_id: str
    reason: str = ""
    rule_id: str = ""
    # (pseudonym, alert_id, entry or None to lift it): a punishment for the identity stage
    punish: tuple[str, str, WatchEntry | None] | None = None


@dataclass(slots=True)
class Added:
    """An alert taken into the cases: its case (None if it was there already)."""

    case_id: str | None
    changed: set[str] = field(default_factory=set)  # case ids whose documents changed
    verdicts: list[Outcome] = field(default_factory=list)  # waiting verdicts it let apply


class Cases:
    """The union of linked alerts, kept in a `CaseStore`."""

    def __init__(self, settings: CaseSettings, store: CaseStore) -> None:
        self.window = float(settings.window_s)
        self.link_by = frozenset(settings.link_by)
        self.grace = float(settings.unknown_grace_s)
        self.store = store

    def clear(self) -> None:
        """Forget every case (a `DictStore`'s only)."""
        if isinstance(self.store, DictStore):
            self.store.clear()

    def documents(self) -> list[dict[str, Any]]:
        """Every case's document, by case id (a `DictStore`'s only); merged ids left out."""
        if not isinstance(self.store, DictStore):
            raise TypeError("only the cases of a DictStore can be listed")
        found = [self.document(case_id) for case_id in self.store.case_ids()]
        return [doc for doc in found if "merged_into" not in doc]

    # ------------------------------------------------------------ alerts

    def add(self, alert: Mapping[str, Any], links: Iterable[LinkRow], now: float = 0.0) -> Added:
        """Take an alert (its contract JSON as an object) and what its events name."""
        store = self.store
        alert_id = str(alert["alert_id"])
        if store.get("a" + alert_id) is not None:
            return Added(None)
        rows = [list(row) for row in links]
        ts = event_epoch(alert)
        latest = store.get(LATEST)
        latest = ts if latest is None or ts > latest else latest
        store.put(LATEST, latest)
        horizon = latest - self.window - SLACK_S
        found: set[str] = set()
        subject = alert["subject"]
        for attr, token in sorted({(row[1], row[2]) for row in rows}):
            if attr not in self.link_by:
                continue
            # an outlet or agent links the alerts about it with those on events there,
            # not every two alerts that happened there (a busy outlet would join everyone)
            about = int(attr in PLACES and (subject["kind"], subject["key"]) == (attr, token))
            key = f"t{attr}\x1f{token}"
            entries = [e for e in store.get(key) or [] if e[0] >= horizon]
            for other_ts, other, other_about in entries:
                if abs(other_ts - ts) <= self.window and (
                    attr not in PLACES or about or other_about
                ):
                    found.add(self.case_of(other))
            insort(entries, [ts, alert_id, about])
            store.put(key, entries)
        if subject["kind"] == "identity":
            person = "i" + str(subject["key"])
            latest_about = store.get(person)
            if alert["rule_id"] in JOINS_PERSON and latest_about is not None:
                found.add(self.case_of(latest_about))
            store.put(person, alert_id)
        target, changed = self._join(found, ts, alert_id, str(alert["severity"]))
        store.put(
            "a" + alert_id,
            {"alert": dict(alert), "links": rows, "ts": ts, "case": target, "verdict": None},
        )
        added = Added(target, changed | {target})
        pending = store.get(PENDING) or {}
        if alert_id in pending:
            waiting = pending.pop(alert_id)
            store.put(PENDING, pending or None)
            added.verdicts.append(self._apply(alert_id, waiting[1]))
        return added

    def _join(
        self, found: set[str], ts: float, alert_id: str, severity: str
    ) -> tuple[str, set[str]]:
        """Make the case of a new alert from the cases it links to; (its id, ids changed)."""
        store = self.store
        records = [store.get("c" + case_id) for case_id in sorted(found)]
        first = min([[ts, alert_id], *(r["first"] for r in records)])
        target = case_id_of(first[1])
        merged: dict[str, Any] = {
            "id": target,
            "first": first,
            "alerts": sorted([[ts, alert_id], *(a for r in records for a in r["alerts"])]),
            "severity": _highest([severity, *(r["severity"] for r in records)]),
            "verdicts": dict.fromkeys(STATUSES, 0),
        }
        for r in records:
            for status, n in r["verdicts"].items():
                merged["verdicts"][status] += n
        changed = set()
        for r in records:
            if r["id"] != target:
                store.put("c" + r["id"], {"into": target})
                changed.add(r["id"])
        store.put("c" + target, merged)
        return target, changed

    def case_of(self, alert_id: str) -> str:
        """The id of the case an alert is in now (following merges)."""
        record = self.store.get("a" + alert_id)
        case_id = self.resolve(record["case"])
        if case_id != record["case"]:
            record["case"] = case_id  # shorten the path for the next lookup
            self.store.put("a" + alert_id, record)
        return case_id

    def resolve(self, case_id: str) -> str:
        """A case id, or the id of the case it was merged into."""
        seen = 0
        record = self.store.get("c" + case_id)
        while record is not None and "into" in record and seen < 1000:
            case_id = record["into"]
            record = self.store.get("c" + case_id)
            seen += 1
        return case_id

    # ------------------------------------------------------------ verdicts

    def dispose(self, disposition: Disposition, now: float) -> Outcome:
        """Apply a verdict; one for an alert not known yet waits `unknown_grace`."""
        row = verdict_row(disposition)
        del row["alert_id"]
        return self.dispose_row(disposition.alert_id, row, now)

    def dispose_row(self, alert_id: str, row: dict[str, Any], now: float) -> Outcome:
        """`dispose` for a verdict as `verdict_row` gives it."""
        if self.store.get("a" + alert_id) is None:
            pending = self.store.get(PENDING) or {}
            pending[alert_id] = [now, row]
            self.store.put(PENDING, pending)
            return Outcome("pending", alert_id)
        return self._apply(alert_id, row)

    def expire(self, now: float) -> list[tuple[str, dict[str, Any]]]:
        """The verdicts (alert id, row) that waited past the grace for an alert that never came."""
        pending = self.store.get(PENDING) or {}
        gone = sorted(a for a, (since, _) in pending.items() if now - since >= self.grace)
        if gone:
            expired = [(alert_id, pending.pop(alert_id)[1]) for alert_id in gone]
            self.store.put(PENDING, pending or None)
            return expired
        return []

    def _apply(self, alert_id: str, row: dict[str, Any]) -> Outcome:
        store = self.store
        record = store.get("a" + alert_id)
        alert = record["alert"]
        subject = alert["subject"]
        rule_id = str(alert["rule_id"])
        if row.get("punish") and subject["kind"] != "identity":
            reason = f"punish is only for identity alerts (this is a {subject['kind']} alert)"
            return Outcome("invalid", alert_id, reason, rule_id)
        old = record["verdict"]
        record["verdict"] = row
        store.put("a" + alert_id, record)
        counts = store.get(VERDICTS) or {}
        by_status = counts.setdefault(rule_id, dict.fromkeys(STATUSES, 0))
        case_id = self.case_of(alert_id)
        case = store.get("c" + case_id)
        if old is not None:
            by_status[old["status"]] -= 1
            case["verdicts"][old["status"]] -= 1
        by_status[row["status"]] += 1
        case["verdicts"][row["status"]] += 1
        store.put(VERDICTS, counts)
        store.put("c" + case_id, case)
        punish: tuple[str, str, WatchEntry | None] | None = None
        if row.get("punish"):
            punish = (subject["key"], alert_id, punishment_of(row).entry(alert_id))
        elif old is not None and old.get("punish"):
            punish = (subject["key"], alert_id, None)  # an appeal: lift what it put on the list
        return Outcome("applied", alert_id, "", rule_id, punish)

    def verdict_counts(self) -> dict[str, dict[str, int]]:
        """Standing verdicts by rule and status."""
        counts: dict[str, dict[str, int]] = self.store.get(VERDICTS) or {}
        return counts

    # ------------------------------------------------------------ documents

    def document(self, case_id: str) -> dict[str, Any]:
        """The case as `duanka.case/1` (or, for a merged id, where it went)."""
        record = self.store.get("c" + case_id)
        if record is None:
            raise KeyError(case_id)
        if "into" in record:
            return {"schema": CASE_SCHEMA, "case_id": case_id, "merged_into": self.resolve(case_id)}
        alerts = [self.store.get("a" + alert_id) for _, alert_id in record["alerts"]]
        return case_document(record, alerts)


def _highest(severities: Iterable[str]) -> str:
    return max(severities, key=SEVERITIES.index)


def verdict_row(d: Disposition) -> dict[str, Any]:
    """What the cases keep of a verdict: no free-text note."""
    row: dict[str, Any] = {
        "alert_id": d.alert_id,
        "status": d.status,
        "at": d.at.isoformat(),
        "by": d.by,
    }
    if d.punish is not None:
        p = d.punish
        row["punish"] = [p.scope, p.since.isoformat(), p.until.isoformat(), p.basis]
    return row


def punishment_of(row: Mapping[str, Any]) -> Punishment:
    from datetime import date

    scope, since, until, basis = row["punish"]
    return Punishment(scope, date.fromisoformat(since), date.fromisoformat(until), basis)


def case_document(record: Mapping[str, Any], alerts: list[Any]) -> dict[str, Any]:
    """A case's document: its alerts, the entities they name and the links between them."""
    entities: dict[str, dict[str, Any]] = {}
    links: dict[tuple[str, str], dict[str, Any]] = {}
    rules: dict[str, int] = {}
    by_rule: dict[str, dict[str, int]] = {}
    listed: list[dict[str, Any]] = []
    for entry in alerts:
        alert = entry["alert"]
        alert_id = alert["alert_id"]
        rules[alert["rule_id"]] = rules.get(alert["rule_id"], 0) + 1
        verdict = entry["verdict"]
        if verdict is not None:
            counts = by_rule.setdefault(alert["rule_id"], dict.fromkeys(STATUSES, 0))
            counts[verdict["status"]] += 1
        if len(listed) < LISTED_ALERTS:
            listed.append(
                {
                    "alert_id": alert_id,
                    "rule_id": alert["rule_id"],
                    "severity": alert["severity"],
                    "action": alert["action"],
                    "subject": alert["subject"],
                    "event_time": alert["event_time"],
                    "summary_zh": alert["summary_zh"],
                    "summary_en": alert["summary_en"],
                    "facts": alert["facts"],
                    "evidence": alert["evidence"],
                    "verdict": None if verdict is None else verdict["status"],
                }
            )
        _add_to_graph(alert_id, entry["links"], entities, links)
    first_id = record["first"][1]
    kept, left_out = _most_named(entities)
    shown = sorted(
        (link for link in links.values() if link["source"] in kept and link["target"] in kept),
        key=lambda link: (link["source"], link["target"]),
    )
    return {
        "schema": CASE_SCHEMA,
        "case_id": record["id"],
        "first_alert": first_id,
        "opened": alerts[0]["alert"]["event_time"] if alerts else None,
        "latest": alerts[-1]["alert"]["event_time"] if alerts else None,
        "severity": record["severity"],
        "alert_count": len(record["alerts"]),
        "rules": dict(sorted(rules.items())),
        "verdicts": record["verdicts"],
        "verdicts_by_rule": dict(sorted(by_rule.items())),
        "alerts": listed,
        "entities": [{**e, "alerts": sorted(e["alerts"])} for _, e in sorted(kept.items())],
        "links": shown[:LISTED_LINKS],
        "left_out": {"entities": left_out, "links": len(links) - min(len(shown), LISTED_LINKS)},
    }


def _most_named(entities: dict[str, dict[str, Any]]) -> tuple[dict[str, dict[str, Any]], int]:
    """The entities a document lists, and how many it leaves out.

    If there are too many: those in most alerts, people before what they share.
    """
    if len(entities) <= LISTED_ENTITIES:
        return entities, 0
    ranked = sorted(
        entities.items(),
        key=lambda item: (-len(item[1]["alerts"]), KINDS.index(item[1]["kind"]), item[0]),
    )
    return dict(ranked[:LISTED_ENTITIES]), len(entities) - LISTED_ENTITIES


def _add_to_graph(
    alert_id: str,
    rows: list[LinkRow],
    entities: dict[str, dict[str, Any]],
    links: dict[tuple[str, str], dict[str, Any]],
) -> None:
    """An alert's link rows as entities, and each event's person linked to what it names."""
    by_event: dict[str, list[LinkRow]] = {}
    for row in rows:
        event_id, attr, token, shown = row
        node = f"{attr}:{token}"
        found = entities.get(node)
        if found is None:
            found = entities[node] = {
                "id": node,
                "kind": attr,
                "token": token,
                "shown": shown,
                "alerts": [],
            }
        elif shown and not found["shown"]:
            found["shown"] = shown
        if alert_id not in found["alerts"]:
            found["alerts"].append(alert_id)
        if event_id:
            by_event.setdefault(event_id, []).append(row)
    for event_id, named in by_event.items():
        people = [f"identity:{r[2]}" for r in named if r[1] == "identity"]
        for person in people:
            for r in named:
                if r[1] == "identity":
                    continue
                target = f"{r[1]}:{r[2]}"
                link = links.setdefault(
                    (person, target),
                    {"source": person, "target": target, "attr": r[1], "events": []},
                )
                if event_id not in link["events"]:
                    link["events"].append(event_id)

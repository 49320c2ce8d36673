"""The police loop on a real broker: verdicts punish and are appealed, precision, cases."""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import orjson
import pytest
from checkkit import decide, request
from kafka import KafkaProducer
from workerkit import KEY, WorkerRun

from producers.simulator import Simulator, iter_lines
from rules.cases import Cases, DictStore
from rules.config import load_settings
from rules.disposition import Verdicts
from rules.engine import Engine
from rules.pseudonym import Pseudonymizer
from rules.replay import replay

pytestmark = pytest.mark.integration


@pytest.fixture
def run(worker_run: WorkerRun) -> WorkerRun:
    worker_run.start()
    return worker_run


def produce(run: WorkerRun, events: list[dict[str, Any]], path: Path) -> None:
    path.write_bytes(b"".join(line + b"\n" for line in iter_lines(events)))
    run.duanka("produce", "--quiet", str(path))


def alerts(run: WorkerRun, until: Callable[[list[dict[str, Any]]], bool]) -> list[dict[str, Any]]:
    def decoded(records: list[Any]) -> list[dict[str, Any]]:
        return [orjson.loads(r.value) for r in records]

    return decoded(run.read("alerts", until=lambda rs: until(decoded(rs)), settle=0.5))


def metric(run: WorkerRun, name: str, labels: str) -> float | None:
    with urllib.request.urlopen(f"http://127.0.0.1:{run.web_port}/metrics", timeout=10) as page:
        text = page.read().decode()
    found = re.search(rf"^{name}\{{{labels}\}} (\S+)$", text, re.MULTILINE)
    return None if found is None else float(found.group(1))


def wait_for(what: str, condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        time.sleep(0.5)


def refused_by_watchlist(run: WorkerRun, who: str) -> bool:
    check_id = f"c-{time.monotonic_ns()}"
    answer = decide(run, request(check_id, who, region_code="620102"))
    return any(reason["rule_id"] == "watchlist_hit" for reason in answer["reasons"])


def test_a_punishment_bars_the_next_opening_an_appeal_lifts_it_bad_ones_are_dead_lettered(
    run: WorkerRun, tmp_path: Path
) -> None:
    sim = Simulator(seed=5, days=10)
    who = sim.person(sim.home())  # non-local, verified remotely: sim_nonlocal_not_in_person
    sim.emit("sim.activate", who, sim.when(1), outlet=sim.online_outlet)
    produce(run, sim.world.events, tmp_path / "first.jsonl")
    [flagged] = alerts(run, lambda found: len(found) >= 1)
    assert flagged["rule_id"] == "sim_nonlocal_not_in_person"
    assert not refused_by_watchlist(run, who)

    run.duanka(
        "dispose",
        flagged["alert_id"],
        "--status",
        "confirmed",
        "--by",
        "GS-LZ-police-0042",
        "--note",
        "sold the SIM to a collector",
        "--punish-scope",
        "telecom",
        "--since",
        "2026-01-01",
        "--until",
        "2028-01-01",
    )
    wait_for("the check refuses the punished person", lambda: refused_by_watchlist(run, who))
    sim.world.events.clear()
    opening = sim.emit("sim.activate", who, sim.when(3))
    produce(run, sim.world.events, tmp_path / "second.jsonl")
    found = alerts(run, lambda found: any(a["rule_id"] == "watchlist_hit" for a in found))
    [hit] = [a for a in found if a["rule_id"] == "watchlist_hit"]
    assert hit["evidence"][0]["event_id"] == opening["event_id"]
    assert hit["facts"]["list"] == "police disposition"
    assert hit["facts"]["reason"] == f"alert {flagged['alert_id']}"
    assert "basis" not in hit["facts"]  # none was given

    # the appeal: the same alert, dismissed
    run.duanka("dispose", flagged["alert_id"], "--status", "dismissed", "--by", "GS-court-7")
    wait_for("the appeal lifts the bar", lambda: not refused_by_watchlist(run, who))
    sim.world.events.clear()
    later = sim.emit("sim.activate", who, sim.when(5), outlet=sim.online_outlet)
    produce(run, sim.world.events, tmp_path / "third.jsonl")
    found = alerts(
        run, lambda found: any(a["evidence"][0]["event_id"] == later["event_id"] for a in found)
    )
    on_later = [a["rule_id"] for a in found if a["evidence"][0]["event_id"] == later["event_id"]]
    assert "watchlist_hit" not in on_later

    # precision from the standing verdicts: the confirmation was replaced by the dismissal
    rule = 'rule_id="sim_nonlocal_not_in_person"'
    wait_for(
        "the verdict gauges",
        lambda: metric(run, "duanka_verdicts", f'{rule},status="dismissed"') == 1.0,
    )
    assert metric(run, "duanka_verdicts", f'{rule},status="confirmed"') == 0.0

    assert_bad_verdicts_are_dead_lettered(run)  # on the same worker: a start costs seconds


def assert_bad_verdicts_are_dead_lettered(run: WorkerRun) -> None:
    """An invalid verdict and one for an alert that never comes: dead letters with the reason."""
    producer = KafkaProducer(bootstrap_servers=run.bootstrap)
    unknown = "ab" * 16
    try:
        bad = {"schema": "duanka.disposition/1", "alert_id": "cd" * 16, "status": "guilty"}
        producer.send(run.topics["dispositions"], orjson.dumps(bad), key=b"cd" * 16)
        verdict = {
            "schema": "duanka.disposition/1",
            "alert_id": unknown,
            "status": "dismissed",
            "at": "2026-12-02T09:30:00+08:00",
            "by": "GS-LZ-police-0042",
            "note": "called 13912345678",
        }
        producer.send(run.topics["dispositions"], orjson.dumps(verdict), key=unknown.encode())
        producer.flush()
    finally:
        producer.close()
    records = run.read("deadletter", until=lambda rs: len(rs) >= 2, settle=0.5)
    letters = {orjson.loads(r.value)["field"]: orjson.loads(r.value) for r in records}
    assert letters["status"]["topic"] == run.topics["dispositions"]
    assert "guilty" in letters["status"]["error"]
    assert letters["alert_id"]["error"].startswith("alert_id: unknown alert_id")
    assert letters["alert_id"]["topic"] == run.topics["dispositions"]
    assert "13912345678" not in letters["alert_id"]["raw"]  # the note stays on the police's topic
    assert metric(run, "duanka_dispositions_total", 'outcome="unknown_alert"') == 1.0


def ring_world() -> Simulator:
    """A few days of ordinary openings, a ring, a gang at one outlet, and a busy agent."""
    sim = Simulator(seed=11, days=12, outlets=30)
    sim.ordinary(300)
    sim.ring()
    sim.gang("device_id")
    sim.busy_agent()
    sim.nonlocal_remote()
    sim.world.events.sort(key=lambda e: (e["occurred_at"], e["source"], e["event_id"]))
    return sim


def final_cases(records: list[Any]) -> dict[str, dict[str, Any]]:
    latest = {r.key: orjson.loads(r.value) for r in records}
    return {doc["case_id"]: doc for doc in latest.values() if "merged_into" not in doc}


def test_the_stream_forms_the_cases_replay_forms(run: WorkerRun, tmp_path: Path) -> None:
    sim = ring_world()
    events = tmp_path / "events.jsonl"
    produce(run, sim.world.events, events)

    settings = load_settings(run.config, environ={})
    expected = Cases(settings.cases, DictStore())
    out = tmp_path / "replay.jsonl"
    with out.open("wb") as written:
        replay(events, Engine(settings.rules), Pseudonymizer(KEY.encode()), written, cases=expected)
    replayed = {doc["case_id"]: doc for doc in expected.documents()}
    total = sum(doc["alert_count"] for doc in replayed.values())
    assert total == len(out.read_bytes().splitlines())

    def complete(records: list[Any]) -> bool:
        return sum(doc["alert_count"] for doc in final_cases(records).values()) >= total

    streamed = final_cases(run.read("cases", until=complete, settle=3.0))
    assert streamed == replayed

    # the ring: eight people, one device, one address, two outlets, one agent: one case
    # (a gang alert at the first outlet for the device, and one for the address)
    [ring] = [doc for doc in streamed.values() if doc["alert_count"] == 10]
    assert ring["rules"] == {"gang_batch_open": 2, "sim_nonlocal_not_in_person": 8}
    kinds: dict[str, list[dict[str, Any]]] = {}
    for entity in ring["entities"]:
        kinds.setdefault(entity["kind"], []).append(entity)
    assert len(kinds["identity"]) == 8
    assert [len(e["alerts"]) for e in kinds["device"]] == [10]
    assert [len(e["alerts"]) for e in kinds["address"]] == [10]
    assert len(kinds["outlet"]) == 2
    assert len(kinds["agent"]) == 1
    # the other planted cases are cases of their own: the busy agent's, the local gang's,
    # and a lone non-local opener's
    assert sorted(doc["alert_count"] for doc in streamed.values()) == [1, 1, 10, 11]

    # verdicts on a dozen alerts, some given twice: the precision metrics count the standing ones
    alerts_by_id = {a["alert_id"]: a for doc in streamed.values() for a in doc["alerts"]}
    chosen = sorted(alerts_by_id)[:12]
    statuses = ["confirmed", "dismissed", "investigating"]
    given = [(alert_id, statuses[n % 3]) for n, alert_id in enumerate(chosen)]
    given += [
        (alert_id, "confirmed") for alert_id in chosen[:4]
    ]  # second thoughts: the last stands
    expected_counts = Verdicts()
    for alert_id, status in given:
        run.duanka("dispose", alert_id, "--status", status, "--by", "GS-LZ-police-0042")
        expected_counts.set(alert_id, alerts_by_id[alert_id]["rule_id"], status)

    def gauges_match() -> bool:
        return all(
            metric(run, "duanka_verdicts", f'rule_id="{rule}",status="{status}"') == float(n)
            for rule, counts in expected_counts.counts.items()
            for status, n in counts.items()
        )

    wait_for("the verdict gauges to count the standing verdicts", gauges_match)
    documents = final_cases(run.read("cases", until=lambda rs: True, settle=2.0))
    by_rule: dict[str, dict[str, int]] = {}
    for doc in documents.values():
        for rule, counts in doc["verdicts_by_rule"].items():
            for status, n in counts.items():
                by_rule.setdefault(rule, {}).setdefault(status, 0)
                by_rule[rule][status] += n
    assert by_rule == expected_counts.counts
    assert date.fromisoformat(ring["opened"][:10]) >= sim.start

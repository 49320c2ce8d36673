"""Implicated numbers on the real broker: the stream traces them as replay does (CASES.md).

A simulated month is screened by a worker; then the police publish numbers
found in fraud cases: cards of the busiest outlet's openings (enough for
`outlet_implicated`), single cards, a card reported in two cases, a bank
account, and numbers nobody opened. Every alert must equal replay's for the
same files, the unknown numbers must be dead-lettered with the reason, and
the per-outlet figures in the worker's metrics must be replay's.
"""

from __future__ import annotations

import io
import re
import urllib.request
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from kafka import KafkaProducer
from workerkit import (
    WorkerRun,
    by_alert_id,
    read_topic,
    replay_alerts,
    wait_screened,
    write_world,
)

from producers.simulator import Simulator, World
from rules.figures import Figures
from rules.implicated import NO_OPENING, Implicated

UNKNOWN = ("13800000001", "13800000002")


def implicated_numbers(world: World) -> list[Implicated]:
    """Reports of the world's openings, days to months after them, and two nobody opened."""

    def when(event: dict[str, Any]) -> datetime:
        return datetime.fromisoformat(str(event["occurred_at"]))

    sims = [e for e in world.events if e["event_type"] == "sim.activate" and e.get("msisdn")]
    by_outlet = Counter(e["outlet_id"] for e in sims if e["outlet_id"] != "online")
    busiest = by_outlet.most_common(1)[0][0]
    chosen = [e for e in sims if e["outlet_id"] == busiest][:4]
    chosen += sims[:: max(1, len(sims) // 6)][:6]
    reports = [
        Implicated(
            "sim",
            str(e["msisdn"]),
            f"2026-GS-{n:04d}",
            when(e) + timedelta(days=5 + 17 * n),
            str(e["source"]) if n % 3 == 0 else None,
        )
        for n, e in enumerate(chosen)
    ]
    first = chosen[0]  # reported again, in another case: one card, two opener alerts
    again = when(first) + timedelta(days=90)
    reports.append(Implicated("sim", str(first["msisdn"]), "2026-GS-9001", again))
    account = next(e for e in world.events if e["event_type"] == "bank.open")
    later = when(account) + timedelta(days=30)
    reports.append(Implicated("account", str(account["account_id"]), "2026-GS-9002", later))
    last = max(when(e) for e in world.events)
    reports += [Implicated("sim", x, f"2026-GS-99{n}", last) for n, x in enumerate(UNKNOWN)]
    return sorted(reports, key=lambda r: r.reported_at)


def outlet_cards(metrics: str) -> dict[str, float]:
    pattern = r'^duanka_implicated_outlet_cards_total\{outlet="([^"]+)"\} ([0-9.e+]+)$'
    return {m[1]: float(m[2]) for m in re.finditer(pattern, metrics, re.MULTILINE)}


def test_implicated_numbers_give_replays_alerts_dead_letters_and_figures(
    worker_run: WorkerRun, tmp_path: Path
) -> None:
    run = worker_run
    world = Simulator(seed=41, days=30).build(ordinary_people=800)
    events, watchlist, holdings = write_world(world, tmp_path)
    reports = implicated_numbers(world)
    implicated = tmp_path / "implicated.jsonl"
    implicated.write_bytes(b"".join(r.to_json() + b"\n" for r in reports))
    traces = io.BytesIO()
    expected = replay_alerts(run, events, watchlist, holdings, implicated, traces)
    rules = Counter(a["rule_id"] for a in expected.values())
    assert rules["implicated_opener"] == len(reports) - len(UNKNOWN)
    assert rules["outlet_implicated"] == 1  # the busiest outlet's four cards

    run.load_lists(watchlist, holdings)
    run.duanka("produce", "--quiet", str(events))
    producer = KafkaProducer(bootstrap_servers=run.bootstrap, acks="all")
    try:
        for report in reports:
            producer.send(run.topics["implicated"], report.to_json(), key=report.number.encode())
        producer.flush()
    finally:
        producer.close()
    run.start()
    try:
        wait_screened(run, [run])
        with urllib.request.urlopen(f"http://127.0.0.1:{run.web_port}/metrics", timeout=10) as page:
            metrics = page.read().decode()
    finally:
        run.stop()

    stream = by_alert_id([r.value for r in read_topic(run.bootstrap, run.topics["alerts"])])
    assert stream == expected

    letters = [orjson.loads(r.value) for r in read_topic(run.bootstrap, run.topics["deadletter"])]
    unknown = [d for d in letters if NO_OPENING in d["error"]]
    assert len(unknown) == len(UNKNOWN)
    assert all(d["topic"] == run.topics["implicated"] for d in unknown)
    raw = b"".join(r.value for r in read_topic(run.bootstrap, run.topics["deadletter"]))
    assert not any(number.encode() in raw for number in UNKNOWN)  # the token, not the number

    replayed = [orjson.loads(line) for line in traces.getvalue().splitlines()]
    streamed = [orjson.loads(r.value) for r in read_topic(run.bootstrap, run.topics["traces"])]
    assert sorted(streamed, key=orjson.dumps) == sorted(replayed, key=orjson.dumps)
    figures = Figures.of(replayed)
    assert outlet_cards(metrics) == {k: float(v) for k, v in figures.by["outlet_id"].items()}

"""The watchlist through its compacted topic: loaded entries bar openings, removed ones do not."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from workerkit import WorkerRun

from producers.simulator import Simulator, iter_lines


@pytest.fixture
def run(worker_run: WorkerRun) -> WorkerRun:
    return worker_run


def test_entries_load_and_removals_take_effect(run: WorkerRun, tmp_path: Path) -> None:
    sim = Simulator(seed=3, days=5)
    kept, removed, telecom_only = sim.person(), sim.person(), sim.person()
    entries = [
        sim.watch_entry(kept, "all", sim.start),
        sim.watch_entry(removed, "all", sim.start),
    ]
    entries.append(sim.watch_entry(telecom_only, "telecom", sim.start))
    watchlist = tmp_path / "watch.csv"
    header = list(entries[0])
    watchlist.write_text(
        ",".join(header)
        + "\n"
        + "".join(",".join(str(e[k]) for k in header) + "\n" for e in entries)
    )
    at = sim.when(2)
    sim.emit("sim.activate", kept, at)
    sim.emit("sim.activate", removed, at)
    sim.emit("bank.open", telecom_only, at)  # a bank account: outside a telecom entry's scope
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"".join(line + b"\n" for line in iter_lines(sim.world.events)))

    loaded = run.duanka("watchlist", "load", str(watchlist))
    assert b"published 3 watchlist entries" in loaded.stdout
    run.duanka("watchlist", "remove", removed)
    run.start()
    run.duanka("produce", "--quiet", str(events))

    alerts = run.read("alerts", until=lambda rs: len(rs) >= 1, settle=5.0)
    hits = [orjson.loads(r.value) for r in alerts]
    assert [(a["rule_id"], a["subject"]["id_masked"]) for a in hits] == [
        ("watchlist_hit", kept[:4] + "*" * 10 + kept[-4:])
    ]
    assert hits[0]["facts"]["list"] == "credit_punishment"
    # the compacted topic keeps the removal as a null record keyed by the id number
    records = run.read("watchlist", until=lambda rs: len(rs) >= 4, settle=0)
    of_removed = [r.value is None for r in records if r.key == removed.encode()]
    assert of_removed == [False, True]

"""`duanka simulate --to-kafka`: the lists and every event to their topics, at the rate asked."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import orjson
from workerkit import WorkerRun


def test_simulated_events_reach_their_topics_at_the_rate_asked(
    worker_run: WorkerRun, tmp_path: Path
) -> None:
    out = tmp_path / "sim"
    started = time.monotonic()
    done = worker_run.duanka(
        "simulate", "--to-kafka", "--out", str(out), "--events", "600", "--rate", "300", "--quiet"
    )
    elapsed = time.monotonic() - started
    said = done.stdout.decode()
    events = [orjson.loads(line) for line in (out / "events.jsonl").read_bytes().splitlines()]
    watchlist = (out / "watchlist.jsonl").read_bytes().splitlines()
    holdings = (out / "holdings.jsonl").read_bytes().splitlines()
    assert f"published {len(watchlist)} watchlist entries" in said
    assert f"published {len(holdings)} holdings snapshots" in said
    assert f"sent {len(events)} records" in said
    assert elapsed >= len(events) / 300 * 0.9  # paced: no faster than 300 a second

    kinds = Counter("sim" if e["event_type"].startswith("sim.") else "bank" for e in events)
    sims = worker_run.read("sim_events", until=lambda rs: len(rs) >= kinds["sim"], settle=1)
    banks = worker_run.read("bank_events", until=lambda rs: len(rs) >= kinds["bank"], settle=1)
    assert (len(sims), len(banks)) == (kinds["sim"], kinds["bank"])
    # keyed by id number, and in the file's (event-time) order within each partition
    for record in sims + banks:
        assert record.key == orjson.loads(record.value)["id_number"].encode()
    by_partition: dict[int, list[str]] = {}
    for record in sims:
        by_partition.setdefault(record.partition, []).append(
            orjson.loads(record.value)["occurred_at"]
        )
    assert all(times == sorted(times) for times in by_partition.values())
    entries = worker_run.read("watchlist", until=lambda rs: len(rs) >= len(watchlist), settle=1)
    listed = sorted(orjson.loads(line)["id_number"].encode() for line in watchlist)
    assert sorted(r.key for r in entries) == listed
    # the snapshots keyed by source and id number, so that compaction keeps the latest of each
    snapshots = worker_run.read("holdings", until=lambda rs: len(rs) >= len(holdings), settle=1)
    held = [orjson.loads(line) for line in holdings]
    assert sorted(r.key for r in snapshots) == sorted(
        f"{h['source']}\x1f{h['id_number']}".encode() for h in held
    )

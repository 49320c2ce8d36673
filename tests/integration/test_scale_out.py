"""Workers in one group give exactly replay's alerts, outlet and agent rules included.

The events exercise every rule and go to Kafka in event-time order; two or
three workers share the partitions (6 of each topic), rebalancing as they
join. Each stage merges what every input partition sends it by the readers'
marks, so which worker read what does not change any alert. The check waits
until the workers have committed everything, then compares every alert in
full (all but `detected_at`) with replay's: none missing, none extra.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from rulekit import ALL_RULES
from workerkit import (
    WorkerRun,
    behind_now,
    by_alert_id,
    read_topic,
    replay_alerts,
    send_implicated,
    wait_screened,
    write_implicated,
    write_world,
)

from producers.simulator import Simulator

PARTITIONS = 6


def group_of(bootstrap: str, root: Path, count: int) -> list[WorkerRun]:
    """`count` workers of one app (group, topics, tables), each with a directory of its own."""
    runs: list[WorkerRun] = []
    for n in range(count):
        (root / f"worker-{n}").mkdir()
        run = runs[0].run if runs else None
        extra = {"run": run} if run else {}
        runs.append(WorkerRun(bootstrap, root / f"worker-{n}", partitions=PARTITIONS, **extra))
    runs[0].create_topics()
    return runs


def assert_same_alerts(run: WorkerRun, expected: dict[str, dict[str, object]]) -> None:
    stream = by_alert_id([r.value for r in read_topic(run.bootstrap, run.topics["alerts"])])
    missing = sorted(set(expected) - set(stream))
    extra = sorted(set(stream) - set(expected))
    assert not missing and not extra, (
        f"missing: {[expected[a]['rule_id'] for a in missing]}, "
        f"unexpected: {[stream[a]['rule_id'] for a in extra]}"
    )
    for alert_id, alert in expected.items():
        assert stream[alert_id] == alert


def assert_clean_logs(runs: list[WorkerRun]) -> None:
    for run in runs:
        log = run.log.read_text(errors="replace")
        assert "Traceback" not in log and "Crashed" not in log, run.log


@pytest.mark.parametrize("count", [2, 3])
def test_workers_in_one_group_give_replays_alerts(
    kafka_bootstrap: str, tmp_path: Path, count: int
) -> None:
    runs = group_of(kafka_bootstrap, tmp_path, count)
    first = runs[0]
    world = Simulator(seed=40 + count, days=30).build(ordinary_people=1500)
    events, watchlist, holdings = write_world(world, tmp_path)
    implicated = write_implicated(world, tmp_path)
    expected = replay_alerts(first, events, watchlist, holdings, implicated)
    assert {a["rule_id"] for a in expected.values()} == ALL_RULES
    try:
        first.load_lists(watchlist, holdings)
        for run in runs:
            run.start()
        first.duanka("produce", "--quiet", str(events))
        send_implicated(first, world)  # traced across the workers' number partitions
        wait_screened(first, runs)
        assert_same_alerts(first, expected)
    finally:
        for run in runs:
            run.stop()
    assert_clean_logs(runs)


def test_a_worker_of_three_killed_mid_stream_loses_nothing(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    runs = group_of(kafka_bootstrap, tmp_path, 3)
    first, victim = runs[0], runs[1]
    world = Simulator(seed=44, days=30).build(ordinary_people=1500, rounds=2)
    events, watchlist, holdings = write_world(world, tmp_path)
    expected = replay_alerts(first, events, watchlist, holdings)
    lines = events.read_bytes().splitlines(keepends=True)
    halves = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    halves[0].write_bytes(b"".join(lines[: len(lines) // 2]))
    halves[1].write_bytes(b"".join(lines[len(lines) // 2 :]))
    try:
        first.load_lists(watchlist, holdings)
        for run in runs:
            run.start()
        first.duanka("produce", "--quiet", str(halves[0]))
        first.read("alerts", until=lambda rs: len(rs) >= 10, settle=0)
        behind = behind_now(first)
        victim.kill()
        assert sum(behind.values()) > 0, f"the kill came after all was committed: {behind}"
        first.duanka("produce", "--quiet", str(halves[1]))
        survivors = [run for run in runs if run is not victim]
        wait_screened(first, survivors)
        assert_same_alerts(first, expected)
    finally:
        for run in runs:
            run.stop()
    assert_clean_logs([run for run in runs if run is not victim])

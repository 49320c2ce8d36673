"""Faults: workers killed mid-stream, the broker stopped and started, a worker of two lost.

These run on a broker of their own, which one test stops and starts again;
the session's broker is left alone. Each compares the alerts that reach
Kafka with what replay gives for the same files.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from workerkit import WorkerRun, by_alert_id, replay_alerts, write_world

from producers.simulator import Simulator
from stream import broker

IDENTITY_RULES = {
    "sim_churn",
    "sim_mail_out_of_province",
    "sim_nonlocal_monthly_limit",
    "sim_nonlocal_not_in_person",
    "watchlist_hit",
    "bank_multi_open",
    "two_cards_combo",
}


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """A broker for this module only: (port, data directory)."""
    data_dir = tmp_path_factory.mktemp("fault-kafka")
    port = broker.free_port()
    broker.start(port=port, data_dir=data_dir, timeout=120, die_with_parent=True)
    try:
        yield port, data_dir
    finally:
        broker.stop(data_dir)


def distinct(records: list[Any]) -> int:
    return len({orjson.loads(r.value)["alert_id"] for r in records})


def parts(events: Path, count: int) -> list[Path]:
    """The events file cut into `count` consecutive files."""
    lines = events.read_bytes().splitlines(keepends=True)
    size = -(-len(lines) // count)
    paths = []
    for number in range(count):
        path = events.with_name(f"part-{number}.jsonl")
        path.write_bytes(b"".join(lines[number * size : (number + 1) * size]))
        paths.append(path)
    return paths


def differences(
    stream: dict[str, dict[str, Any]], expected: dict[str, dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(alerts replay gives that the stream did not, alerts the stream gave that replay did not)."""
    missing = [expected[a] for a in sorted(set(expected) - set(stream))]
    extra = [stream[a] for a in sorted(set(stream) - set(expected))]
    return missing, extra


def named(alerts: list[dict[str, Any]]) -> list[str]:
    return [f"{a['rule_id']} {a['subject']['kind']} {a['subject']['key']}" for a in alerts]


def test_kills_and_a_broker_restart_lose_no_alert(
    own_broker: tuple[int, Path], tmp_path: Path
) -> None:
    port, data_dir = own_broker
    run = WorkerRun(f"127.0.0.1:{port}", tmp_path)
    run.create_topics()
    world = Simulator(seed=21, days=30).build(ordinary_people=1500, rounds=2)
    events, watchlist = write_world(world, tmp_path)
    expected = replay_alerts(run, events, watchlist)
    first, second, third, fourth = parts(events, 4)
    try:
        run.duanka("watchlist", "load", str(watchlist))
        run.start()
        run.duanka("produce", "--quiet", str(first))
        run.read("alerts", until=lambda rs: len(rs) >= 3, settle=0)
        run.kill()  # 1: mid-stream

        run.duanka("produce", "--quiet", str(second))  # while no worker runs
        run.start()
        seen = distinct(run.read("alerts", until=lambda rs: distinct(rs) >= 10, settle=0))
        run.kill()  # 2: while it catches up
        assert seen < len(expected)

        run.start()
        run.duanka("produce", "--quiet", str(third))
        run.read("alerts", until=lambda rs: distinct(rs) >= len(expected) // 2, settle=0)
        broker.stop(data_dir)  # the broker goes away under a running worker ...
        time.sleep(5)
        broker.start(port=port, data_dir=data_dir, timeout=120, die_with_parent=True)
        run.duanka("produce", "--quiet", str(fourth))  # ... and comes back
        run.read("alerts", until=lambda rs: distinct(rs) >= len(expected) * 3 // 4, settle=0)
        run.kill()  # 3: after the broker's restart

        run.start()
        records = run.read("alerts", until=lambda rs: distinct(rs) >= len(expected), timeout=180)
    finally:
        run.stop()
    missing, extra = differences(by_alert_id([r.value for r in records]), expected)
    assert not missing and not extra, f"missing: {named(missing)}, unexpected: {named(extra)}"
    assert run.starts == 4


def test_a_worker_of_two_is_killed_and_the_other_takes_over(
    own_broker: tuple[int, Path], tmp_path: Path
) -> None:
    """Its partitions move to the survivor, which restores their state from the changelogs.

    With two workers, each orders only the input partitions it holds. One
    person's events all sit in one partition number of each input topic, and
    faust gives the same partition numbers of both topics to one worker, so
    identity rules see each person's events in order and must give exactly
    replay's alerts. Outlet and agent rules count events of many people from
    partitions on both workers, whose ordering stages each order only their
    own partitions: an outlet's events can reach its rules out of event-time
    order, and a trailing window at a later event then misses an earlier one.
    Those alerts may differ from replay's; the test names every one that does.
    """
    port, _ = own_broker
    bootstrap = f"127.0.0.1:{port}"
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    one = WorkerRun(bootstrap, tmp_path / "one")
    two = WorkerRun(bootstrap, tmp_path / "two", run=one.run)  # same group, topics, tables
    one.create_topics()
    world = Simulator(seed=22, days=30).build(ordinary_people=1500, rounds=2)
    events, watchlist = write_world(world, tmp_path)
    expected = replay_alerts(one, events, watchlist)
    first, second = parts(events, 2)
    try:
        one.duanka("watchlist", "load", str(watchlist))
        # both at once: `topics create` made the changelogs, so neither
        # races the other to make them
        one.start()
        two.start()
        one.duanka("produce", "--quiet", str(first))
        one.read("alerts", until=lambda rs: distinct(rs) >= len(expected) // 4, settle=5)
        two.kill()
        one.duanka("produce", "--quiet", str(second))
        identity = {a for a, alert in expected.items() if alert["rule_id"] in IDENTITY_RULES}
        records = one.read(
            "alerts",
            until=lambda rs: identity <= {orjson.loads(r.value)["alert_id"] for r in rs},
            timeout=180,
            settle=15,
        )
    finally:
        one.stop()
        two.stop()
    missing, extra = differences(by_alert_id([r.value for r in records]), expected)
    report = f"missing: {named(missing)}, unexpected: {named(extra)}"
    print(f"two workers, one killed: {len(expected)} alerts expected; {report}")
    assert not [a for a in missing + extra if a["rule_id"] in IDENTITY_RULES], report
    for worker in (one, two):
        log = worker.log.read_text(errors="replace")
        assert "Traceback" not in log and "Crashed" not in log, worker.log


def test_state_comes_back_from_the_changelogs_alone(
    own_broker: tuple[int, Path], tmp_path: Path
) -> None:
    """A worker killed and started on an empty data directory (a new machine, say)."""
    port, _ = own_broker
    run = WorkerRun(f"127.0.0.1:{port}", tmp_path)
    run.create_topics()
    world = Simulator(seed=23, days=30).build(ordinary_people=1500, rounds=2)
    events, watchlist = write_world(world, tmp_path)
    expected = replay_alerts(run, events, watchlist)
    first, second = parts(events, 2)
    try:
        run.duanka("watchlist", "load", str(watchlist))
        run.start()
        run.duanka("produce", "--quiet", str(first))
        run.read("alerts", until=lambda rs: distinct(rs) >= len(expected) // 3, settle=0)
        run.kill()
        shutil.rmtree(tmp_path / "data")  # RocksDB stores and all: only Kafka is left
        run.duanka("produce", "--quiet", str(second))
        run.start()
        records = run.read("alerts", until=lambda rs: distinct(rs) >= len(expected), timeout=180)
    finally:
        run.stop()
    missing, extra = differences(by_alert_id([r.value for r in records]), expected)
    assert not missing and not extra, f"missing: {named(missing)}, unexpected: {named(extra)}"

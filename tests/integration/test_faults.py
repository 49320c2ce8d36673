"""Faults: workers killed mid-stream, the broker stopped or killed, a worker of two lost.

These run on a broker of their own, which one test stops and kills; the
session's broker is left alone. Each kill of a worker is shown to land while
work was pending (envelopes with items past the stages' committed offsets),
each test waits until the workers have committed everything before judging,
and then every alert, in full but for `detected_at`, must equal replay's:
none missing, none extra, none different.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from workerkit import (
    WorkerRun,
    by_alert_id,
    read_topic,
    replay_alerts,
    unscreened,
    wait_screened,
    write_world,
)

from producers.simulator import Simulator
from stream import broker

# commits every 3 s: a kill soon after new input lands before the stages commit it
SLOW_COMMITS = {"commit_ms": 3000}


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


def assert_equal_to_replay(run: WorkerRun, expected: dict[str, dict[str, Any]]) -> None:
    stream = by_alert_id([r.value for r in read_topic(run.bootstrap, run.topics["alerts"])])
    missing = [expected[a] for a in sorted(set(expected) - set(stream))]
    extra = [stream[a] for a in sorted(set(stream) - set(expected))]
    assert not missing and not extra, f"missing: {named(missing)}, unexpected: {named(extra)}"
    different = [a for a in expected if stream[a] != expected[a]]
    assert not different, f"differ from replay's: {[(stream[a], expected[a]) for a in different]}"


def named(alerts: list[dict[str, Any]]) -> list[str]:
    return [f"{a['rule_id']} {a['subject']['kind']} {a['subject']['key']}" for a in alerts]


def kill_mid_work(run: WorkerRun) -> None:
    """SIGKILL the worker, and show that it left work it had not committed.

    Counted after the kill: a count taken before could be undone by a commit
    in between.
    """
    run.kill()
    assert unscreened(run) > 0, "the kill came after everything was committed"


def test_kills_and_broker_restarts_lose_no_alert(
    own_broker: tuple[int, Path], tmp_path: Path
) -> None:
    port, data_dir = own_broker
    run = WorkerRun(f"127.0.0.1:{port}", tmp_path, worker=SLOW_COMMITS)
    run.create_topics()
    world = Simulator(seed=21, days=30).build(ordinary_people=1500, rounds=2)
    events, watchlist, holdings = write_world(world, tmp_path)
    expected = replay_alerts(run, events, watchlist, holdings)
    first, second, third, fourth, fifth = parts(events, 5)
    try:
        run.load_lists(watchlist, holdings)
        run.start()
        run.duanka("produce", "--quiet", str(first))
        run.read("alerts", until=lambda rs: len(rs) >= 3, settle=0)
        kill_mid_work(run)  # 1: mid-stream

        run.duanka("produce", "--quiet", str(second))  # while no worker runs
        before = distinct(read_topic(run.bootstrap, run.topics["alerts"]))
        run.start()
        run.read("alerts", until=lambda rs: distinct(rs) > before, settle=0)
        kill_mid_work(run)  # 2: while it catches up

        run.start()
        run.duanka("produce", "--quiet", str(third))
        run.read("alerts", until=lambda rs: distinct(rs) >= len(expected) // 2, settle=0)
        broker.stop(data_dir)  # the broker goes away cleanly under a running worker ...
        time.sleep(5)
        broker.start(port=port, data_dir=data_dir, timeout=120, die_with_parent=True)
        run.duanka("produce", "--quiet", str(fourth))  # ... and comes back
        broker.kill(data_dir)  # then crashes (SIGKILL) ...
        time.sleep(5)
        broker.start(port=port, data_dir=data_dir, timeout=120, die_with_parent=True)
        run.duanka("produce", "--quiet", str(fifth))  # ... and comes back again
        run.read("alerts", until=lambda rs: distinct(rs) >= len(expected) * 3 // 4, settle=0)
        kill_mid_work(run)  # 3: after the broker's restarts

        run.start()
        wait_screened(run, [run])
    finally:
        run.stop()
    assert_equal_to_replay(run, expected)
    assert run.starts == 4


def test_a_worker_of_two_is_killed_and_the_other_takes_over(
    own_broker: tuple[int, Path], tmp_path: Path
) -> None:
    """Its partitions move to the survivor, which restores their state from the changelogs.

    Outlet and agent rules count events of many people from partitions both
    workers read; the stages merge them by the readers' marks, so every
    alert is replay's, before and after the takeover.
    """
    port, _ = own_broker
    bootstrap = f"127.0.0.1:{port}"
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    one = WorkerRun(bootstrap, tmp_path / "one", worker=SLOW_COMMITS)
    # the same group, topics and tables
    two = WorkerRun(bootstrap, tmp_path / "two", run=one.run, worker=SLOW_COMMITS)
    one.create_topics()
    world = Simulator(seed=22, days=30).build(ordinary_people=1500, rounds=2)
    events, watchlist, holdings = write_world(world, tmp_path)
    expected = replay_alerts(one, events, watchlist, holdings)
    first, second = parts(events, 2)
    try:
        one.load_lists(watchlist, holdings)
        one.start()
        two.start()
        one.duanka("produce", "--quiet", str(first))
        one.read("alerts", until=lambda rs: distinct(rs) >= len(expected) // 4, settle=0)
        kill_mid_work(two)
        one.duanka("produce", "--quiet", str(second))
        wait_screened(one, [one])
    finally:
        one.stop()
        two.stop()
    assert_equal_to_replay(one, expected)
    log = one.log.read_text(errors="replace")
    assert "Traceback" not in log and "Crashed" not in log, one.log


def test_state_comes_back_from_the_changelogs_alone(
    own_broker: tuple[int, Path], tmp_path: Path
) -> None:
    """A worker killed and started on an empty data directory (a new machine, say)."""
    port, _ = own_broker
    run = WorkerRun(f"127.0.0.1:{port}", tmp_path, worker=SLOW_COMMITS)
    run.create_topics()
    world = Simulator(seed=23, days=30).build(ordinary_people=1500, rounds=2)
    events, watchlist, holdings = write_world(world, tmp_path)
    expected = replay_alerts(run, events, watchlist, holdings)
    first, second = parts(events, 2)
    try:
        run.load_lists(watchlist, holdings)
        run.start()
        run.duanka("produce", "--quiet", str(first))
        run.read("alerts", until=lambda rs: distinct(rs) >= len(expected) // 3, settle=0)
        kill_mid_work(run)
        shutil.rmtree(tmp_path / "data")  # RocksDB stores and all: only Kafka is left
        run.duanka("produce", "--quiet", str(second))
        run.start()
        wait_screened(run, [run])
    finally:
        run.stop()
    assert_equal_to_replay(run, expected)

"""Starts and stops: another cluster's state, SIGTERM with Kafka gone, outages, missing topics.

The tests that stop or kill a broker run on brokers of their own; the
session's broker is left alone.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from workerkit import (
    TOPIC_NAMES,
    WorkerRun,
    by_alert_id,
    read_topic,
    replay_alerts,
    wait_screened,
    write_world,
)

from producers.simulator import Simulator
from stream import broker

STOP_WITHIN_S = 15.0


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A broker for one test: (port, data directory)."""
    data_dir = tmp_path / "kafka"
    port = broker.free_port()
    broker.start(port=port, data_dir=data_dir, timeout=120, die_with_parent=True)
    try:
        yield port, data_dir
    finally:
        broker.stop(data_dir)


def screen(
    run: WorkerRun, events: Path, watchlist: Path, holdings: Path
) -> dict[str, dict[str, object]]:
    """Load, produce, wait until screened: the alerts, by id."""
    run.load_lists(watchlist, holdings)
    run.duanka("produce", "--quiet", str(events))
    wait_screened(run, [run])
    return by_alert_id([r.value for r in read_topic(run.bootstrap, run.topics["alerts"])])


def test_state_built_on_another_cluster_is_discarded_and_rebuilt(tmp_path: Path) -> None:
    """Same data directory, same topic names, a new cluster: the worker must not trust its state."""
    world = Simulator(seed=31, days=30).build(ordinary_people=800)
    events, watchlist, holdings = write_world(world, tmp_path)
    runs: list[WorkerRun] = []
    same = uuid.uuid4().hex[:8]  # the same topic names, app id and data directory on both
    for name in ("old", "new"):
        data_dir, port = tmp_path / f"kafka-{name}", broker.free_port()
        broker.start(port=port, data_dir=data_dir, timeout=120, die_with_parent=True)
        try:
            run = WorkerRun(f"127.0.0.1:{port}", tmp_path, run=same)
            run.create_topics()
            expected = replay_alerts(run, events, watchlist, holdings)
            run.start()
            try:
                alerts = screen(run, events, watchlist, holdings)
            finally:
                run.stop()
            assert alerts == expected, f"{name} cluster: {len(alerts)} of {len(expected)} alerts"
            runs.append(run)
        finally:
            broker.stop(data_dir)
    log = runs[-1].log.read_text(errors="replace")
    assert re.search(r"discarding the local state in .*: it was built on Kafka cluster", log), log


def test_a_worker_survives_an_outage_says_so_once_and_stops_on_sigterm_without_kafka(
    own_broker: tuple[int, Path], tmp_path: Path
) -> None:
    port, data_dir = own_broker
    run = WorkerRun(f"127.0.0.1:{port}", tmp_path)
    run.create_topics()
    world = Simulator(seed=32, days=30).build(ordinary_people=600)
    events, watchlist, holdings = write_world(world, tmp_path)
    expected = replay_alerts(run, events, watchlist, holdings)
    run.start()
    try:
        assert screen(run, events, watchlist, holdings) == expected
        before = run.log.stat().st_size
        broker.stop(data_dir)
        time.sleep(10)
        broker.start(port=port, data_dir=data_dir, timeout=120, die_with_parent=True)
        deadline = time.monotonic() + 60
        while "Kafka answers again" not in run.log.read_text(errors="replace"):
            run.check_alive()
            assert time.monotonic() < deadline, "the worker never said Kafka answers again"
            time.sleep(1)
        during = run.log.read_bytes()[before:].decode(errors="replace").splitlines()
        assert sum("Kafka is unreachable" in line for line in during) == 1
        assert len(during) < 40, "\n".join(during)  # not one line per failed attempt

        broker.kill(data_dir)  # now Kafka is gone for good, and the worker is asked to stop
        assert run.process is not None
        asked = time.monotonic()
        run.process.send_signal(signal.SIGTERM)
        code = run.process.wait(timeout=60)
        took = time.monotonic() - asked
    finally:
        run.stop()
    assert took < STOP_WITHIN_S, f"stopping took {took:.1f} s"
    tail = run.log.read_text(errors="replace")[-3000:]
    if code != 0:  # past the deadline it says what it left undone
        assert "exiting now and leaving to the next start:" in tail, tail


@pytest.mark.parametrize("command", [["produce", "--quiet"], ["watchlist", "load"]])
def test_writing_to_a_missing_topic_says_which_and_what_to_do(
    kafka_bootstrap: str, tmp_path: Path, command: list[str]
) -> None:
    run = WorkerRun(kafka_bootstrap, tmp_path)  # its topics are never made
    world = Simulator(seed=33, days=30).build(ordinary_people=50)
    events, watchlist, _ = write_world(world, tmp_path)
    path = events if command[0] == "produce" else watchlist
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "stream.cli", *command, str(path)],
        env=run.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    took = time.monotonic() - started
    assert result.returncode == 1
    assert took < 15, f"took {took:.0f} s"
    topic = run.topics["sim_events" if command[0] == "produce" else "watchlist"]
    assert topic in result.stderr and "not exist" in result.stderr, result.stderr
    assert "run `duanka topics create`" in result.stderr
    assert "Traceback" not in result.stderr, result.stderr


def test_sigterm_stops_the_demo_its_worker_and_its_broker(tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    port = broker.free_port()
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "kafka": {"bootstrap": f"127.0.0.1:{port}"},
                "topics": {name: f"{name}-{run}" for name in TOPIC_NAMES},
                "worker": {"app_id": f"demo-{run}", "web_port": broker.free_port()},
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("DUANKA_")}
    demo = subprocess.Popen(
        [
            *(sys.executable, "-m", "stream.cli", "--config", str(config), "demo", "--forever"),
            *("--dir", str(tmp_path), "--rate", "2000", "--events", "500"),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        assert demo.stdout is not None
        for line in demo.stdout:
            lines.append(line)
            if "following new alerts" in line:
                break
        info = broker.status(tmp_path)
        assert info is not None, "".join(lines)
        started = re.search(r"started the worker \(pid (\d+)", "".join(lines))
        assert started is not None, "".join(lines)
        worker_pid = int(started[1])
        demo.send_signal(signal.SIGTERM)
        rest, _ = demo.communicate(timeout=90)
        lines.append(rest)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
        broker.stop(tmp_path)
    out = "".join(lines)
    assert "stopped the worker" in out and "stopped the local Kafka broker" in out, out
    assert broker.status(tmp_path) is None
    for pid in (info.pid, worker_pid):
        assert not _alive(pid), f"process {pid} still runs"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(")")[-1].split()[0] != "Z"

"""Tests of the local broker manager (stream/broker.py).

Each test runs brokers of its own, in its own temporary directory and on its
own free port, apart from the session broker of the client tests.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient

from stream import broker
from stream.broker import BrokerError

LOOPBACK = "127.0.0.1"


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    """A data directory whose broker, if any is left, is stopped after the test."""
    path = tmp_path / "duanka"
    try:
        yield path
    finally:
        broker.stop(path, timeout=10.0)


def _pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _pid_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def _listening(pid: int) -> set[tuple[str, int]]:
    """The TCP (v4 and v6) addresses process ``pid`` listens on, from /proc."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd) if fd.is_symlink() else ""
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:  # 0A: LISTEN
                host_hex, port_hex = local.split(":")
                found.add((_proc_net_host(host_hex), int(port_hex, 16)))
    return found


def _proc_net_host(host_hex: str) -> str:
    if len(host_hex) == 8:  # IPv4, little-endian
        return socket.inet_ntop(socket.AF_INET, bytes.fromhex(host_hex)[::-1])
    words = [bytes.fromhex(host_hex[i : i + 8])[::-1] for i in range(0, 32, 8)]
    return socket.inet_ntop(socket.AF_INET6, b"".join(words))


def test_start_status_stop(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    port = broker.free_port()
    assert broker.status(data_dir) is None
    assert broker.command("status", port, data_dir) == 1
    assert capsys.readouterr().out.startswith("no broker running for ")

    assert broker.command("start", port, data_dir) == 0
    info = broker.status(data_dir)
    assert info is not None
    assert (info.port, info.version, info.bootstrap) == (
        port,
        broker.kafka_version(),
        f"{LOOPBACK}:{port}",
    )
    assert info.data_dir == data_dir.resolve()
    assert info.log_path == data_dir.resolve() / "broker" / "broker.log"
    assert capsys.readouterr().out == (
        f"Kafka {info.version} broker running at {LOOPBACK}:{port} (pid {info.pid}); "
        f"log: {info.log_path}\n"
    )
    state = json.loads((data_dir / "broker" / "broker.json").read_text())
    assert (state["port"], state["pid"], state["version"]) == (port, info.pid, info.version)
    assert (data_dir / "broker" / "broker.pid").read_text().strip() == str(info.pid)
    assert "Kafka Server started" in info.log_path.read_text()

    # Everything the broker listens on is loopback: the client and controller ports.
    assert _listening(info.pid) == {(LOOPBACK, port), (LOOPBACK, state["controller_port"])}

    # A second start finds the running broker and starts nothing.
    assert broker.start(port=port, data_dir=data_dir) == info
    assert capsys.readouterr().err == (
        f"Kafka broker already running at {LOOPBACK}:{port} (pid {info.pid}) for {info.data_dir}\n"
    )
    assert broker.command("start", port, data_dir) == 0
    assert capsys.readouterr().out == (
        f"Kafka {info.version} broker already running at {LOOPBACK}:{port} (pid {info.pid}); "
        f"log: {info.log_path}\n"
    )
    assert broker.command("status", port, data_dir) == 0
    assert f"(pid {info.pid})" in capsys.readouterr().out

    assert broker.stop(data_dir) is True
    assert not _pid_alive(info.pid)
    # A clean stop leaves the class-data archive later starts use, no partial dump.
    assert Path(state["cds_archive"]).is_file()
    assert state["cds_dump"] is None or not Path(state["cds_dump"]).exists()
    assert not (data_dir / "broker" / "broker.pid").exists()
    assert broker.status(data_dir) is None
    assert broker.stop(data_dir) is False
    assert broker.command("stop", port, data_dir) == 0
    assert capsys.readouterr().out.startswith("no broker running for ")


def test_restart_keeps_data(data_dir: Path) -> None:
    port = broker.free_port()
    first = broker.start(port=port, data_dir=data_dir)
    topic = f"keep-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=first.bootstrap)
    try:
        admin.create_topics(
            {topic: {"num_partitions": 3, "replication_factor": 1}}, wait_for_metadata=True
        )
    finally:
        admin.close()
    producer = KafkaProducer(bootstrap_servers=first.bootstrap, acks="all")
    try:
        for p in range(3):
            producer.send(topic, key=f"k{p}".encode(), value=f"v{p}".encode(), partition=p)
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=10)
    meta = (data_dir / "broker" / "data" / "meta.properties").read_text()
    assert broker.stop(data_dir) is True

    second = broker.start(port=port, data_dir=data_dir)
    assert second.pid != first.pid
    # Not formatted again: same cluster id, same directory id.
    assert (data_dir / "broker" / "data" / "meta.properties").read_text() == meta
    admin = KafkaAdminClient(bootstrap_servers=second.bootstrap)
    try:
        assert topic in admin.list_topics()
    finally:
        admin.close()
    consumer = KafkaConsumer(bootstrap_servers=second.bootstrap, enable_auto_commit=False)
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(3)])
        consumer.seek_to_beginning()
        records: list[tuple[int, bytes, bytes]] = []
        deadline = time.monotonic() + 30
        while len(records) < 3 and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records += [(r.partition, r.key, r.value) for r in batch]
    finally:
        consumer.close()
    assert sorted(records) == [(p, f"k{p}".encode(), f"v{p}".encode()) for p in range(3)]


def test_start_on_a_taken_port_fails_fast(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind((LOOPBACK, 0))
        holder.listen()
        port = holder.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(BrokerError) as failure:
            broker.start(port=port, data_dir=data_dir)
        assert time.monotonic() - started < 5  # no JVM was started
        message = str(failure.value)
        assert f"{LOOPBACK}:{port}" in message
        assert "already in use" in message
        assert broker.status(data_dir) is None

        assert broker.command("start", port, data_dir) == 1
        captured = capsys.readouterr()
        assert captured.out == ""
        assert captured.err.startswith(f"error: cannot start Kafka on {LOOPBACK}:{port}")


def test_failed_start_reports_the_reason_from_the_log(data_dir: Path) -> None:
    # A log directory that belongs to another node: Kafka refuses to start.
    log_dir = data_dir / "broker" / "data"
    log_dir.mkdir(parents=True)
    (log_dir / "meta.properties").write_text(
        "version=1\ncluster.id=AAAAAAAAAAAAAAAAAAAAAA\nnode.id=7\n"
    )
    with pytest.raises(BrokerError) as failure:
        broker.start(port=broker.free_port(), data_dir=data_dir, timeout=60)
    message = str(failure.value)
    assert "the Kafka broker exited with exit code 1 before answering" in message
    assert "Stored node id 7 doesn't match previous node id 1" in message
    assert str(data_dir.resolve() / "broker" / "broker.log") in message
    assert broker.status(data_dir) is None
    assert not (data_dir / "broker" / "broker.pid").exists()


def test_broker_dies_with_a_killed_parent(data_dir: Path) -> None:
    """With die_with_parent (the session fixture uses it), a killed pytest leaves no JVM."""
    script = (
        "import sys; from pathlib import Path; from stream import broker; "
        f"info = broker.start(port=broker.free_port(), data_dir=Path({str(data_dir)!r}), "
        "die_with_parent=True); print(info.pid, flush=True); sys.stdin.read()"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout is not None
        pid = int(parent.stdout.readline())
        assert _pid_alive(pid)
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        if parent.stdin is not None:
            parent.stdin.close()
        if parent.stdout is not None:
            parent.stdout.close()
    assert _wait_gone(pid, 30), f"broker pid {pid} outlived its killed parent"
    assert broker.status(data_dir) is None


def test_cache_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DUANKA_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert broker.cache_dir() == tmp_path / "home" / ".cache" / "duanka"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert broker.cache_dir() == tmp_path / "xdg" / "duanka"
    monkeypatch.setenv("DUANKA_CACHE", str(tmp_path / "explicit"))
    assert broker.cache_dir() == tmp_path / "explicit"


def test_ensure_jars_reuses_the_cache(capsys: pytest.CaptureFixture[str]) -> None:
    libs = broker.ensure_jars()
    capsys.readouterr()
    assert broker.ensure_jars() == libs  # second call: nothing fetched, nothing printed
    assert capsys.readouterr().err == ""
    assert (libs / f"kafka_2.13-{broker.kafka_version()}.jar").is_file()
    assert not [p.name for p in libs.parent.iterdir() if p.name.startswith("libs.partial-")]


def test_ensure_jars_without_maven(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DUANKA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(BrokerError, match=r"Maven \(mvn\) is not on PATH"):
        broker.ensure_jars("4.4.0")
    assert not (tmp_path / "cache" / "kafka-4.4.0" / "libs").exists()
    with pytest.raises(BrokerError, match="not a Kafka version"):
        broker.ensure_jars("../4.4.0")

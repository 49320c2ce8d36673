"""Produce/consume round trips through every Kafka client the project uses.

Each test writes known keys and values to a 4-partition topic of the session
broker and asserts that exactly those come back, with the partition every
key landed in: aiokafka, kafka-python (consumer group with commits), kcat
(librdkafka) and a faust-streaming worker that forwards one topic to another.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.partitioner.default import murmur2

from stream import broker

PARTITIONS = 4
WAIT_S = 60.0

Record = tuple[int, bytes, bytes]  # partition, key, value
TopicFactory = Callable[..., str]  # the topic_factory fixture


def _pairs(count: int, tag: str) -> list[tuple[bytes, bytes]]:
    return [(f"{tag}-key-{i:03d}".encode(), f"{tag}-value-{i:03d}".encode()) for i in range(count)]


def _java_partition(key: bytes, partitions: int = PARTITIONS) -> int:
    """The partition the Java client's default partitioner picks for ``key``."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def _keyed(pairs: Iterable[tuple[bytes, bytes]]) -> list[Record]:
    return sorted((_java_partition(key), key, value) for key, value in pairs)


def _read_all(
    bootstrap: str, topic: str, expected: int, partitions: int = PARTITIONS
) -> list[Record]:
    """All committed records of ``topic`` from the beginning, read with kafka-python (no group)."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level="read_committed"
    )
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
        consumer.seek_to_beginning()
        return _poll_kafka_python(consumer, expected)
    finally:
        consumer.close()


def _poll_kafka_python(consumer: KafkaConsumer, expected: int) -> list[Record]:
    records: list[Record] = []
    deadline = time.monotonic() + WAIT_S
    while len(records) < expected and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=500).values():
            records += [(r.partition, r.key, r.value) for r in batch]
    return sorted(records)


# ---------------------------------------------------------------------- aiokafka


async def _aiokafka_round_trip(
    bootstrap: str, topic: str, pairs: list[tuple[bytes, bytes]]
) -> list[Record]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        sent = [await producer.send(topic, key=k, value=v) for k, v in pairs]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"it-aiokafka-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        records: list[Record] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_S
        while len(records) < len(pairs) and loop.time() < deadline:
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                records += [(r.partition, r.key, r.value) for r in batch]
        await consumer.commit()
    finally:
        await consumer.stop()
    return sorted(records)


def test_aiokafka_round_trip(kafka_bootstrap: str, topic_factory: TopicFactory) -> None:
    topic = topic_factory(PARTITIONS)
    pairs = _pairs(40, "aio")
    records = asyncio.run(_aiokafka_round_trip(kafka_bootstrap, topic, pairs))
    assert records == _keyed(pairs)
    assert {partition for partition, _, _ in records} == set(range(PARTITIONS))


# ------------------------------------------------------------------ kafka-python


def _produce_kafka_python(
    bootstrap: str, topic: str, pairs: list[tuple[bytes, bytes]], **config: object
) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", **config)
    try:
        futures = [producer.send(topic, key=k, value=v) for k, v in pairs]
        producer.flush(timeout=30)
        for future in futures:
            future.get(timeout=30)
    finally:
        producer.close(timeout=10)


def _group_consumer(bootstrap: str, topic: str, group: str) -> KafkaConsumer:
    return KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )


def test_kafka_python_group_commits(kafka_bootstrap: str, topic_factory: TopicFactory) -> None:
    topic = topic_factory(PARTITIONS)
    group = f"it-kafka-python-{uuid.uuid4().hex[:8]}"
    first, second = _pairs(40, "kp1"), _pairs(12, "kp2")
    _produce_kafka_python(kafka_bootstrap, topic, first)

    consumer = _group_consumer(kafka_bootstrap, topic, group)
    try:
        assert _poll_kafka_python(consumer, len(first)) == _keyed(first)
        consumer.commit()
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        end = consumer.end_offsets(partitions)
        assert {tp: consumer.committed(tp) for tp in partitions} == end
        assert sum(end.values()) == len(first)
    finally:
        consumer.close()

    # The same group resumes after its commit: it gets the new records only.
    _produce_kafka_python(kafka_bootstrap, topic, second)
    consumer = _group_consumer(kafka_bootstrap, topic, group)
    try:
        assert _poll_kafka_python(consumer, len(second)) == _keyed(second)
        consumer.commit()
        assert sum(consumer.position(tp) for tp in consumer.assignment()) == len(first) + len(
            second
        )
    finally:
        consumer.close()


# -------------------------------------------------------------------------- kcat


@pytest.fixture(scope="module")
def kcat() -> str:
    path = shutil.which("kcat")
    if path is None:
        pytest.fail("kcat is not installed: run `make tools` (Debian package kcat)")
    return path


def _kcat(kcat: str, bootstrap: str, *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        [kcat, "-b", bootstrap, "-q", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        check=False,
    )
    assert done.returncode == 0, f"kcat {' '.join(args)} failed: {done.stderr}"
    return done.stdout


def _kcat_read(kcat: str, bootstrap: str, topic: str) -> list[Record]:
    out = _kcat(kcat, bootstrap, "-C", "-t", topic, "-e", "-o", "beginning", "-f", "%p\t%k\t%s\n")
    records = []
    for line in out.splitlines():
        partition, key, value = line.split("\t")
        records.append((int(partition), key.encode(), value.encode()))
    return sorted(records)


def test_kcat_round_trip(kafka_bootstrap: str, topic_factory: TopicFactory, kcat: str) -> None:
    topic = topic_factory(PARTITIONS)
    pairs = _pairs(40, "kcat")
    lines = "".join(f"{k.decode()}:{v.decode()}\n" for k, v in pairs)
    # murmur2_random: librdkafka's partitioner that matches the Java client's.
    _kcat(
        kcat,
        kafka_bootstrap,
        "-P",
        "-t",
        topic,
        "-K:",
        "-X",
        "partitioner=murmur2_random",
        stdin=lines,
    )
    assert _kcat_read(kcat, kafka_bootstrap, topic) == _keyed(pairs)
    assert _read_all(kafka_bootstrap, topic, len(pairs)) == _keyed(pairs)


def test_kcat_reads_kafka_python_gzip(
    kafka_bootstrap: str, topic_factory: TopicFactory, kcat: str
) -> None:
    topic = topic_factory(PARTITIONS)
    pairs = _pairs(40, "gz")
    _produce_kafka_python(kafka_bootstrap, topic, pairs, compression_type="gzip")
    assert _kcat_read(kcat, kafka_bootstrap, topic) == _keyed(pairs)


# ------------------------------------------------------------------------- faust

FAUST_APP = """\
import faust

app = faust.App(
    {app_id!r},
    broker="kafka://{bootstrap}",
    store="memory://",
    datadir={datadir!r},
    web_enabled=False,
    web_host="127.0.0.1",
    web_port={web_port},
    topic_replication_factor=1,
    topic_partitions={partitions},
    consumer_auto_offset_reset="earliest",
    processing_guarantee={guarantee!r},
    broker_commit_interval=0.5,
    autodiscover=False,
)
source = app.topic({source!r}, key_type=bytes, value_type=bytes,
                   key_serializer="raw", value_serializer="raw")
sink = app.topic({sink!r}, key_type=bytes, value_type=bytes,
                 key_serializer="raw", value_serializer="raw")

# A table (changelog topic created by faust) counts the events of each key.
seen = app.Table("seen", default=int, partitions={partitions})


@app.agent(source)
async def forward(stream):
    async for event in stream.events():
        seen[event.key.decode()] += 1
        count = seen[event.key.decode()]
        await sink.send(key=event.key, value=b"seen%d:" % count + event.value)


if __name__ == "__main__":
    app.main()
"""


def _write_faust_app(
    tmp_path: Path, bootstrap: str, source: str, sink: str, guarantee: str
) -> tuple[Path, str]:
    """Write the faust app module; return its path and app id (= consumer group)."""
    app_id = f"it-faust-{uuid.uuid4().hex[:8]}"
    path = tmp_path / "forward_app.py"
    path.write_text(
        FAUST_APP.format(
            app_id=app_id,
            bootstrap=bootstrap,
            datadir=str(tmp_path / "faust-data"),
            web_port=broker.free_port(),
            partitions=PARTITIONS,
            source=source,
            sink=sink,
            guarantee=guarantee,
        )
    )
    return path, app_id


def _wait_committed(
    bootstrap: str, group: str, topic: str, want: dict[int, int]
) -> dict[int, int | None]:
    """Poll the committed offsets of ``group`` on ``topic`` until they are ``want``."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        deadline = time.monotonic() + WAIT_S
        while True:
            got = {p: consumer.committed(TopicPartition(topic, p)) for p in range(PARTITIONS)}
            if got == want or time.monotonic() >= deadline:
                return got
            time.sleep(0.2)
    finally:
        consumer.close()


def _stop_worker(worker: subprocess.Popen[bytes]) -> None:
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(timeout=10)


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_faust_agent_forwards(
    kafka_bootstrap: str, topic_factory: TopicFactory, tmp_path: Path, guarantee: str
) -> None:
    source, sink = topic_factory(PARTITIONS, "faust-in"), topic_factory(PARTITIONS, "faust-out")
    pairs = _pairs(40, "faust")
    _produce_kafka_python(kafka_bootstrap, source, pairs)
    app, group = _write_faust_app(tmp_path, kafka_bootstrap, source, sink, guarantee)
    log_path = tmp_path / "faust-worker.log"
    with log_path.open("wb") as log:
        worker = subprocess.Popen(
            [sys.executable, str(app), "worker", "--without-web", "--loglevel", "info"],
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    per_partition = dict(Counter(partition for partition, _, _ in _keyed(pairs)))
    try:
        records = _read_all(kafka_bootstrap, sink, len(pairs))
        # Stop only once the worker has committed its progress on the source topic.
        committed = _wait_committed(kafka_bootstrap, group, source, per_partition)
    finally:
        _stop_worker(worker)
    log_tail = textwrap.indent(
        "\n".join(log_path.read_text(errors="replace").splitlines()[-40:]), "  "
    )
    expected = _keyed((key, b"seen1:" + value) for key, value in pairs)
    assert records == expected, f"faust worker log (tail):\n{log_tail}"
    assert committed == per_partition, log_tail
    assert worker.returncode == 0, f"faust worker exit code {worker.returncode}:\n{log_tail}"

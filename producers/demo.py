"""`duanka demo`: the whole path on one machine, shown to the person running it.

Starts a local broker unless one already answers at the configured address,
makes the topics, starts a worker, sends the sample day of openings as a
carrier and a bank would, and prints each alert and dead letter as it comes
back from Kafka. It checks the alerts against what the rule engine expects
for the sample, then stops what it started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import orjson
from kafka import KafkaConsumer, TopicPartition

from producers.alerts import format_alert
from producers.produce import produce_file
from producers.sample import write_sample
from rules.alert import decode_alert
from rules.config import Settings
from rules.engine import Engine, Screening
from rules.errors import DuankaError, InvalidEvent
from rules.event import parse_event, pseudonymise
from rules.pseudonym import Pseudonymizer, pseudonym_key

WAIT_FOR_RESULTS_S = 120.0
LOCAL_HOSTS = ("127.0.0.1", "localhost")


def say(text: str = "") -> None:
    print(text, flush=True)


def expected_results(
    path: Path, settings: Settings, environ: Mapping[str, str]
) -> tuple[set[str], int]:
    """The alert ids the engine gives for the sample file, and how many lines it rejects."""
    pseudonymizer = Pseudonymizer(pseudonym_key(settings.pseudonym_key or None, environ))
    screening = Screening(Engine(settings.rules))
    alert_ids: set[str] = set()
    rejected = 0
    for line in path.read_bytes().splitlines():
        try:
            event = parse_event(line)
        except InvalidEvent:
            rejected += 1
            continue
        for alert in screening.screen(pseudonymise(event, pseudonymizer)):
            alert_ids.add(alert.alert_id)
    return alert_ids, rejected


def local_port(bootstrap: str) -> int | None:
    """The port of a single loopback bootstrap address, else None."""
    host, _, port = bootstrap.partition(":")
    if "," in bootstrap or host not in LOCAL_HOSTS or not port.isdigit():
        return None
    return int(port)


@contextmanager
def local_broker(settings: Settings, workdir: Path, environ: Mapping[str, str]) -> Iterator[None]:
    """Start the local broker for the demo if none is configured; stop it after."""
    from stream.broker import start, status, stop

    port = None if environ.get("DUANKA_BOOTSTRAP") else local_port(settings.bootstrap)
    if port is None or status(workdir) is not None:
        say(f"using the Kafka broker at {settings.bootstrap}")
        yield
        return
    info = start(port, workdir)
    say(f"started Kafka {info.version} at {info.bootstrap} (log: {info.log_path})")
    try:
        yield
    finally:
        stop(workdir)
        say("stopped the local Kafka broker")


@contextmanager
def worker_process(
    settings: Settings, workdir: Path, environ: Mapping[str, str]
) -> Iterator[subprocess.Popen[bytes]]:
    log_path = workdir / "demo" / "worker.log"
    env = dict(environ, DUANKA_BOOTSTRAP=settings.bootstrap)
    env.setdefault("DUANKA_DATA_DIR", str(workdir / "demo" / "worker"))
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "stream.cli", "worker"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    say(f"started the worker (pid {process.pid}, log: {log_path})")
    try:
        yield process
    finally:
        _stop(process)
        say("stopped the worker")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def output_consumer(settings: Settings) -> KafkaConsumer:
    """A consumer on the alert and dead-letter topics, placed at their current ends."""
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap.split(","), group_id=None)
    partitions = [
        TopicPartition(topic, partition)
        for topic in (settings.topics.alerts, settings.topics.deadletter)
        for partition in sorted(consumer.partitions_for_topic(topic) or ())
    ]
    consumer.assign(partitions)
    consumer.seek_to_end(*partitions)
    for partition in partitions:
        consumer.position(partition)
    return consumer


def run_demo(settings: Settings, workdir: Path, forever: bool, environ: Mapping[str, str]) -> int:
    from stream.topics import ensure_topics

    (workdir / "demo").mkdir(parents=True, exist_ok=True)
    with local_broker(settings, workdir, environ):
        ensure_topics(settings)
        sample = workdir / "demo" / "events.jsonl"
        lines = write_sample(sample)
        expected, rejected = expected_results(sample, settings, environ)
        say(
            f"wrote {lines} sample records to {sample}: {len(expected)} should alert, "
            f"{rejected} are malformed"
        )
        if Pseudonymizer(pseudonym_key(settings.pseudonym_key or None, environ)).is_development_key:
            say(
                "pseudonyms use the built-in development key: set DUANKA_PSEUDONYM_KEY for real use"
            )
        with worker_process(settings, workdir, environ) as worker:
            consumer = output_consumer(settings)
            try:
                say(produce_file(sample, settings, progress=False).describe(str(sample)))
                say("\nback from Kafka as it arrives (police.alerts and screening.deadletter):")
                seen, dead = watch(consumer, settings, worker, expected, rejected, forever)
            finally:
                consumer.close()
    return report(expected, seen, rejected, dead)


def watch(
    consumer: KafkaConsumer,
    settings: Settings,
    worker: subprocess.Popen[bytes],
    expected: set[str],
    rejected: int,
    forever: bool,
) -> tuple[set[str], int]:
    """Print alerts and dead letters until all expected ones came (or forever)."""
    seen: set[str] = set()
    dead = 0
    deadline = time.monotonic() + WAIT_FOR_RESULTS_S
    while forever or (time.monotonic() < deadline and (expected - seen or dead < rejected)):
        if worker.poll() is not None:
            raise DuankaError(f"the worker exited with code {worker.returncode}; see its log")
        for records in consumer.poll(timeout_ms=500).values():
            for record in records:
                if record.topic == settings.topics.alerts:
                    alert = decode_alert(record.value)
                    if alert.alert_id not in seen:
                        seen.add(alert.alert_id)
                        say("  " + format_alert(alert))
                else:
                    dead += 1
                    letter = orjson.loads(record.value)
                    say(
                        f"  dead letter from {letter['topic']} offset {letter['offset']}: "
                        f"{letter['error']}"
                    )
    return seen, dead


def report(expected: set[str], seen: set[str], rejected: int, dead: int) -> int:
    missing, unexpected = expected - seen, seen - expected
    say(
        f"\n{len(seen)} alerts received, {len(expected)} expected; "
        f"{dead} dead letters, {rejected} expected"
    )
    if missing or unexpected or dead != rejected:
        say(f"MISMATCH: {len(missing)} expected alerts missing, {len(unexpected)} unexpected")
        return 1
    say("every expected alert and dead letter arrived")
    return 0

"""`duanka demo`: a simulated province through the whole system, shown as it happens.

Starts a local broker unless one is configured, makes the topics, simulates a
month of a province's openings with labelled fraud cases, loads the
watchlist, starts a worker (whose web server also serves the police
console), sends the events through Kafka at a pace a person can follow, and
prints each alert and dead letter as it comes back from Kafka. At the end it
scores the alerts against the simulation's ground truth, checks them against
what the rule engine gives for the same files, and stops what it started.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from kafka import KafkaConsumer, TopicPartition

from producers.evaluate import details, evaluate, read_truth, table
from producers.produce import produce_file
from producers.sample import malformed_records
from producers.simulate import WorldFiles, describe, write_world
from producers.simulator import simulate
from rules.alert import Alert, decode_alert
from rules.config import Settings
from rules.engine import Engine
from rules.errors import DuankaError
from rules.pseudonym import Pseudonymizer, pseudonym_key
from rules.replay import replay
from stream.security import kafka_python_options

# what the demo shows by default: a month, about a minute of streaming
DEMO_EVENTS = 3_000
DEMO_RATE = 60.0
SETTLE_S = 120.0  # after the last event is sent, the longest wait for the last alerts
STATUS_EVERY_S = 10.0
LOCAL_HOSTS = ("127.0.0.1", "localhost")


def say(text: str = "") -> None:
    print(text, flush=True)


@dataclass(frozen=True, slots=True)
class DemoOptions:
    events: int = DEMO_EVENTS
    rate: float = DEMO_RATE
    seed: int = 2026
    days: int = 30
    forever: bool = False


@dataclass
class Expected:
    """What the rule engine gives for the demo's files: the alerts and the rejected lines."""

    alert_ids: set[str]
    rejected: int


def prepare(directory: Path, options: DemoOptions) -> tuple[WorldFiles, int]:
    """Simulate the province; add three malformed records among its events."""
    world = simulate(options.events, days=options.days, seed=options.seed)
    files = write_world(world, directory)
    say(f"simulated {describe(world, options.days)}")
    lines = files.events.read_bytes().splitlines()
    bad = malformed_records(world.events[0])
    for position, record in enumerate(bad, start=1):
        lines.insert(position * len(lines) // (len(bad) + 1), record)
    files.events.write_bytes(b"\n".join(lines) + b"\n")
    return files, len(lines)


def expected_results(files: WorldFiles, settings: Settings, environ: Mapping[str, str]) -> Expected:
    """The alert ids the engine gives for the files, replayed, and how many lines it rejects."""
    pseudonymizer = Pseudonymizer(pseudonym_key(settings.pseudonym_key or None, environ))
    out = io.BytesIO()
    summary = replay(
        files.events, Engine(settings.rules), pseudonymizer, out, io.BytesIO(), files.watchlist
    )
    alert_ids = {orjson.loads(line)["alert_id"] for line in out.getvalue().splitlines()}
    return Expected(alert_ids, summary.rejected)


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
    consumer = KafkaConsumer(
        bootstrap_servers=settings.bootstrap.split(","),
        group_id=None,
        **kafka_python_options(settings.security),
    )
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


class Sender:
    """Sends the events file at a steady rate in a thread of its own."""

    def __init__(self, files: WorldFiles, settings: Settings, rate: float) -> None:
        self.sent = 0
        self.error: BaseException | None = None
        self.summary = ""
        self._thread = threading.Thread(
            target=self._run, args=(files, settings, rate), name="demo-sender", daemon=True
        )

    def _run(self, files: WorldFiles, settings: Settings, rate: float) -> None:
        try:
            result = produce_file(
                files.events, settings, progress=False, rate=rate, on_sent=self._count
            )
            self.summary = result.describe(str(files.events))
        except BaseException as exc:  # reported by the thread that watches
            self.error = exc

    def _count(self, sent: int) -> None:
        self.sent = sent

    def start(self) -> None:
        self._thread.start()

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()


@dataclass
class Seen:
    alerts: dict[str, Alert] = field(default_factory=dict)
    dead: int = 0


def short(alert: Alert) -> str:
    """One line for the terminal: when, how bad, which rule, whom, why."""
    subject = alert.subject.id_masked or f"{alert.subject.kind} {alert.subject.key}"
    when = alert.event_time.strftime("%m-%d %H:%M")
    return (
        f"  {when}  {alert.severity.upper():<8} {alert.rule_id:<27} {subject:<20} "
        f"{alert.summary_en} | {alert.summary_zh}"
    )


def console_url(settings: Settings) -> str:
    return f"http://{settings.worker.web_host}:{settings.worker.web_port}/console/"


def run_demo(
    settings: Settings, workdir: Path, options: DemoOptions, environ: Mapping[str, str]
) -> int:
    from producers.watchlist import load_file
    from stream.topics import ensure_topics

    directory = workdir / "demo"
    directory.mkdir(parents=True, exist_ok=True)
    # SIGTERM stops the demo as Ctrl-C does: the worker and the broker it started go too
    signal.signal(signal.SIGTERM, _interrupt)
    with local_broker(settings, workdir, environ):
        ensure_topics(settings)
        files, lines = prepare(directory, options)
        expected = expected_results(files, settings, environ)
        say(
            f"wrote {lines:,} records to {files.events}: the rule engine expects "
            f"{len(expected.alert_ids)} alerts, and {expected.rejected} records are malformed"
        )
        if Pseudonymizer(pseudonym_key(settings.pseudonym_key or None, environ)).is_development_key:
            say(
                "pseudonyms use the built-in development key: set DUANKA_PSEUDONYM_KEY for real use"
            )
        load_file(files.watchlist, settings)
        with worker_process(settings, workdir, environ) as worker:
            say(f"police console: {console_url(settings)} (open it in a browser while this runs)")
            consumer = output_consumer(settings)
            try:
                sender = Sender(files, settings, options.rate)
                sender.start()
                say(
                    f"sending {lines:,} records at {options.rate:g} a second, as carriers "
                    "and banks would; alerts and dead letters appear as they come back from Kafka:"
                )
                seen = watch(consumer, settings, worker, sender, expected, lines)
                code = summarise(files, settings, sender, expected, seen)
                if options.forever:
                    say(f"\nstill running: the police console is at {console_url(settings)}")
                    say("following new alerts; Ctrl-C stops the worker and the broker")
                    follow(consumer, settings, worker, seen)
            finally:
                consumer.close()
    return code


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def watch(
    consumer: KafkaConsumer,
    settings: Settings,
    worker: subprocess.Popen[bytes],
    sender: Sender,
    expected: Expected,
    lines: int,
) -> Seen:
    """Print alerts and dead letters until every expected one came, or time is up."""
    seen = Seen()
    started = time.monotonic()
    status_at = started + STATUS_EVERY_S
    deadline: float | None = None
    while True:
        poll(consumer, settings, worker, seen)
        if sender.error is not None:
            raise DuankaError(f"sending the events failed: {sender.error}")
        now = time.monotonic()
        if now >= status_at:
            status_at = now + STATUS_EVERY_S
            say(
                f"  ... {sender.sent:,} of {lines:,} records sent, {len(seen.alerts)} alerts so far"
            )
        if not sender.done:
            continue
        if deadline is None:
            deadline = now + SETTLE_S
            say(f"  ... all {lines:,} records sent in {now - started:.0f} s; waiting for the last")
        complete = expected.alert_ids <= set(seen.alerts) and seen.dead >= expected.rejected
        if complete or now >= deadline:
            return seen


def poll(
    consumer: KafkaConsumer, settings: Settings, worker: subprocess.Popen[bytes], seen: Seen
) -> None:
    if worker.poll() is not None:
        raise DuankaError(f"the worker exited with code {worker.returncode}; see its log")
    for records in consumer.poll(timeout_ms=500).values():
        for record in records:
            if record.topic == settings.topics.alerts:
                alert = decode_alert(record.value)
                if alert.alert_id not in seen.alerts:
                    seen.alerts[alert.alert_id] = alert
                    say(short(alert))
            else:
                seen.dead += 1
                letter = orjson.loads(record.value)
                say(
                    f"  dead letter: {letter['topic']} partition {letter['partition']} "
                    f"offset {letter['offset']}: {letter['error']}"
                )


def follow(
    consumer: KafkaConsumer, settings: Settings, worker: subprocess.Popen[bytes], seen: Seen
) -> None:
    while True:
        poll(consumer, settings, worker, seen)


def summarise(
    files: WorldFiles, settings: Settings, sender: Sender, expected: Expected, seen: Seen
) -> int:
    """Score the alerts against the ground truth and the rule engine; 0 if all is as expected."""
    say(f"\n{sender.summary}")
    evaluation = evaluate(
        read_truth(files.truth), seen.alerts.values(), list(settings.rules.__dataclass_fields__)
    )
    say("\nthe alerts against the simulation's ground truth:")
    say(table(evaluation))
    say(details(evaluation))
    missing = expected.alert_ids - set(seen.alerts)
    extra = set(seen.alerts) - expected.alert_ids
    say(
        f"\n{len(seen.alerts)} alerts received, {len(expected.alert_ids)} expected by the rule "
        f"engine; {seen.dead} dead letters, {expected.rejected} expected"
    )
    if missing or extra or seen.dead != expected.rejected:
        say(f"MISMATCH: {len(missing)} expected alerts missing, {len(extra)} unexpected")
        return 1
    say("every expected alert and dead letter arrived through Kafka")
    return 0

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
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from kafka import KafkaConsumer, TopicPartition

from producers.evaluate import details, evaluate, read_truth, table
from producers.produce import Line, produce_file
from producers.sample import malformed_records
from producers.simulate import WorldFiles, describe, write_world
from producers.simulator import simulate
from rules.alert import Alert, decode_alert
from rules.config import Settings
from rules.engine import Engine
from rules.errors import DuankaError
from rules.event import CHECK_SCHEMA
from rules.implicated import IMPLICATED_RULES
from rules.pseudonym import Pseudonymizer, pseudonym_key
from rules.replay import Implications, replay
from stream.security import kafka_python_options

# what the demo shows by default: a month, about a minute of streaming
DEMO_EVENTS = 3_000
DEMO_RATE = 60.0
SETTLE_S = 120.0  # after the last event is sent, the longest wait for the last alerts
STATUS_EVERY_S = 10.0
LOCAL_HOSTS = ("127.0.0.1", "localhost")
CHECK_TIMEOUT_S = 2.0  # a counter's deadline for the check's answer
READY_WAIT_S = 120.0  # how long the first check waits for the worker to answer
OPENINGS = ("sim.activate", "bank.open")


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


def expected_results(
    files: WorldFiles,
    settings: Settings,
    environ: Mapping[str, str],
    events: Path | None = None,
    implicated: bool = False,
) -> Expected:
    """The alert ids the engine gives for the files (or other `events`), and the lines rejected.

    With `implicated`, the simulator's implicated numbers are traced among them too.
    """
    pseudonymizer = Pseudonymizer(pseudonym_key(settings.pseudonym_key or None, environ))
    out = io.BytesIO()
    reports = Implications(files.implicated, pseudonymizer, io.BytesIO()) if implicated else None
    summary = replay(
        events or files.events,
        Engine(settings.rules, implicated=settings.implicated),
        pseudonymizer,
        out,
        io.BytesIO(),
        files.watchlist,
        holdings=files.holdings,
        implicated=reports,
    )
    alert_ids = {orjson.loads(line)["alert_id"] for line in out.getvalue().splitlines()}
    return Expected(alert_ids, summary.rejected)


class CounterChecks:
    """Openings at a counter are checked first (POST /v1/check); a refused one is not opened.

    Every line that is sent is also written to `sent`, with the check_id of
    its check, so that the rule engine can say what the stream should give.
    A check that is not answered in time goes to manual review, and the demo
    opens the card (the counter's staff would decide).
    """

    def __init__(self, settings: Settings, sent: Path) -> None:
        worker = settings.worker
        self.url = f"http://{worker.web_host}:{worker.web_port}/v1/check"
        self.sent_path = sent
        self.sent = sent.open("wb")
        self.decisions: Counter[str] = Counter()
        self.refused_by: Counter[str] = Counter()
        self.stale = 0
        self.unanswered = 0
        self.ready = False
        self.refused: set[str] = set()  # "source/event_id" of the openings not made

    def __call__(self, line: Line) -> bytes | None:
        value = line.value
        try:
            event = orjson.loads(value)
        except orjson.JSONDecodeError:
            event = None
        if (
            type(event) is dict
            and event.get("event_type") in OPENINGS
            and event.get("channel") == "counter"
            and type(event.get("event_id")) is str
        ):
            answer = self.ask(event)
            if answer is not None:
                self.decisions[answer["decision"]] += 1
                self.stale += bool(answer.get("stale"))
                if answer["decision"] == "refuse":
                    for reason in answer["reasons"]:
                        if reason["action"] == "block":
                            self.refused_by[reason["rule_id"]] += 1
                    self.refused.add(f"{event.get('source')}/{event['event_id']}")
                    return None
                value = orjson.dumps(event | {"check_id": answer["check_id"]})
        self.sent.write(value + b"\n")
        return value

    def ask(self, event: dict[str, Any]) -> dict[str, Any] | None:
        check = {k: v for k, v in event.items() if k != "event_id"}
        check |= {"schema": CHECK_SCHEMA, "check_id": f"chk-{event['event_id']}"}
        body = orjson.dumps(check)
        deadline = time.monotonic() + (CHECK_TIMEOUT_S if self.ready else READY_WAIT_S)
        while True:
            request = urllib.request.Request(
                self.url, data=body, headers={"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(request, timeout=CHECK_TIMEOUT_S) as response:
                    answer: dict[str, Any] = orjson.loads(response.read())
                    self.ready = True
                    return answer
            except urllib.error.HTTPError as error:
                if error.code != 503:  # a 400: the opening is not valid; the stream rejects it too
                    return None
            except OSError:
                pass  # not listening yet, or no answer in time
            if time.monotonic() >= deadline:
                self.unanswered += 1
                return None
            time.sleep(0.5)

    def close(self) -> None:
        self.sent.close()


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

    def __init__(
        self,
        files: WorldFiles,
        settings: Settings,
        rate: float,
        before_send: Callable[[Line], bytes | None] | None = None,
    ) -> None:
        self.sent = 0
        self.error: BaseException | None = None
        self.summary = ""
        self.before_send = before_send
        self._thread = threading.Thread(
            target=self._run, args=(files, settings, rate), name="demo-sender", daemon=True
        )

    def _run(self, files: WorldFiles, settings: Settings, rate: float) -> None:
        try:
            result = produce_file(
                files.events,
                settings,
                progress=False,
                rate=rate,
                on_sent=self._count,
                before_send=self.before_send,
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
    letters: list[dict[str, object]] = field(default_factory=list)


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
    from producers.holdings import load_file as load_holdings
    from producers.watchlist import load_file
    from stream.topics import ensure_topics

    directory = workdir / "demo"
    directory.mkdir(parents=True, exist_ok=True)
    # SIGTERM stops the demo as Ctrl-C does: the worker and the broker it started go too
    signal.signal(signal.SIGTERM, _interrupt)
    with local_broker(settings, workdir, environ):
        ensure_topics(settings)
        files, lines = prepare(directory, options)
        unchecked = expected_results(files, settings, environ)
        say(
            f"wrote {lines:,} records to {files.events}: unchecked, the rule engine expects "
            f"{len(unchecked.alert_ids)} alerts, and {unchecked.rejected} records are malformed"
        )
        if Pseudonymizer(pseudonym_key(settings.pseudonym_key or None, environ)).is_development_key:
            say(
                "pseudonyms use the built-in development key: set DUANKA_PSEUDONYM_KEY for real use"
            )
        load_file(files.watchlist, settings)
        load_holdings(files.holdings, settings, progress=False)
        with worker_process(settings, workdir, environ) as worker:
            say(f"police console: {console_url(settings)} (open it in a browser while this runs)")
            consumer = output_consumer(settings)
            checks = CounterChecks(settings, directory / "sent.jsonl")
            try:
                sender = Sender(files, settings, options.rate, checks)
                sender.start()
                say(
                    f"sending {lines:,} records at {options.rate:g} a second, as carriers "
                    "and banks would; each opening at a counter is checked first "
                    "(POST /v1/check) and not opened if refused; alerts and dead letters "
                    "appear as they come back from Kafka:"
                )

                def expected_now() -> Expected:
                    checks.close()
                    return expected_results(files, settings, environ, checks.sent_path)

                seen, expected = watch(consumer, settings, worker, sender, expected_now, lines)
                code = summarise(files, settings, sender, expected, seen, frozenset(checks.refused))
                summarise_checks(checks, unchecked, expected)
                code = max(code, police(settings, files, environ, consumer, worker, seen))
                code = max(
                    code,
                    implicated(settings, files, environ, consumer, worker, seen, checks.sent_path),
                )
                if options.forever:
                    say(f"\nstill running: the police console is at {console_url(settings)}")
                    say("following new alerts; Ctrl-C stops the worker and the broker")
                    follow(consumer, settings, worker, seen)
            finally:
                consumer.close()
    return code


def police(
    settings: Settings,
    files: WorldFiles,
    environ: Mapping[str, str],
    consumer: KafkaConsumer,
    worker: subprocess.Popen[bytes],
    seen: Seen,
) -> int:
    """The police's side (producers/police_demo.py); 0 if it showed what it should."""
    from kafka import KafkaProducer

    from producers.police_demo import PoliceStepFailed, police_step

    producer = KafkaProducer(
        bootstrap_servers=settings.bootstrap.split(","), **kafka_python_options(settings.security)
    )

    def send_event(event: dict[str, Any]) -> None:
        value, key = orjson.dumps(event), str(event["id_number"]).encode()
        producer.send(settings.topics.sim_events, value, key=key).get(timeout=30)

    def flagged(event_id: str) -> bool:
        poll(consumer, settings, worker, seen)
        return any(
            alert.rule_id == "watchlist_hit" and alert.evidence[0].event_id == event_id
            for alert in seen.alerts.values()
        )

    pseudonymizer = Pseudonymizer(pseudonym_key(settings.pseudonym_key or None, environ))
    try:
        police_step(settings, files.events, pseudonymizer, send_event, flagged)
    except (PoliceStepFailed, OSError) as error:
        say(f"POLICE STEP FAILED: {error}")
        return 1
    finally:
        producer.close()
    return 0


def implicated(
    settings: Settings,
    files: WorldFiles,
    environ: Mapping[str, str],
    consumer: KafkaConsumer,
    worker: subprocess.Popen[bytes],
    seen: Seen,
    sent: Path,
) -> int:
    """The police report the numbers found in fraud cases (producers/implicated_demo.py).

    Then the three rules on them are scored against the ground truth, and
    the alerts the rule engine gives for what was sent must all arrive.
    """
    from producers.implicated_demo import ImplicatedStepFailed, implicated_step

    def alerts() -> dict[str, Alert]:
        poll(consumer, settings, worker, seen)
        return seen.alerts

    def letters() -> list[dict[str, object]]:
        poll(consumer, settings, worker, seen)
        return seen.letters

    try:
        implicated_step(settings, files.implicated, alerts, letters)
    except (ImplicatedStepFailed, OSError) as error:
        say(f"IMPLICATED STEP FAILED: {error}")
        return 1
    ids = expected_results(files, settings, environ, sent, implicated=True).alert_ids
    deadline = time.monotonic() + SETTLE_S
    while not ids <= set(seen.alerts) and time.monotonic() < deadline:
        poll(consumer, settings, worker, seen)
    rules = [r for r in IMPLICATED_RULES if r in settings.rules.__dataclass_fields__]
    cases = [case for case in read_truth(files.truth) if case.rule_id in rules]
    traced = [a for a in seen.alerts.values() if a.rule_id in rules]
    evaluation = evaluate(cases, traced, rules)
    say("\nthe implicated-card alerts against the simulation's ground truth:")
    say(table(evaluation))
    say(details(evaluation))
    missing = ids - set(seen.alerts)
    if missing:
        say(f"MISMATCH: {len(missing)} expected alerts on implicated cards missing")
        return 1
    say("every expected alert on implicated cards arrived through Kafka")
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def watch(
    consumer: KafkaConsumer,
    settings: Settings,
    worker: subprocess.Popen[bytes],
    sender: Sender,
    expect: Callable[[], Expected],
    lines: int,
) -> tuple[Seen, Expected]:
    """Print alerts and dead letters until every expected one came, or time is up.

    What is expected is known once everything is sent (`expect`): the
    counters' refusals decide which openings reach Kafka.
    """
    seen = Seen()
    expected: Expected | None = None
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
        if deadline is None or expected is None:
            deadline = now + SETTLE_S
            say(f"  ... all {lines:,} records sent in {now - started:.0f} s; waiting for the last")
            expected = expect()
        complete = expected.alert_ids <= set(seen.alerts) and seen.dead >= expected.rejected
        if complete or now >= deadline:
            return seen, expected


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
                seen.letters.append(letter)
                say(
                    f"  dead letter: {letter['topic']} partition {letter['partition']} "
                    f"offset {letter['offset']}: {letter['error']}"
                )


def follow(
    consumer: KafkaConsumer, settings: Settings, worker: subprocess.Popen[bytes], seen: Seen
) -> None:
    while True:
        poll(consumer, settings, worker, seen)


def summarise_checks(checks: CounterChecks, unchecked: Expected, expected: Expected) -> None:
    """What the counters' checks decided, and the alerts the refusals prevented."""
    asked = sum(checks.decisions.values())
    decided = ", ".join(f"{checks.decisions[d]} {d}" for d in ("allow", "review", "refuse"))
    say(
        f"\nchecks at the counter: {asked} ({decided}); {checks.stale} stale, "
        f"{checks.unanswered} not answered in time (sent to manual review, opened)"
    )
    for rule_id, count in sorted(checks.refused_by.items()):
        say(f"  refused by {rule_id}: {count}")
    prevented = unchecked.alert_ids - expected.alert_ids
    say(
        f"the refused openings were not made: {len(prevented)} alerts they would have raised "
        f"(or caused later) never happened"
    )


def summarise(
    files: WorldFiles,
    settings: Settings,
    sender: Sender,
    expected: Expected,
    seen: Seen,
    refused: frozenset[str] = frozenset(),
) -> int:
    """Score the alerts against the ground truth and the rule engine; 0 if all is as expected.

    A labelled case with an opening refused at the counter, that no alert
    found, was stopped there: it is left out of the score, and counted.
    """
    say(f"\n{sender.summary}")
    # the cases of the rules on implicated numbers are scored once the police report them
    cases = [case for case in read_truth(files.truth) if case.rule_id not in IMPLICATED_RULES]
    found = {
        (alert.rule_id, f"{e.source}/{e.event_id}")
        for alert in seen.alerts.values()
        for e in alert.evidence
    }
    happened = [
        case
        for case in cases
        if not refused.intersection(case.events)
        or any((case.rule_id, event) in found for event in case.events)
    ]
    rules = [r for r in settings.rules.__dataclass_fields__ if r not in IMPLICATED_RULES]
    evaluation = evaluate(happened, seen.alerts.values(), rules)
    if len(happened) < len(cases):
        say(f"\n{len(cases) - len(happened)} labelled cases were stopped at the counter")
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

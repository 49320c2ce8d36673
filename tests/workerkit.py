"""Running `duanka worker` subprocesses against the test broker, and reading what they write."""

from __future__ import annotations

import html
import io
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any

import orjson
import yaml
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError

from producers.inventory import holding_lines
from producers.simulator import World, iter_lines
from rules.config import load_settings
from rules.engine import Engine
from rules.pseudonym import Pseudonymizer
from rules.replay import Implications, replay
from stream.broker import free_port
from stream.envelope import decode_envelope

KEY = "integration-test-key"
TOPIC_NAMES = (
    "sim_events",
    "bank_events",
    "watchlist",
    "alerts",
    "deadletter",
    "holdings",
    "decisions",
    "dispositions",
    "cases",
    "identity_events",
    "outlet_events",
    "agent_signals",
    "case_links",
    "implicated",
    "number_events",
    "place_events",
    "traces",
)


@dataclass
class WorkerRun:
    """A worker's config (topics of its own) and, while it runs, its process."""

    bootstrap: str
    root: Path
    partitions: int = 4
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    web_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    # kafka.security of the config (protocol, ...); empty: PLAINTEXT
    security: dict[str, str] = field(default_factory=dict)
    # more settings of the config's worker section
    worker: dict[str, Any] = field(default_factory=dict)
    # the config's check section. The tests compare answers exactly, so a check
    # waits (up to 5 s) until the worker has read the envelopes on their way to
    # its identity's stage: with the default 50 ms it may answer stale first
    check: dict[str, Any] = field(default_factory=lambda: {"max_wait_ms": 5000})
    # the config's cases section: a verdict on an unknown alert is dead-lettered in seconds
    cases: dict[str, Any] = field(default_factory=lambda: {"unknown_grace": "3s"})

    def __post_init__(self) -> None:
        self.topics = {name: f"{name}-{self.run}" for name in TOPIC_NAMES}
        self.config = self.root / "config.yaml"
        kafka: dict[str, Any] = {"bootstrap": self.bootstrap}
        if self.security:
            kafka["security"] = self.security
        self.config.write_text(
            yaml.safe_dump(
                {
                    "kafka": kafka,
                    "topics": {**self.topics, "partitions": self.partitions},
                    "pseudonym": {"key": KEY},
                    "worker": {
                        "app_id": self.app_id,
                        "web_port": self.web_port,
                        "data_dir": str(self.root / "data"),
                        **self.worker,
                    },
                    "check": self.check,
                    "console": {"users_file": str(self.users_file)},
                    "cases": self.cases,
                }
            )
        )
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("DUANKA_")}
        self.env["DUANKA_CONFIG"] = str(self.config)

    @property
    def log(self) -> Path:
        return self.root / "worker.log"

    @property
    def users_file(self) -> Path:
        """The console's users: `self.duanka("users", "add", ...)` writes them here."""
        return self.root / "console-users.json"

    @property
    def app_id(self) -> str:
        return f"duanka-test-{self.run}"

    def duanka(
        self, *args: str, env: Mapping[str, str] | None = None, stdin: bytes | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        """Run a `duanka` command with this config; `env` adds to the environment."""
        return subprocess.run(
            [sys.executable, "-m", "stream.cli", *args],
            env={**self.env, **(env or {})},
            input=stdin,
            check=True,
            capture_output=True,
        )

    def create_topics(self) -> None:
        self.duanka("topics", "create")

    def load_lists(self, watchlist: Path, holdings: Path) -> None:
        """Publish the watchlist and the holdings snapshots, as their keepers would."""
        self.duanka("watchlist", "load", str(watchlist))
        self.duanka("holdings", "load", "--quiet", str(holdings))

    def start(self, *args: str) -> None:
        """Start `duanka worker` (with `args`, such as "--loglevel", "debug"), logging to `log`."""
        self.starts += 1
        with self.log.open("ab") as out:
            out.write(f"\n==== start {self.starts} ====\n".encode())
            out.flush()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "stream.cli", "worker", *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
            )

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Until the worker of the latest start has recovered its tables and runs its stages."""
        deadline = time.monotonic() + timeout
        marker = f"==== start {self.starts} ===="
        while True:
            self.check_alive()
            log = self.log.read_text(errors="replace")
            if "Worker ready" in log[log.rfind(marker) :]:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"the worker was not ready in {timeout:.0f} s")
            time.sleep(0.2)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final commit."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"worker exited: {self.log.read_text(errors='replace')[-4000:]}")

    def read(
        self,
        name: str,
        until: Callable[[list[Any]], bool],
        timeout: float = 120.0,
        settle: float = 2.0,
    ) -> list[Any]:
        """A topic's records from the start, until `until` holds (then `settle` s more)."""
        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None)
        try:
            topic = self.topics[name]
            partitions = [
                TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()
            ]
            consumer.assign(partitions)
            consumer.seek_to_beginning(*partitions)
            records: list[Any] = []
            deadline = time.monotonic() + timeout
            while not until(records) and time.monotonic() < deadline:
                self.check_alive()
                for batch in consumer.poll(timeout_ms=500).values():
                    records.extend(batch)
            settled = time.monotonic() + settle
            while time.monotonic() < settled:
                for batch in consumer.poll(timeout_ms=200).values():
                    records.extend(batch)
            return records
        finally:
            consumer.close()


def read_topic(bootstrap: str, topic: str, timeout: float = 60.0) -> list[Any]:
    """Every record of `topic`, from the start up to its end offsets as of the call."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        records: list[Any] = []
        deadline = time.monotonic() + timeout
        while any(consumer.position(tp) < end for tp, end in ends.items()):
            if time.monotonic() > deadline:
                raise AssertionError(f"could not read {topic} to its end in {timeout} s")
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


def end_offsets(bootstrap: str, topics: list[str]) -> dict[TopicPartition, int]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    try:
        tps = [
            TopicPartition(topic, p)
            for topic in topics
            for p in consumer.partitions_for_topic(topic) or ()
        ]
        return dict(consumer.end_offsets(tps))
    finally:
        consumer.close()


def committed_offsets(bootstrap: str, group: str) -> dict[TopicPartition, int]:
    """What `group` has committed, by partition ({} if nothing yet)."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="duanka-tests")
    try:
        offsets = admin.list_group_offsets(group).get(group, {})
    except KafkaError:
        return {}
    finally:
        admin.close()
    return {tp: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}


def short_of(bootstrap: str, group: str, targets: dict[TopicPartition, int]) -> int:
    """How many records `group`'s committed offsets are short of `targets`."""
    committed = committed_offsets(bootstrap, group)
    return sum(max(0, end - committed.get(tp, 0)) for tp, end in targets.items())


def stages_of(run: WorkerRun) -> list[tuple[str, list[str]]]:
    """(consumer group, topics) in the order the worker's stages feed one another."""
    topics, group = run.topics, run.app_id
    inputs = ["sim_events", "bank_events", "watchlist", "implicated"]
    return [
        (f"{group}-input", [topics[name] for name in inputs]),
        (group, [topics["identity_events"], topics["outlet_events"], topics["number_events"]]),
        (group, [topics["agent_signals"], topics["place_events"]]),
    ]


def wait_screened(run: WorkerRun, workers: list[WorkerRun], timeout: float = 180.0) -> None:
    """Until the workers have screened and committed everything the inputs hold now.

    Each stage is waited for up to what its topics held once the stage before
    had committed everything (marks keep coming while the workers idle).
    When this returns, every alert the inputs can cause is in Kafka.
    """
    deadline = time.monotonic() + timeout
    for group, topics in stages_of(run):
        targets = end_offsets(run.bootstrap, topics)
        while (short := short_of(run.bootstrap, group, targets)) > 0:
            for worker in workers:
                worker.check_alive()
            if time.monotonic() > deadline:
                raise AssertionError(f"{group} is still {short} records short on {topics}")
            time.sleep(0.5)


def behind_now(run: WorkerRun) -> dict[str, int]:
    """Records each group has not committed yet, per stage's topics: where a kill lands."""
    behind = {}
    for group, topics in stages_of(run):
        behind[",".join(topics)] = short_of(
            run.bootstrap, group, end_offsets(run.bootstrap, topics)
        )
    return behind


def unscreened(run: WorkerRun) -> int:
    """Envelopes with items at or after the stages' committed offsets: work a kill interrupts."""
    committed = committed_offsets(run.bootstrap, run.app_id)
    count = 0
    for name, kind in (("identity_events", "identity"), ("outlet_events", "outlet")):
        topic = run.topics[name]
        for record in read_topic(run.bootstrap, topic):
            start = committed.get(TopicPartition(topic, record.partition), 0)
            if record.offset >= start and decode_envelope(record.value, kind).items:
                count += 1
    return count


def write_world(world: World, root: Path) -> tuple[Path, Path, Path]:
    """The world's events, watchlist and holdings snapshots, as JSON-lines files."""
    events = root / "events.jsonl"
    events.write_bytes(b"".join(line + b"\n" for line in iter_lines(world.events)))
    watchlist = root / "watchlist.jsonl"
    watchlist.write_bytes(b"".join(orjson.dumps(entry) + b"\n" for entry in world.watchlist))
    holdings = root / "holdings.jsonl"
    lines = holding_lines(world.holdings, world.as_of)
    holdings.write_bytes(b"".join(line + b"\n" for line in lines))
    return events, watchlist, holdings


def write_implicated(world: World, root: Path) -> Path:
    """The numbers the world's police found in fraud cases, as `implicated.jsonl`."""
    path = root / "implicated.jsonl"
    path.write_bytes(b"".join(record.to_json() + b"\n" for record in world.implicated))
    return path


def send_implicated(run: WorkerRun, world: World) -> None:
    """Publish them to the run's implicated topic, keyed by number, as the police would."""
    producer = KafkaProducer(bootstrap_servers=run.bootstrap, acks="all")
    try:
        for record in world.implicated:
            producer.send(run.topics["implicated"], record.to_json(), key=record.number.encode())
        producer.flush()
    finally:
        producer.close()


def replay_alerts(
    run: WorkerRun,
    events: Path,
    watchlist: Path,
    holdings: Path | None = None,
    implicated: Path | None = None,
    traces: io.BytesIO | None = None,
) -> dict[str, dict[str, Any]]:
    """What `duanka replay` gives for the same files and settings, by alert_id.

    With `implicated`, the numbers' traces are written to `traces`.
    """
    settings = load_settings(run.config, environ={})
    out = io.BytesIO()
    engine = Engine(settings.rules, implicated=settings.implicated)
    pseudonymizer = Pseudonymizer(KEY.encode())
    reports = None
    if implicated is not None:
        reports = Implications(implicated, pseudonymizer, traces or io.BytesIO())
    replay(
        events,
        engine,
        pseudonymizer,
        out,
        watchlist=watchlist,
        holdings=holdings,
        implicated=reports,
    )
    return by_alert_id(out.getvalue().splitlines())


def by_alert_id(values: list[bytes]) -> dict[str, dict[str, Any]]:
    """Alerts by id, without `detected_at` (the one field that depends on the clock)."""
    alerts: dict[str, dict[str, Any]] = {}
    for value in values:
        alert = orjson.loads(value)
        del alert["detected_at"]
        previous = alerts.setdefault(alert["alert_id"], alert)
        assert previous == alert, f"two different alerts share an id: {previous} / {alert}"
    return alerts


def console_opener(run: WorkerRun, user: str, password: str) -> urllib.request.OpenerDirector:
    """A urllib opener signed in to `run`'s police console as `user`, keeping its cookies.

    The user must be in `run.users_file`; a wrong password raises HTTPError 401.
    """
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
    login = f"http://127.0.0.1:{run.web_port}/console/login"
    with opener.open(login, timeout=10) as response:
        token = re.search(r'name="csrf" value="([^"]+)"', response.read().decode())
    assert token is not None, "the sign-in form has no csrf field"
    fields = {"user": user, "password": password, "csrf": html.unescape(token[1])}
    with opener.open(login, data=urllib.parse.urlencode(fields).encode(), timeout=10):
        pass  # 303 to the console, which urllib follows with the session's cookie
    return opener


class OwnTopic:
    """A config whose topic `name` (a config key) is a test's own, and `duanka` run with it."""

    def __init__(self, bootstrap: str, root: Path, name: str, topic: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.config = root / "config.yaml"
        self.config.write_text(
            yaml.safe_dump({"kafka": {"bootstrap": bootstrap}, "topics": {name: topic}})
        )

    def duanka(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`duanka ARGS` with this config, its output as text, whatever its exit code."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("DUANKA_")}
        command = [sys.executable, "-m", "stream.cli", "--config", str(self.config)]
        return subprocess.run(
            [*command, *args], env=env, capture_output=True, text=True, timeout=120, check=False
        )


def compacted_topic(admin: Any, prefix: str, partitions: int) -> str:
    """A new compacted topic named after `prefix`, made and known to the broker."""
    topic = f"{prefix}-{uuid.uuid4().hex[:12]}"
    admin.create_topics(
        {
            topic: {
                "num_partitions": partitions,
                "replication_factor": 1,
                "configs": {"cleanup.policy": "compact"},
            }
        },
        wait_for_metadata=True,
    )
    return topic

"""`duanka produce`: send a JSON-lines file of events to Kafka, in file order.

Each line is sent as it is (the engine validates it), keyed by its
`id_number` as the contract recommends, so one person's events stay in one
partition and in order.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from kafka import KafkaProducer
from kafka.errors import KafkaError
from tqdm import tqdm

from rules.config import KafkaSecurity, Settings
from rules.errors import DuankaError
from stream.security import kafka_python_options
from stream.topics import require_topics


class ProduceError(DuankaError):
    """A file that cannot be sent as asked, or records the brokers did not take."""


@dataclass
class ProduceSummary:
    sent: Counter[str] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return sum(self.sent.values())

    def describe(self, source: str) -> str:
        parts = ", ".join(f"{count} to {topic}" for topic, count in sorted(self.sent.items()))
        return f"sent {self.total} records from {source}: {parts or 'nothing'}"


@dataclass(frozen=True, slots=True)
class Line:
    number: int
    value: bytes
    key: bytes | None
    event_type: str | None


def read_lines(path: Path) -> Iterator[Line]:
    """The non-blank lines of `path`, with what routing and keying need."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            value = raw.rstrip(b"\r\n")
            if not value.strip():
                continue
            key, event_type = _key_and_type(value)
            yield Line(number, value, key, event_type)


def _key_and_type(value: bytes) -> tuple[bytes | None, str | None]:
    try:
        record = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None, None
    if not isinstance(record, dict):
        return None, None
    id_number = record.get("id_number")
    event_type = record.get("event_type")
    return (
        id_number.encode() if isinstance(id_number, str) else None,
        event_type if isinstance(event_type, str) else None,
    )


def route(line: Line, settings: Settings, topic: str | None) -> str | None:
    """The topic for a line: the one asked for, else by its event_type."""
    if topic:
        return topic
    if line.event_type and line.event_type.startswith("sim."):
        return settings.topics.sim_events
    if line.event_type and line.event_type.startswith("bank."):
        return settings.topics.bank_events
    return None


def check_routable(path: Path, settings: Settings, topic: str | None) -> tuple[int, set[str]]:
    """The lines and the topics they go to; fails before anything is sent if one has none."""
    count = 0
    unroutable: list[int] = []
    targets: set[str] = set()
    for line in read_lines(path):
        count += 1
        target = route(line, settings, topic)
        if target is None:
            unroutable.append(line.number)
        else:
            targets.add(target)
    if unroutable:
        shown = ", ".join(map(str, unroutable[:10]))
        more = f" and {len(unroutable) - 10} more" if len(unroutable) > 10 else ""
        raise ProduceError(
            f"{path}: line(s) {shown}{more} have no sim.* or bank.* event_type, so their "
            "topic is unknown; nothing was sent. Name one with --topic to send them as they are."
        )
    return count, targets


def make_producer(bootstrap: str, security: KafkaSecurity) -> KafkaProducer:
    try:
        return KafkaProducer(
            bootstrap_servers=bootstrap.split(","),
            client_id="duanka-produce",
            acks="all",
            enable_idempotence=True,
            linger_ms=20,
            batch_size=256 * 1024,
            max_request_size=2 * 1024 * 1024,
            # a send that cannot get the topic's metadata fails after this, not a minute
            max_block_ms=15_000,
            **kafka_python_options(security),
        )
    except KafkaError as exc:
        raise ProduceError(f"cannot connect to Kafka at {bootstrap}: {exc}") from exc


class Pacer:
    """Holds a sender to `rate` records a second (no limit if None or 0)."""

    def __init__(self, rate: float | None) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self.started = time.monotonic()
        self.count = 0

    def wait(self) -> None:
        if not self.interval:
            return
        self.count += 1
        ahead = self.started + self.count * self.interval - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)


def produce_file(
    path: Path,
    settings: Settings,
    topic: str | None = None,
    progress: bool = True,
    rate: float | None = None,
    on_sent: Callable[[int], None] | None = None,
    before_send: Callable[[Line], bytes | None] | None = None,
) -> ProduceSummary:
    """Send every line of `path`; raise ProduceError if any record was not acknowledged.

    With `rate`, at most that many records a second; `on_sent` is told the
    running count after each record is handed to the producer. `before_send`
    gives the value to send for a line (its own, or another), or None to
    leave the line out.
    """
    if not path.is_file():
        raise ProduceError(f"{path}: no such file")
    total, targets = check_routable(path, settings, topic)
    require_topics(settings, sorted(targets))
    producer = make_producer(settings.bootstrap, settings.security)
    summary = ProduceSummary()
    failures: list[str] = []
    pacer = Pacer(rate)
    try:
        with tqdm(total=total, unit=" events", disable=not progress, file=sys.stderr) as bar:
            for line in read_lines(path):
                target = route(line, settings, topic)
                assert target is not None  # check_routable saw to it
                value = line.value if before_send is None else before_send(line)
                if value is None:
                    bar.update(1)
                    pacer.wait()
                    continue
                future = producer.send(target, value=value, key=line.key)
                future.add_errback(lambda exc, n=line.number: failures.append(f"line {n}: {exc}"))
                summary.sent[target] += 1
                bar.update(1)
                if on_sent is not None:
                    on_sent(summary.total)
                pacer.wait()
            producer.flush()
    finally:
        producer.close()
    if failures:
        raise ProduceError(
            f"{len(failures)} of {total} records were not acknowledged, first: {failures[0]}"
        )
    return summary

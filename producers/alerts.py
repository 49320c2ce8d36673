"""`duanka alerts`: read the police topic as the police would.

Prints one readable line per alert, or writes the alerts as JSON lines.
Alerts repeated after a worker restart carry the same `alert_id` and are
shown once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from rules.alert import Alert, decode_alert, encode_alert
from rules.config import KafkaSecurity
from rules.errors import DuankaError
from stream.security import kafka_python_options


class AlertTopicMissing(DuankaError):
    """The alert topic does not exist (yet)."""


@dataclass(frozen=True, slots=True)
class ReadOptions:
    follow: bool = False
    idle_timeout: float | None = None
    start: str = "beginning"  # or "end": only alerts that arrive from now on
    group: str | None = None
    poll_ms: int = 500


def format_alert(alert: Alert) -> str:
    """One line for a person: when, how bad, which rule, whom, where, why."""
    subject = alert.subject.id_masked or alert.subject.key
    if alert.subject.kind != "identity":
        subject = f"{alert.subject.kind} {alert.subject.key}"
    return (
        f"{alert.event_time.isoformat()}  {alert.severity.upper():<8} {alert.rule_id:<28} "
        f"{subject:<20} {alert.source}@{alert.region_code}  {alert.summary_en} | {alert.summary_zh}"
    )


def open_consumer(
    bootstrap: str, topic: str, options: ReadOptions, security: KafkaSecurity
) -> KafkaConsumer:
    try:
        consumer = KafkaConsumer(
            bootstrap_servers=bootstrap.split(","),
            client_id="duanka-alerts",
            group_id=options.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **kafka_python_options(security),
        )
    except KafkaError as exc:
        raise DuankaError(f"cannot connect to Kafka at {bootstrap}: {exc}") from exc
    partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        consumer.close()
        raise AlertTopicMissing(
            f"topic {topic} does not exist; start the worker or run `duanka topics create`"
        )
    if options.group:
        consumer.subscribe([topic])
        return consumer
    assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
    consumer.assign(assigned)
    if options.start == "end":
        consumer.seek_to_end(*assigned)
    else:
        consumer.seek_to_beginning(*assigned)
    return consumer


def read_alerts(
    consumer: KafkaConsumer,
    options: ReadOptions,
    on_skip: Callable[[str], None] = lambda message: None,
) -> Iterator[Alert]:
    """Distinct alerts, until caught up (or, following, until idle or stopped)."""
    seen: set[str] = set()
    end = None if options.follow or options.group else consumer.end_offsets(consumer.assignment())
    last_record = time.monotonic()
    while True:
        batches = consumer.poll(timeout_ms=options.poll_ms)
        for records in batches.values():
            for record in records:
                last_record = time.monotonic()
                alert = _decode(record, on_skip)
                if alert is not None and alert.alert_id not in seen:
                    seen.add(alert.alert_id)
                    yield alert
        if batches and options.group:
            consumer.commit()
        if end is not None and all(consumer.position(tp) >= off for tp, off in end.items()):
            return
        idle = time.monotonic() - last_record
        if options.idle_timeout is not None and idle >= options.idle_timeout:
            return


def _decode(record: object, on_skip: Callable[[str], None]) -> Alert | None:
    value = getattr(record, "value", None)
    where = f"partition {getattr(record, 'partition', '?')} offset {getattr(record, 'offset', '?')}"
    try:
        return decode_alert(value or b"")
    except DuankaError as exc:
        on_skip(f"skipped a record that is not an alert at {where}: {exc}")
        return None


def write_alerts(alerts: Iterator[Alert], out: IO[str] | None, text: IO[str]) -> int:
    """Write each alert as JSON to `out`, or as a readable line to `text`."""
    count = 0
    for alert in alerts:
        if out is not None:
            out.write(encode_alert(alert).decode() + "\n")
            out.flush()
        else:
            text.write(format_alert(alert) + "\n")
            text.flush()
        count += 1
    return count

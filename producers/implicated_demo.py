"""The demo's last step: the police report numbers found in fraud cases, and duanka traces them.

After the police step, the demo publishes the simulator's implicated numbers
(`implicated.jsonl`: cards of a few outlets and staff members that turn up
in fraud cases far more often than others, single cards, numbers nobody
opened) to `police.implicated`, as the police would. It waits until the
worker has traced or dead-lettered every one, then prints what the 一案双查
review starts from: the outlets and staff members with the most implicated
cards, their alerts, and the identities to look at (masked).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import orjson
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from rules.alert import Alert
from rules.config import Settings
from rules.errors import DuankaError
from rules.figures import Figures
from rules.implicated import NO_OPENING, InvalidImplicated, parse_implicated
from rules.lines import json_lines
from stream.security import kafka_python_options

WAIT_S = 90.0
TOP = 5


def say(text: str = "") -> None:
    print(text, flush=True)


class ImplicatedStepFailed(DuankaError):
    """The implicated-cards step of the demo did not show what it should."""


def publish(settings: Settings, path: Path) -> int:
    """Send the valid records of `path` to the implicated topic, keyed by number; how many."""
    producer = KafkaProducer(
        bootstrap_servers=settings.bootstrap.split(","), **kafka_python_options(settings.security)
    )
    sent = 0
    try:
        for _, raw in json_lines(path):
            try:
                record = parse_implicated(raw)
            except InvalidImplicated:
                continue
            producer.send(settings.topics.implicated, raw, key=record.number.encode())
            sent += 1
        producer.flush(timeout=30)
    finally:
        producer.close()
    return sent


def read_from_start(settings: Settings, topic: str) -> KafkaConsumer:
    consumer = KafkaConsumer(
        bootstrap_servers=settings.bootstrap.split(","),
        group_id=None,
        enable_auto_commit=False,
        **kafka_python_options(settings.security),
    )
    partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    return consumer


def implicated_step(
    settings: Settings,
    path: Path,
    alerts: Callable[[], dict[str, Alert]],
    dead_letters: Callable[[], list[dict[str, object]]],
) -> None:
    """Publish the implicated numbers, wait for their traces, print the figures and the alerts.

    `alerts` gives the alerts seen so far (by id), `dead_letters` the dead
    letters seen so far; both keep polling the demo's output consumer.
    """
    sent = publish(settings, path)
    say(f"\nthe police report {sent} numbers found in fraud cases (police.implicated)")
    traces = read_from_start(settings, settings.topics.traces)
    rows: list[dict[str, object]] = []
    deadline = time.monotonic() + WAIT_S
    try:
        while True:
            for records in traces.poll(timeout_ms=500).values():
                rows += [orjson.loads(r.value) for r in records]
            unknown = [d for d in dead_letters() if NO_OPENING in str(d.get("error"))]
            if len(rows) + len(unknown) >= sent:
                break
            if time.monotonic() > deadline:
                raise ImplicatedStepFailed(
                    f"after {WAIT_S:.0f} s, {len(rows)} traced and {len(unknown)} unknown "
                    f"of {sent} reported"
                )
    finally:
        traces.close()
    figures = Figures.of(rows)
    say(
        f"traced {len(rows)} to their openings ({figures.cards} cards); "
        f"{len(unknown)} matched no opening (dead-lettered: {NO_OPENING})"
    )
    median = figures.median_days()
    if median is not None:
        say(f"days from opening to report: median {median:.0f}")
    for dimension, title in (("outlet_id", "outlets"), ("agent_id", "staff members")):
        say(f"top {title} by implicated cards (谁开卡谁负责, 一案双查):")
        for value, count in figures.top(dimension, TOP):
            say(f"  {value:<16} {count} card{'s' if count != 1 else ''}")
    seen = alerts()
    places = [a for a in seen.values() if a.rule_id in ("outlet_implicated", "agent_implicated")]
    openers = [a for a in seen.values() if a.rule_id == "implicated_opener"]
    for alert in sorted(places, key=lambda a: (a.rule_id, a.subject.key)):
        subject = f"{alert.subject.kind} {alert.subject.key}"
        say(f"  ALERT {alert.rule_id}: {subject}: {alert.summary_en}")
    people = sorted({a.subject.id_masked or a.subject.key for a in openers})
    say(f"identities to look at ({len(people)} opened implicated cards): {', '.join(people[:12])}")
    if not places or not openers:
        raise ImplicatedStepFailed("no outlet, staff member or opener was alerted")

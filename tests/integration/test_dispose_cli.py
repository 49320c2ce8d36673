"""`duanka dispose` on the real broker: the verdict keyed by its alert, where the command says."""

from __future__ import annotations

import re
import subprocess
import uuid
from pathlib import Path

import orjson
import pytest
from kafka.admin import KafkaAdminClient
from workerkit import OwnTopic, compacted_topic, read_topic

from rules.disposition import parse_disposition

ALERT = "3f9a0c6e1b2d4a5f8e7d6c5b4a392817"
OTHER = "0badc0de0badc0de0badc0de0badc0de"
WRITTEN = re.compile(
    r"^wrote .* to (?P<topic>\S+) partition (?P<partition>\d+) offset (?P<offset>\d+)$"
)


class Police(OwnTopic):
    """A config whose dispositions topic is the test's own, and `duanka dispose` with it."""

    def dispose(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.duanka("dispose", *args)


@pytest.fixture
def police(kafka_bootstrap: str, kafka_admin: KafkaAdminClient, tmp_path: Path) -> Police:
    topic = compacted_topic(kafka_admin, "dispositions", 3)
    return Police(kafka_bootstrap, tmp_path, "dispositions", topic)


def test_verdicts_are_written_keyed_by_their_alert_where_the_command_says(police: Police) -> None:
    at = "2026-12-02T09:30:00+08:00"
    runs = [
        police.dispose(
            ALERT,
            *("--status", "confirmed", "--by", "GS-LZ-police-0042", "--at", at),
            *("--note", "卖卡给收卡人，案件 2026-311"),
            *("--punish-scope", "telecom", "--until", "2028-12-02"),
            *("--basis", "2024 joint punishment: card trade"),
        ),
        police.dispose(OTHER, "--status", "investigating", "--by", "GS-LZ-police-0042"),
        police.dispose(ALERT, "--status", "dismissed", "--by", "GS-LZ-police-0007"),  # appeal
    ]
    where = []
    for done in runs:
        assert (done.returncode, done.stderr) == (0, ""), done.stderr
        match = WRITTEN.match(done.stdout.rstrip("\n"))
        assert match is not None and done.stdout.count("\n") == 1, done.stdout
        assert match["topic"] == police.topic
        where.append((int(match["partition"]), int(match["offset"])))
    assert runs[0].stdout.startswith(
        f"wrote confirmed, punish telecom from 2026-12-02 until 2028-12-02 for alert {ALERT} "
        f"at {at} to {police.topic}"
    )

    records = read_topic(police.bootstrap, police.topic)
    assert sorted((r.partition, r.offset) for r in records) == sorted(where)
    by_place = {(r.partition, r.offset): r for r in records}
    first, other, appeal = (by_place[place] for place in where)
    # one alert's verdicts stay in one partition, in order: the appeal comes after
    assert first.partition == appeal.partition and first.offset < appeal.offset
    assert (first.key, other.key, appeal.key) == (
        ALERT.encode("utf-8"),
        OTHER.encode("utf-8"),
        ALERT.encode("utf-8"),
    )
    assert orjson.loads(first.value) == {
        "schema": "duanka.disposition/1",
        "alert_id": ALERT,
        "status": "confirmed",
        "at": at,
        "by": "GS-LZ-police-0042",
        "note": "卖卡给收卡人，案件 2026-311",
        "punish": {
            "scope": "telecom",
            "since": "2026-12-02",
            "until": "2028-12-02",
            "basis": "2024 joint punishment: card trade",
        },
    }
    for record in (other, appeal):
        value = orjson.loads(record.value)
        assert set(value) == {"schema", "alert_id", "status", "at", "by"}
        assert value["at"].endswith("+08:00")
        assert parse_disposition(record.value).alert_id == record.key.decode()
    assert orjson.loads(appeal.value)["status"] == "dismissed"


def test_a_wrong_option_writes_nothing(police: Police) -> None:
    done = police.dispose(
        ALERT,
        *("--status", "dismissed", "--by", "GS-LZ-police-0042"),
        *("--punish-scope", "telecom", "--until", "2028-12-02"),
    )
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        "duanka: error: --punish-scope: only a confirmed disposition may punish "
        "(--status confirmed)\n"
    )
    assert read_topic(police.bootstrap, police.topic) == []


def test_a_missing_topic_is_named(kafka_bootstrap: str, tmp_path: Path) -> None:
    missing = Police(
        kafka_bootstrap, tmp_path, "dispositions", f"dispositions-{uuid.uuid4().hex[:12]}"
    )
    done = missing.dispose(ALERT, "--status", "confirmed", "--by", "GS-LZ-police-0042")
    assert (done.returncode, done.stdout) == (1, "")
    assert f"topic {missing.topic} does not exist" in done.stderr
    assert "duanka topics create" in done.stderr

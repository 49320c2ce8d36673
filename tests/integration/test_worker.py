"""The worker against a real broker: dead letters for bad input, alerts for good input.

Malformed records go in first, through kafka-python; valid events follow,
some through `duanka produce` (kafka-python) and some through kcat. The
worker must dead-letter every bad record with its field and reason, keep
going, and send exactly the expected alerts.
"""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from workerkit import WorkerRun

from rules.alert import make_alert_id
from rules.pseudonym import Pseudonymizer
from stream.envelope import EventItem, decode_envelope

KEY = "integration-test-key"
WAIT_S = 90.0


def valid_id(first17: str) -> str:
    from rules.idnumber import check_digit

    return first17 + check_digit(first17)


LOCAL = valid_id("62010219900101123")  # Gansu
NONLOCAL = valid_id("51010419851231456")  # Sichuan


def event(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "schema": "duanka.event/1",
        "event_id": "E-1",
        "event_type": "sim.activate",
        "occurred_at": "2026-11-20T10:15:00+08:00",
        "source": "CMCC-GS",
        "id_type": "resident_id",
        "id_number": LOCAL,
        "region_code": "620102",
        "outlet_id": "GS-LZ-0012",
        "agent_id": "A-77812",
        "channel": "online",
        "verification": "remote_face",
        "msisdn": "13912345678",
        "sim_kind": "personal",
    }
    base.update(fields)
    return {k: v for k, v in base.items() if v is not None}


def mailed(event_id: str, destination: str, id_number: str = LOCAL) -> dict[str, Any]:
    return event(
        event_id=event_id,
        id_number=id_number,
        delivery={"method": "mail", "region_code": destination, "address_key": "a1f3c9"},
    )


def bank_open(event_id: str) -> dict[str, Any]:
    return event(
        event_id=event_id,
        event_type="bank.open",
        source="ICBC-GS",
        channel="counter",
        verification="in_person",
        msisdn=None,
        sim_kind=None,
        account_id="6222020200112233",
        account_kind="personal",
    )


def without(field: str, **fields: Any) -> bytes:
    record = event(**fields)
    del record[field]
    return orjson.dumps(record)


# (record, expected field, a phrase the reason must contain)
MALFORMED: list[tuple[bytes | None, str, str]] = [
    (b'{"schema": "duanka.event/1", "event_id": ', "record", "not valid JSON"),
    (b"\xff\xfe\x00 not utf-8", "record", "not valid JSON"),
    (b"[1, 2, 3]", "record", "not a JSON object"),
    (b'"a string"', "record", "not a JSON object"),
    (b"42", "record", "not a JSON object"),
    (None, "record", "null"),
    *[
        (without(name, event_id=f"MISSING-{name}"), name, "missing")
        for name in (
            "schema",
            "event_id",
            "event_type",
            "occurred_at",
            "source",
            "id_type",
            "id_number",
            "region_code",
            "outlet_id",
            "channel",
            "verification",
            "msisdn",
            "sim_kind",
        )
    ],
    (
        orjson.dumps(
            {k: v for k, v in bank_open("MISSING-account_id").items() if k != "account_id"}
        ),
        "account_id",
        "missing",
    ),
    (
        orjson.dumps(
            {k: v for k, v in bank_open("MISSING-account_kind").items() if k != "account_kind"}
        ),
        "account_kind",
        "missing",
    ),
    (orjson.dumps(event(schema="duanka.event/2")), "schema", "duanka.event/1"),
    (orjson.dumps(event(event_id=123)), "event_id", "must be a string"),
    (orjson.dumps(event(event_id="T-1", channel=True)), "channel", "must be a string"),
    (orjson.dumps(event(event_id="T-2", delivery="mail")), "delivery", "must be an object"),
    (orjson.dumps(event(event_id="T-3", event_type="sim.sell")), "event_type", "unknown value"),
    (orjson.dumps(event(event_id="T-4", channel="fax")), "channel", "unknown value"),
    (orjson.dumps(event(event_id="T-5", verification="video")), "verification", "unknown value"),
    (orjson.dumps(event(event_id="T-6", id_type="passport")), "id_type", "unknown value"),
    (orjson.dumps(event(event_id="T-7", sim_kind="car")), "sim_kind", "unknown value"),
    (
        orjson.dumps(event(event_id="T-8", delivery={"method": "drone"})),
        "delivery.method",
        "unknown value",
    ),
    (
        orjson.dumps(event(event_id="T-9", occurred_at="2026-02-29T10:00:00+08:00")),
        "occurred_at",
        "impossible date",
    ),
    (
        orjson.dumps(event(event_id="T-10", occurred_at="2026-11-20T10:15:00")),
        "occurred_at",
        "offset",
    ),
    (
        orjson.dumps(
            event(event_id="T-11", id_number=LOCAL[:17] + ("1" if LOCAL[17] != "1" else "2"))
        ),
        "id_number",
        "bad check digit",
    ),
    (
        orjson.dumps(event(event_id="T-12", id_number=valid_id("62010219900230123"))),
        "id_number",
        "impossible birth date",
    ),
    (
        orjson.dumps(event(event_id="T-13", id_number=valid_id("99010219900101123"))),
        "id_number",
        "province",
    ),
    (orjson.dumps(event(event_id="T-14", region_code="62010")), "region_code", "6 digits"),
    (
        orjson.dumps(event(event_id="T-15", delivery={"method": "mail"})),
        "delivery.region_code",
        "missing",
    ),
    (orjson.dumps(event(event_id="T-16", padding="x" * 70_000)), "record", "64 KiB"),
]


@dataclass
class Worker:
    config: Path
    web_port: int
    app_id: str
    topics: dict[str, str]
    bootstrap: str
    process: subprocess.Popen[bytes]
    log: Path
    env: dict[str, str]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def worker(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    """A `duanka worker` subprocess on topics of its own."""
    run = uuid.uuid4().hex[:8]
    root = tmp_path_factory.mktemp("worker")
    topics = {
        "sim_events": f"sim-{run}",
        "bank_events": f"bank-{run}",
        "watchlist": f"watch-{run}",
        "alerts": f"alerts-{run}",
        "deadletter": f"dead-{run}",
        "identity_events": f"identity-{run}",
        "outlet_events": f"outlet-{run}",
        "agent_signals": f"agent-{run}",
    }
    config = root / "config.yaml"
    web_port = free_port()
    config.write_text(
        yaml.safe_dump(
            {
                "kafka": {"bootstrap": kafka_bootstrap},
                "topics": {**topics, "partitions": 4},
                "pseudonym": {"key": KEY},
                "worker": {
                    "app_id": f"duanka-test-{run}",
                    "web_port": web_port,
                    "data_dir": str(root / "data"),
                },
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("DUANKA_")}
    env["DUANKA_CONFIG"] = str(config)
    subprocess.run([sys.executable, "-m", "stream.cli", "topics", "create"], env=env, check=True)
    log = root / "worker.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "stream.cli", "worker"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        yield Worker(
            config, web_port, f"duanka-test-{run}", topics, kafka_bootstrap, process, log, env
        )
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def read_all(
    bootstrap: str,
    topic: str,
    count: int,
    worker: Worker | None = None,
    keep: Callable[[Any], bool] = lambda record: True,
) -> list[Any]:
    """Read `count` records that `keep` accepts from `topic`, from the beginning, within WAIT_S."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        records: list[Any] = []
        deadline = time.monotonic() + WAIT_S
        while len(records) < count and time.monotonic() < deadline:
            if worker is not None and worker.process.poll() is not None:
                pytest.fail(f"worker exited: {worker.log.read_text()[-3000:]}")
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(r for r in batch if keep(r))
        # anything beyond the expected count would be a defect too
        for batch in consumer.poll(timeout_ms=1000).values():
            records.extend(r for r in batch if keep(r))
        return records
    finally:
        consumer.close()


def kcat_produce(bootstrap: str, topic: str, records: list[dict[str, Any]]) -> None:
    lines = b"".join(
        str(r["id_number"]).encode() + b"\t" + orjson.dumps(r) + b"\n" for r in records
    )
    subprocess.run(
        ["kcat", "-b", bootstrap, "-P", "-t", topic, "-K", "\t"], input=lines, check=True
    )


VALID_VIA_FILE = [
    event(event_id="OK-1"),  # pickup-less online opening: no alert
    mailed("OK-2", "620502"),  # mailed within Gansu: no alert
    mailed("OK-3", "530102"),  # to Yunnan, a hotspot: high
    mailed("OK-4", "510104"),  # to Sichuan: medium
]
VALID_VIA_KCAT = [
    bank_open("OK-5"),
    mailed("OK-6", "610102", id_number=NONLOCAL),  # non-local ID: high
]


def test_bad_records_are_dead_lettered_and_good_ones_alert(worker: Worker, tmp_path: Path) -> None:
    producer = KafkaProducer(bootstrap_servers=worker.bootstrap)
    for record, _, _ in MALFORMED:
        producer.send(worker.topics["sim_events"], value=record, key=b"bad")
    producer.flush()
    producer.close()

    events_file = tmp_path / "events.jsonl"
    events_file.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in VALID_VIA_FILE))
    subprocess.run(
        [sys.executable, "-m", "stream.cli", "produce", "--quiet", str(events_file)],
        env=worker.env,
        check=True,
    )
    kcat_produce(worker.bootstrap, worker.topics["bank_events"], VALID_VIA_KCAT[:1])
    kcat_produce(worker.bootstrap, worker.topics["sim_events"], VALID_VIA_KCAT[1:])

    dead = read_all(worker.bootstrap, worker.topics["deadletter"], len(MALFORMED), worker)
    assert_dead_letters(dead, worker.topics["sim_events"])

    alerts = read_all(worker.bootstrap, worker.topics["alerts"], 4, worker)
    assert sorted(orjson.loads(r.value)["rule_id"] for r in alerts) == [
        "sim_mail_out_of_province",
        "sim_mail_out_of_province",
        "sim_mail_out_of_province",
        "sim_nonlocal_not_in_person",  # OK-6: a non-local ID, remote verification
    ]
    assert_alerts([r for r in alerts if b"sim_mail_out_of_province" in r.value])

    envelopes = [
        decode_envelope(r.value, "identity")
        for r in read_all(worker.bootstrap, worker.topics["identity_events"], 0)
    ]
    events = [item for e in envelopes for item in e.items if isinstance(item, EventItem)]
    assert sorted(item.event.event_id for item in events) == [f"OK-{n}" for n in range(1, 7)]
    internal = [
        record
        for name in ("identity_events", "outlet_events", "agent_signals")
        for record in read_all(worker.bootstrap, worker.topics[name], 0)
    ]
    changelogs = {
        table: read_all(worker.bootstrap, f"{worker.app_id}-{table}-changelog", 0)
        for table in ("identity-state", "outlet-state", "agent-state")
    }
    assert len(changelogs["identity-state"]) >= 2  # both people's state was written
    assert changelogs["outlet-state"]  # OK-5 and OK-1 opened at a counter
    for record in internal + [r for records in changelogs.values() for r in records]:
        for number in (LOCAL, NONLOCAL):
            assert number.encode() not in record.value
            assert number.encode() not in (record.key or b"")

    assert_metrics(worker, len(alerts))
    log = worker.log.read_text(errors="replace")
    assert "rejected record topic=" in log
    for number in (LOCAL, NONLOCAL):
        assert number not in log


# subjects each table holds after the run: both people, the one outlet, the one agent
STATE_KEYS = {"identity-state": 2, "outlet-state": 1, "agent-state": 1}


def assert_metrics(worker: Worker, alerts: int) -> None:
    """/metrics counts what was sent, lag drains to 0, state sizes match the changelogs."""
    sim, bank = worker.topics["sim_events"], worker.topics["bank_events"]
    inputs = (sim, bank, worker.topics["watchlist"])
    # the latency is observed just after Kafka acknowledges an alert, the lag
    # and state sizes every few seconds: wait for them to settle
    metrics = poll_metrics(
        worker.web_port,
        lambda m: (
            m.get("duanka_alert_latency_seconds_count") == alerts
            and all(m.get(lag_sample(t, p)) == 0 for t in inputs for p in range(4))
            and all(m.get(state_sample(t)) == n for t, n in STATE_KEYS.items())
        ),
    )
    assert metrics["duanka_events_total"] == 6
    assert family(metrics, "duanka_events_total") == {
        f'{{event_type="sim.activate",topic="{sim}"}}': 5,  # OK-1..4 and OK-6
        f'{{event_type="bank.open",topic="{bank}"}}': 1,  # OK-5
    }
    rejected = Counter(field for _, field, _ in MALFORMED)
    assert metrics["duanka_rejected_total"] == len(MALFORMED)
    assert family(metrics, "duanka_rejected_total") == {
        f'{{field="{field}",topic="{sim}"}}': count for field, count in rejected.items()
    }
    assert family(metrics, "duanka_alerts_total") == {
        '{rule_id="sim_mail_out_of_province",severity="high"}': 2,  # OK-3, OK-6
        '{rule_id="sim_mail_out_of_province",severity="medium"}': 1,  # OK-4
        '{rule_id="sim_nonlocal_not_in_person",severity="medium"}': 1,  # OK-6
    }

    # every alert sent was timed, from reading its event to Kafka having the alert
    assert metrics["duanka_alert_latency_seconds_count"] == alerts == 4
    assert family(metrics, "duanka_alert_latency_seconds_count") == {
        '{rule_id="sim_mail_out_of_province"}': 3,
        '{rule_id="sim_nonlocal_not_in_person"}': 1,
    }
    assert 0 < metrics["duanka_alert_latency_seconds_sum"] < 4 * WAIT_S
    infinite = 'duanka_alert_latency_seconds_bucket{le="+Inf",rule_id="sim_mail_out_of_province"}'
    assert metrics[infinite] == 3

    # a lag gauge for every partition the worker consumes, drained to 0 for the input
    lags = family(metrics, "duanka_consumer_lag")
    internal = [worker.topics[n] for n in ("identity_events", "outlet_events", "agent_signals")]
    for topic in [*inputs, *internal]:
        for partition in range(4):
            assert f'{{partition="{partition}",topic="{topic}"}}' in lags

    # the stages' key counts agree with what the tables' changelogs hold
    for table in STATE_KEYS:
        changelog = read_all(worker.bootstrap, f"{worker.app_id}-{table}-changelog", 0)
        assert metrics[state_sample(table)] == subjects(changelog), table

    text = metrics_text(worker.web_port)
    pseudonymizer = Pseudonymizer(KEY.encode())
    for number in (LOCAL, NONLOCAL, *malformed_id_numbers()):
        assert number not in text
        assert pseudonymizer.subject_key("resident_id", number) not in text


def test_state_sizes_are_counted_again_after_a_restart(worker_run: WorkerRun) -> None:
    """A restarted worker counts the keys its stores already hold, then adds only new ones."""
    people = [valid_id(f"620102199001011{n:02d}") for n in range(4)]
    producer = KafkaProducer(bootstrap_servers=worker_run.bootstrap)

    def send(partition: int, *events: dict[str, Any]) -> None:
        for record in events:
            value = orjson.dumps(record)
            producer.send(worker_run.topics["sim_events"], value=value, partition=partition)
        producer.flush()

    def identities(count: int, events: int) -> Callable[[dict[str, float]], bool]:
        return lambda m: (
            m.get(state_sample("identity-state")) == count
            and m.get("duanka_events_total", 0) == events
        )

    try:
        worker_run.start()
        send(1, *(event(event_id=f"R-{n}", id_number=people[n]) for n in range(3)))
        poll_metrics(worker_run.web_port, identities(3, 3), WAIT_S, worker_run.check_alive)
        worker_run.stop()

        worker_run.start()  # nothing new: the 3 can only come from counting the stores
        poll_metrics(worker_run.web_port, identities(3, 0), WAIT_S, worker_run.check_alive)
        # only partition 0 gets new records: partition 1, read to its end before
        # the restart, must not hold them back
        send(
            0,
            event(event_id="R-3", id_number=people[3]),
            event(event_id="R-4", id_number=people[0]),
        )
        metrics = poll_metrics(
            worker_run.web_port, identities(4, 2), WAIT_S, worker_run.check_alive
        )
    finally:
        producer.close()
    assert metrics[state_sample("identity-state")] == 4  # people[0] was already there
    assert metrics["duanka_probe_failures_total"] == 0


def malformed_id_numbers() -> list[str]:
    """The id numbers inside the malformed records, valid or not."""
    numbers = []
    for raw, _, _ in MALFORMED:
        try:
            record = orjson.loads(raw or b"")
        except orjson.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("id_number"), str):
            numbers.append(record["id_number"])
    return numbers


def subjects(changelog: list[Any]) -> int:
    """Distinct keys of a table's changelog, without the stages' NUL-prefixed bookkeeping."""
    return len({record.key for record in changelog if not record.key.startswith(b"\x00")})


def lag_sample(topic: str, partition: int) -> str:
    return f'duanka_consumer_lag{{partition="{partition}",topic="{topic}"}}'


def state_sample(table: str) -> str:
    return f'duanka_state_keys{{table="{table}"}}'


def family(metrics: dict[str, float], name: str) -> dict[str, float]:
    """The samples of one metric, by their labels as written (sorted: '{a="1",b="2"}')."""
    return {
        sample.removeprefix(name): value
        for sample, value in metrics.items()
        if sample.startswith(name + "{")
    }


def poll_metrics(
    port: int,
    ready: Callable[[dict[str, float]], bool],
    timeout: float = 60.0,
    alive: Callable[[], None] = lambda: None,
) -> dict[str, float]:
    """Scrape until `ready` holds (the web server may still be starting), or fail."""
    deadline = time.monotonic() + timeout
    metrics: dict[str, float] = {}
    while time.monotonic() < deadline:
        alive()
        try:
            metrics = scrape(port)
        except OSError:
            metrics = {}
        if ready(metrics):
            return metrics
        time.sleep(0.5)
    pytest.fail(f"metrics did not settle: {metrics}")


def metrics_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return str(response.read().decode())


def scrape(port: int) -> dict[str, float]:
    """The worker's metrics: each sample, plus a total per family with the labels summed."""
    text = metrics_text(port)
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, _, value = line.rpartition(" ")
        samples[name] = float(value)
        family = name.split("{")[0]
        if family != name:
            samples[family] = samples.get(family, 0.0) + float(value)
    return samples


def listening_addresses(port: int) -> set[str]:
    """Local addresses of the sockets listening on `port`, from /proc (hex, as the kernel shows)."""
    port_hex = f"{port:04X}"
    return {
        fields[1]
        for table in ("/proc/net/tcp", "/proc/net/tcp6")
        for fields in (line.split() for line in Path(table).read_text().splitlines()[1:])
        if fields[1].endswith(f":{port_hex}") and fields[3] == "0A"  # 0A: LISTEN
    }


def test_web_server_listens_on_loopback_only(worker: Worker) -> None:
    deadline = time.monotonic() + WAIT_S
    while not listening_addresses(worker.web_port) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert listening_addresses(worker.web_port) == {f"0100007F:{worker.web_port:04X}"}


def assert_dead_letters(records: list[Any], topic: str) -> None:
    assert len(records) == len(MALFORMED)
    assert {record.key for record in records} == {b"bad"}  # the original key
    letters = sorted((orjson.loads(r.value) for r in records), key=lambda d: d["offset"])
    # one key, so one partition, offsets 0.. in the order the records were sent
    assert len({letter["partition"] for letter in letters}) == 1
    for offset, (letter, (raw, field, phrase)) in enumerate(zip(letters, MALFORMED, strict=True)):
        assert letter["schema"] == "duanka.deadletter/1"
        assert (letter["topic"], letter["offset"]) == (topic, offset)
        assert letter["field"] == field, letter
        assert phrase in letter["error"], letter
        assert letter["error"].startswith(f"{field}: ")
        if raw is None:
            assert letter["raw"] == ""
        elif letter.get("raw_encoding") == "base64":
            assert raw.startswith(base64.b64decode(letter["raw"]))
        else:
            assert raw.decode().startswith(letter["raw"])
            assert len(letter["raw"].encode()) <= 4096


def assert_alerts(records: list[Any]) -> None:
    subject_local = Pseudonymizer(KEY.encode()).subject_key("resident_id", LOCAL)
    subject_nonlocal = Pseudonymizer(KEY.encode()).subject_key("resident_id", NONLOCAL)
    alerts = {orjson.loads(r.value)["evidence"][0]["event_id"]: r for r in records}
    assert sorted(alerts) == ["OK-3", "OK-4", "OK-6"]
    body = {eid: orjson.loads(r.value) for eid, r in alerts.items()}
    for eid, alert in body.items():
        assert alerts[eid].key == alert["subject"]["key"].encode()
        assert alert.pop("alert_id") == make_alert_id(
            "sim_mail_out_of_province", alert["subject"]["key"], alert["source"], eid
        )
        detected = datetime.fromisoformat(alert.pop("detected_at"))
        assert abs(datetime.now(UTC) - detected) < timedelta(minutes=10)
    assert body["OK-3"] == {
        "schema": "duanka.alert/1",
        "rule_id": "sim_mail_out_of_province",
        "severity": "high",
        "action": "review",
        "subject": {
            "kind": "identity",
            "key": subject_local,
            "id_masked": LOCAL[:4] + "*" * 10 + LOCAL[-4:],
            "id_province": "62",
        },
        "event_time": "2026-11-20T10:15:00+08:00",
        "source": "CMCC-GS",
        "region_code": "620102",
        "summary_zh": "号卡在甘肃(62)办理后邮寄至外省云南(53)，寄往涉诈高发地区",
        "summary_en": (
            "SIM opened in Gansu (62) mailed out of province to Yunnan (53), a fraud hotspot"
        ),
        "facts": {
            "outlet_province": "62",
            "delivery_province": "53",
            "hotspot": True,
            "nonlocal_id": False,
            "id_province": "62",
        },
        "evidence": [
            {
                "event_id": "OK-3",
                "source": "CMCC-GS",
                "event_type": "sim.activate",
                "occurred_at": "2026-11-20T10:15:00+08:00",
            }
        ],
    }
    assert body["OK-4"]["severity"] == "medium"
    assert body["OK-4"]["facts"] == {
        "outlet_province": "62",
        "delivery_province": "51",
        "hotspot": False,
        "nonlocal_id": False,
        "id_province": "62",
    }
    assert body["OK-4"]["summary_en"] == (
        "SIM opened in Gansu (62) mailed out of province to Sichuan (51)"
    )
    assert body["OK-6"]["severity"] == "high"
    assert body["OK-6"]["subject"]["key"] == subject_nonlocal
    assert body["OK-6"]["subject"]["id_province"] == "51"
    assert body["OK-6"]["facts"]["nonlocal_id"] is True
    assert body["OK-6"]["summary_zh"] == "号卡在甘肃(62)办理后邮寄至外省陕西(61)，且为外地身份证"

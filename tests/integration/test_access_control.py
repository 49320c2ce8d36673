"""Access control on a real broker: SASL/SCRAM logins and the ACL set of stream/security.py.

One secured broker for the module, with a SASL_PLAINTEXT listener, a
SASL_SSL one and an SSL one taking client certificates (made here with
openssl). The admin makes the topics, the users and the ACLs with the
`duanka` commands a deployment uses; then each party is shown what it may
do and what it is refused (a carrier also with kcat and a certificate), and
a worker logged in as `duanka` (over TLS) turns a carrier's event into an
alert that the police read: the ACL set is enough to screen.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ACLOperation, ACLResourcePatternType, ResourceType
from kafka.errors import GroupAuthorizationFailedError, TopicAuthorizationFailedError
from strategies import make_event
from workerkit import WorkerRun, console_opener

from producers.produce import make_producer
from rules.config import KafkaSecurity, Settings, load_settings
from rules.errors import ConfigError
from stream import broker
from stream.security import (
    Parties,
    acl_set,
    aiokafka_options,
    faust_credentials,
    kafka_python_options,
)

PASSWORDS = {user: f"{user}-{uuid.uuid4().hex}" for user in Parties.roles()}
# who reads the console in the worker: a console user, not a Kafka one
CONSOLE_VIEWER = ("duty-officer", f"console-{uuid.uuid4().hex}")
PASSWORDS["duanka"] = PASSWORDS.pop("worker")
KEYSTORE_PASSWORD = uuid.uuid4().hex
WAIT_S = 120.0


@dataclass
class Secured:
    """The secured broker, a worker config on its topics, and the test certificates."""

    info: broker.BrokerInfo
    run: WorkerRun
    certificates: Certificates
    cert_port: int  # SSL with client certificates

    @property
    def topics(self) -> dict[str, str]:
        """The worker config's topics, with the holdings and decisions of its settings."""
        settings = load_settings(self.run.config, environ={})
        extra = {"holdings": settings.topics.holdings, "decisions": settings.topics.decisions}
        return {**self.run.topics, **extra}

    @property
    def tls_bootstrap(self) -> str:
        return f"{broker.HOST}:{self.info.tls_port}"

    def login(self, user: str, password: str | None = None, tls: bool = False) -> KafkaSecurity:
        return KafkaSecurity(
            protocol="SASL_SSL" if tls else "SASL_PLAINTEXT",
            username=user,
            password=PASSWORDS[user] if password is None else password,
            ssl_cafile=str(self.certificates.ca) if tls else "",
        )

    def consumer(self, user: str, tls: bool = False, **options: Any) -> KafkaConsumer:
        return KafkaConsumer(
            bootstrap_servers=self.tls_bootstrap if tls else self.info.bootstrap,
            enable_auto_commit=False,
            **options,
            **kafka_python_options(self.login(user, tls=tls)),
        )

    def carrier_certificate(self) -> KafkaSecurity:
        """The carrier's login with its client certificate (CN=carrier)."""
        return KafkaSecurity(
            protocol="SSL",
            ssl_cafile=str(self.certificates.ca),
            ssl_certfile=str(self.certificates.carrier_certificate),
            ssl_keyfile=str(self.certificates.carrier_key),
        )

    def kcat_as_carrier(self, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
        """kcat with the carrier's client certificate.

        Debian's kcat (librdkafka 2.0.2) cannot log in with SCRAM to Kafka 4
        (its SCRAM nonce is refused; fixed in librdkafka 2.6.1).
        """
        login = self.carrier_certificate()
        command = ["kcat", "-b", f"{broker.HOST}:{self.cert_port}", "-X", "security.protocol=SSL"]
        command += ["-X", f"ssl.ca.location={login.ssl_cafile}"]
        command += ["-X", f"ssl.certificate.location={login.ssl_certfile}"]
        command += ["-X", f"ssl.key.location={login.ssl_keyfile}"]
        return subprocess.run(
            [*command, *args], input=stdin, check=False, capture_output=True, timeout=60
        )


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _signed(folder: Path, name: str, subject: str, extensions: str) -> tuple[Path, Path]:
    """A key and a certificate for ``subject``, signed by the test CA in ``folder``."""
    key, request, certificate = (folder / f"{name}.{ext}" for ext in ("key", "csr", "pem"))
    _openssl(
        *("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(request)),
        *("-subj", subject),
    )
    (folder / f"{name}.ext").write_text(extensions + "authorityKeyIdentifier=keyid,issuer\n")
    _openssl(
        *("x509", "-req", "-in", str(request), "-CA", str(folder / "ca.pem")),
        *("-CAkey", str(folder / "ca.key"), "-CAcreateserial", "-days", "2"),
        *("-out", str(certificate), "-extfile", str(folder / f"{name}.ext")),
    )
    return key, certificate


@dataclass(frozen=True)
class Certificates:
    ca: Path  # the test CA: the clients' ssl_cafile, and the CA of client certificates
    keystore: Path  # the broker's key and certificate for 127.0.0.1, PKCS12
    carrier_key: Path  # a client certificate with CN=carrier, and its key
    carrier_certificate: Path


def make_certificates(folder: Path) -> Certificates:
    folder.mkdir()
    _openssl(
        *("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
        *("-keyout", str(folder / "ca.key"), "-out", str(folder / "ca.pem")),
        *("-subj", "/CN=duanka test CA"),
        *("-addext", "basicConstraints=critical,CA:TRUE"),
        *("-addext", "keyUsage=critical,keyCertSign,cRLSign"),
    )
    key, certificate = _signed(
        folder,
        "broker",
        "/CN=127.0.0.1",
        "subjectAltName=IP:127.0.0.1\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n",
    )
    keystore = folder / "broker.p12"
    _openssl(
        *("pkcs12", "-export", "-in", str(certificate), "-inkey", str(key)),
        *("-name", "broker", "-out", str(keystore), "-passout", f"pass:{KEYSTORE_PASSWORD}"),
    )
    carrier = _signed(
        folder,
        "carrier",
        "/O=Carrier/CN=carrier",
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n",
    )
    return Certificates(folder / "ca.pem", keystore, *carrier)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    """A secured broker with the topics of a worker config, every party's user, and the ACLs."""
    broker.ensure_jars()
    root = tmp_path_factory.mktemp("secured")
    certificates = make_certificates(root / "tls")
    data_dir = root / "kafka"
    tls = broker.TlsListener(
        broker.free_port(),
        certificates.keystore,
        KEYSTORE_PASSWORD,
        client_ca=certificates.ca,
        cert_port=broker.free_port(),
    )
    info = broker.start(
        port=broker.free_port(),
        data_dir=data_dir,
        timeout=120,
        die_with_parent=True,
        secure=True,
        tls=tls,
    )
    try:
        (root / "worker").mkdir()
        run = WorkerRun(
            f"{broker.HOST}:{tls.port}",
            root / "worker",
            security={"protocol": "SASL_SSL", "ssl_cafile": str(certificates.ca)},
        )
        admin_env = {
            "DUANKA_BOOTSTRAP": info.bootstrap,
            "DUANKA_KAFKA_PROTOCOL": "SASL_PLAINTEXT",
            "DUANKA_KAFKA_USERNAME": broker.ADMIN_USER,
            "DUANKA_KAFKA_PASSWORD": broker.admin_password(data_dir),
        }
        run.duanka("topics", "create", env=admin_env)
        for user, password in PASSWORDS.items():
            run.duanka(
                "kafka-users",
                "add",
                user,
                "--password-stdin",
                env=admin_env,
                stdin=password.encode(),
            )
        run.duanka("acls", "apply", env=admin_env)
        name, password = CONSOLE_VIEWER
        run.duanka(
            "users",
            "add",
            name,
            "--role",
            "viewer",
            "--password-stdin",
            env=admin_env,
            stdin=password.encode(),
        )
        # the worker's login comes from the environment, not from its config file
        run.env["DUANKA_KAFKA_USERNAME"] = "duanka"
        run.env["DUANKA_KAFKA_PASSWORD"] = PASSWORDS["duanka"]
        assert tls.cert_port is not None
        yield Secured(info, run, certificates, tls.cert_port)
        run.stop()
    finally:
        broker.stop(data_dir)


def _grants(acls: list[Any], user: str) -> set[tuple[str, str, str, bool]]:
    return {
        (
            acl.operation.name,
            acl.resource_pattern.resource_type.name,
            acl.resource_pattern.resource_name,
            acl.resource_pattern.pattern_type == ACLResourcePatternType.PREFIXED,
        )
        for acl in acls
        if acl.principal == f"User:{user}"
    }


def test_each_party_is_granted_its_own_topics_only() -> None:
    settings = Settings()
    acls = acl_set(settings, Parties().named(["carrier=mobile", "carrier=unicom"]))
    assert (
        _grants(acls, "mobile")
        == _grants(acls, "unicom")
        == {
            ("WRITE", "TOPIC", "carrier.sim-events", False),
            ("WRITE", "TOPIC", "screening.holdings", False),  # its inventory snapshots
        }
    )
    assert _grants(acls, "carrier") == set()  # naming a role's users replaces its default
    assert _grants(acls, "bank") == {
        ("WRITE", "TOPIC", "bank.account-events", False),
        ("WRITE", "TOPIC", "screening.holdings", False),
    }
    assert _grants(acls, "watchlist") == {("WRITE", "TOPIC", "screening.watchlist", False)}
    assert _grants(acls, "police") == {
        ("READ", "TOPIC", "police.alerts", False),
        ("READ", "TOPIC", "police.cases", False),  # the cases of linked alerts
        ("WRITE", "TOPIC", "police.dispositions", False),  # their verdicts
        ("WRITE", "TOPIC", "police.implicated", False),  # numbers found in fraud cases
        ("READ", "GROUP", "police", True),
    }
    worker = _grants(acls, "duanka")
    assert ("READ", "GROUP", "duanka", True) in worker
    assert {name for op, kind, name, _ in worker if kind == "TOPIC" and op == "READ"} == {
        "carrier.sim-events",
        "bank.account-events",
        "screening.watchlist",
        "screening.holdings",
        "police.alerts",  # the police console in the worker
        "screening.decisions",  # the console's checks and refusals
        "police.dispositions",  # the police's verdicts
        "police.cases",  # the console's cases
        "police.implicated",  # numbers found in fraud cases, traced to their openings
        "duanka",
    }
    assert {(op, name) for op, kind, name, _ in worker if kind == "TOPIC" and op != "READ"} == {
        ("WRITE", "police.alerts"),
        ("WRITE", "screening.deadletter"),
        ("WRITE", "screening.decisions"),  # the check's audit trail
        ("WRITE", "police.cases"),  # the cases it keeps
        ("WRITE", "police.dispositions"),  # the verdicts analysts give in the console
        ("WRITE", "duanka"),  # the prefix: its internal and changelog topics
        ("CREATE", "duanka"),
    }
    assert not any(a.resource_pattern.resource_type == ResourceType.CLUSTER for a in acls)
    assert not any(a.operation == ACLOperation.ALL for a in acls)


def test_every_client_gets_the_same_login() -> None:
    security = KafkaSecurity(protocol="SASL_PLAINTEXT", username="bank", password="pw")
    sasl = {"sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": "bank"}
    sasl["sasl_plain_password"] = "pw"
    assert kafka_python_options(security) == {"security_protocol": "SASL_PLAINTEXT", **sasl}
    assert aiokafka_options(security) == {"security_protocol": "SASL_PLAINTEXT", **sasl}
    credentials = faust_credentials(security)
    assert (credentials.protocol.value, credentials.mechanism.value) == (
        "SASL_PLAINTEXT",
        "SCRAM-SHA-512",
    )
    assert (credentials.username, credentials.password) == ("bank", "pw")
    assert faust_credentials(KafkaSecurity()) is None
    assert kafka_python_options(KafkaSecurity()) == {"security_protocol": "PLAINTEXT"}
    with pytest.raises(ConfigError, match="DUANKA_KAFKA_PASSWORD"):
        kafka_python_options(KafkaSecurity(protocol="SASL_SSL", username="bank"))


def test_the_carrier_writes_its_topics_and_is_refused_the_others(secured: Secured) -> None:
    producer = make_producer(secured.info.bootstrap, secured.login("carrier"))  # idempotent
    try:
        sent = producer.send(secured.topics["sim_events"], key=b"k", value=b"{}").get(timeout=30)
        assert sent.offset >= 0
        snapshot = producer.send(secured.topics["holdings"], key=b"CMCC-GS\x1fk", value=b"{}")
        assert snapshot.get(timeout=30).offset >= 0
        for name in ("bank_events", "decisions"):
            with pytest.raises(TopicAuthorizationFailedError):
                producer.send(secured.topics[name], value=b"{}").get(timeout=30)
    finally:
        producer.close()
    # nor may it read: not the alerts, nor the decisions, nor the snapshots (its own or others')
    for name in ("alerts", "decisions"):
        consumer = secured.consumer("carrier", group_id=None)
        try:
            with pytest.raises(TopicAuthorizationFailedError):
                consumer.beginning_offsets([TopicPartition(secured.topics[name], 0)])
        finally:
            consumer.close()
    consumer = secured.consumer("carrier", group_id=None)
    try:
        # WRITE implies DESCRIBE, so the offsets are listed; fetching records is refused
        consumer.assign([TopicPartition(secured.topics["holdings"], 0)])
        consumer.seek_to_beginning()
        with pytest.raises(TopicAuthorizationFailedError):
            consumer.poll(timeout_ms=10_000)
    finally:
        consumer.close()


def test_the_bank_writes_its_topics_over_tls_and_is_refused_the_carriers(secured: Secured) -> None:
    producer = make_producer(secured.tls_bootstrap, secured.login("bank", tls=True))
    try:
        sent = producer.send(secured.topics["bank_events"], value=b"{}").get(timeout=30)
        assert sent.offset >= 0
        snapshot = producer.send(secured.topics["holdings"], key=b"ICBC-GS\x1fk", value=b"{}")
        assert snapshot.get(timeout=30).offset >= 0
        with pytest.raises(TopicAuthorizationFailedError):
            producer.send(secured.topics["sim_events"], value=b"{}").get(timeout=30)
    finally:
        producer.close()


def test_the_police_may_not_write_alerts_read_inputs_or_use_other_groups(
    secured: Secured,
) -> None:
    # not idempotent: an idempotent producer is refused before it sends (it may write nowhere)
    producer = KafkaProducer(
        bootstrap_servers=secured.info.bootstrap,
        enable_idempotence=False,
        **kafka_python_options(secured.login("police")),
    )
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            producer.send(secured.topics["alerts"], value=b"{}").get(timeout=30)
    finally:
        producer.close()
    names = ("sim_events", "bank_events", "watchlist", "holdings", "decisions", "identity_events")
    for name in names:
        consumer = secured.consumer(
            "police", group_id=None
        )  # one a topic: the error is raised once
        try:
            with pytest.raises(TopicAuthorizationFailedError):
                consumer.beginning_offsets([TopicPartition(secured.topics[name], 0)])
        finally:
            consumer.close()
    consumer = secured.consumer("police", group_id="duanka-looks-alike")
    try:
        consumer.subscribe([secured.topics["alerts"]])
        with pytest.raises(GroupAuthorizationFailedError):
            consumer.poll(timeout_ms=10_000)
    finally:
        consumer.close()


def _read_until(consumer: KafkaConsumer, topic: str, marker: bytes) -> list[bytes]:
    """The values of ``topic`` from the beginning, until ``marker`` is among them (or 30 s)."""
    partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    values: list[bytes] = []
    deadline = time.monotonic() + 30
    while marker not in values and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=500).values():
            values.extend(record.value for record in batch)
    return values


def test_the_worker_reads_snapshots_and_writes_and_reads_decisions(secured: Secured) -> None:
    """What the check and the console need of the brokers, with the worker's own login."""
    holdings, decisions = secured.topics["holdings"], secured.topics["decisions"]
    marker = uuid.uuid4().hex.encode()
    carrier = make_producer(secured.info.bootstrap, secured.login("carrier"))
    try:
        carrier.send(holdings, key=b"CMCC-GS\x1f" + marker, value=marker).get(timeout=30)
    finally:
        carrier.close()
    consumer = secured.consumer("duanka", group_id=None)
    try:
        assert marker in _read_until(consumer, holdings, marker)
    finally:
        consumer.close()
    worker = make_producer(secured.info.bootstrap, secured.login("duanka"))
    try:
        assert worker.send(decisions, value=marker).get(timeout=30).offset >= 0
        with pytest.raises(TopicAuthorizationFailedError):  # snapshots come from their owners
            worker.send(holdings, key=b"CMCC-GS\x1fk", value=b"{}").get(timeout=30)
    finally:
        worker.close()
    # the police console in the worker reads the decisions back, with no group
    consumer = secured.consumer("duanka", group_id=None)
    try:
        assert marker in _read_until(consumer, decisions, marker)
    finally:
        consumer.close()


async def _connects(bootstrap: str, login: KafkaSecurity) -> bool:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **aiokafka_options(login))
    try:
        await producer.start()
    except KafkaConnectionError:
        return False
    finally:
        await producer.stop()
    return True


def _refused_logins(info: broker.BrokerInfo, since: int) -> list[str]:
    """The broker's log lines about refused logins written after byte ``since``."""
    with info.log_path.open("rb") as log:
        log.seek(since)
        lines = log.read().decode(errors="replace").splitlines()
    return [line for line in lines if "Failed authentication" in line]


def test_a_wrong_password_is_refused(secured: Secured) -> None:
    bootstrap = secured.info.bootstrap
    before = secured.info.log_path.stat().st_size
    assert asyncio.run(_connects(bootstrap, secured.login("carrier")))
    assert _refused_logins(secured.info, before) == []
    wrong = secured.login("carrier", password="not-the-password")
    assert not asyncio.run(_connects(bootstrap, wrong))
    refused = _refused_logins(secured.info, before)
    assert refused, "the broker logged no refused login"
    assert all("invalid credentials with SASL mechanism SCRAM-SHA-512" in r for r in refused)


def test_a_carrier_with_a_client_certificate_and_kcat(secured: Secured) -> None:
    marker = uuid.uuid4().hex.encode()
    sim, bank = secured.topics["sim_events"], secured.topics["bank_events"]
    done = secured.kcat_as_carrier("-P", "-t", sim, "-K", "\t", stdin=b"k\t" + marker)
    assert done.returncode == 0, done.stderr
    done = secured.kcat_as_carrier("-P", "-t", bank, stdin=b"refused")
    assert b"Topic authorization failed" in done.stderr
    done = secured.kcat_as_carrier("-C", "-t", sim, "-o", "beginning", "-e")
    assert b"Topic authorization failed" in done.stderr  # a carrier cannot read back
    # the same certificate through duanka's own client settings
    bootstrap = f"{broker.HOST}:{secured.cert_port}"
    producer = make_producer(bootstrap, secured.carrier_certificate())
    try:
        assert producer.send(sim, value=marker).get(timeout=30).offset >= 0
        with pytest.raises(TopicAuthorizationFailedError):
            producer.send(bank, value=b"refused").get(timeout=30)
    finally:
        producer.close()
    consumer = KafkaConsumer(
        bootstrap_servers=secured.info.bootstrap, **secured.info.admin_options()
    )
    try:
        partitions = [TopicPartition(sim, p) for p in consumer.partitions_for_topic(sim) or ()]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        values: list[bytes] = []
        deadline = time.monotonic() + 30
        while values.count(marker) < 2 and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                values.extend(record.value for record in batch)
        assert values.count(marker) == 2  # one from kcat, one from kafka-python
    finally:
        consumer.close()


def _console(run: WorkerRun) -> dict[str, Any]:
    """What the worker's police console answers its viewer ({} until it serves)."""
    url = f"http://{broker.HOST}:{run.web_port}/console/alerts.json"
    try:
        with console_opener(run, *CONSOLE_VIEWER).open(url, timeout=5) as response:
            view: dict[str, Any] = orjson.loads(response.read())
            return view
    except OSError:
        return {}


def test_a_worker_logged_in_as_duanka_screens_a_carriers_event_for_the_police(
    secured: Secured,
) -> None:
    run = secured.run
    settings = load_settings(run.config, environ=run.env)
    assert (settings.security.protocol, settings.security.username) == ("SASL_SSL", "duanka")
    run.start()
    # the contract's example: a non-local id, verified remotely, mailed to a hotspot
    event = make_event(event_id=f"ACL-{uuid.uuid4().hex[:8]}")
    producer = make_producer(secured.info.bootstrap, secured.login("carrier"))
    try:
        producer.send(
            secured.topics["sim_events"],
            key=str(event["id_number"]).encode(),
            value=orjson.dumps(event),
        ).get(timeout=30)
    finally:
        producer.close()

    group = f"police-{run.run}"
    police = secured.consumer("police", group_id=group, auto_offset_reset="earliest")
    alerts: list[dict[str, Any]] = []
    try:
        police.subscribe([secured.topics["alerts"]])
        deadline = time.monotonic() + WAIT_S
        while len(alerts) < 2 and time.monotonic() < deadline:
            run.check_alive()
            for batch in police.poll(timeout_ms=500).values():
                alerts.extend(orjson.loads(record.value) for record in batch)
        police.commit()
    finally:
        police.close()
    assert sorted(a["rule_id"] for a in alerts) == [
        "sim_mail_out_of_province",
        "sim_nonlocal_not_in_person",
    ]
    assert {a["evidence"][0]["event_id"] for a in alerts} == {event["event_id"]}

    # the console inside the worker reads the alert topic with the worker's login too, and
    # the decisions topic for the checks and refusals
    def console_read() -> bool:
        view = _console(run)
        return view.get("total") == 2 and view["decisions"]["status"] == "reading"

    deadline = time.monotonic() + 60
    while not console_read() and time.monotonic() < deadline:
        run.check_alive()
        time.sleep(0.5)
    view = _console(run)
    assert (view["total"], view["decisions"]["status"]) == (2, "reading")
    run.stop()
    log = run.log.read_text(errors="replace")
    assert "AuthorizationFailed" not in log and "AuthenticationFailed" not in log, log[-4000:]

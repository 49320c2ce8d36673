"""Integration fixtures: one real local Kafka broker for the whole test session.

Every test under tests/integration is marked ``integration``. The broker is
started once (jars fetched once with Maven and cached, see stream/broker.py)
on a free 127.0.0.1 port in a temporary directory, and stopped at the end of
the session, also when tests fail. A broker left behind by an interrupted run
is stopped by an atexit handler, and the JVM is tied to this process
(``die_with_parent``) so that even a killed pytest leaves no broker running.
``DUANKA_KAFKA_VERSION`` selects the Kafka version to test against.
"""

from __future__ import annotations

import atexit
import contextlib
import signal
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

import pytest
from kafka.admin import KafkaAdminClient
from workerkit import WorkerRun

from stream import broker

INTEGRATION_DIR = Path(__file__).resolve().parent
BROKER_START_TIMEOUT_S = 120.0

TopicFactory = Callable[..., str]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test collected from tests/integration as ``integration``."""
    for item in items:
        if item.path.resolve().is_relative_to(INTEGRATION_DIR):
            item.add_marker(pytest.mark.integration)


def _stop_quietly(data_dir: Path) -> None:
    with contextlib.suppress(Exception):
        broker.stop(data_dir, timeout=10.0)


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    """End the session on SIGTERM the way Ctrl-C does: teardown (broker stop) still runs."""
    pytest.exit("SIGTERM received: stopping the test session", returncode=128 + signum)


@contextlib.contextmanager
def _sigterm_exits() -> Iterator[None]:
    previous = signal.getsignal(signal.SIGTERM)
    if previous is not signal.SIG_DFL:  # someone else handles SIGTERM: leave it alone
        yield
        return
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``127.0.0.1:<port>`` of a real Kafka broker running for the whole session."""
    broker.ensure_jars()  # a cold fetch happens here, once, outside the start timeout
    data_dir = tmp_path_factory.mktemp("kafka")
    atexit.register(_stop_quietly, data_dir)
    with _sigterm_exits():
        info = broker.start(
            port=broker.free_port(),
            data_dir=data_dir,
            timeout=BROKER_START_TIMEOUT_S,
            die_with_parent=True,
        )
        try:
            yield info.bootstrap
        finally:
            broker.stop(data_dir)
            atexit.unregister(_stop_quietly)


@pytest.fixture(scope="session")
def kafka_admin(kafka_bootstrap: str) -> Iterator[KafkaAdminClient]:
    """A kafka-python admin client connected to the session broker."""
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="duanka-tests")
    try:
        yield admin
    finally:
        admin.close()


@pytest.fixture
def topic_factory(kafka_admin: KafkaAdminClient) -> TopicFactory:
    """Create a uuid-named topic: ``topic_factory(partitions=4, prefix="it") -> name``.

    The topic exists, with a leader for every partition, when the call returns.
    """

    def create(partitions: int = 4, prefix: str = "it") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        kafka_admin.create_topics(
            {name: {"num_partitions": partitions, "replication_factor": 1}},
            wait_for_metadata=True,
        )
        return name

    return create


@pytest.fixture
def worker_run(kafka_bootstrap: str, tmp_path: Path) -> Iterator[WorkerRun]:
    """A worker's config with topics of its own, created; the worker is stopped afterwards."""
    run = WorkerRun(kafka_bootstrap, tmp_path)
    run.create_topics()
    yield run
    run.stop()

"""The topics duanka uses, and making them before anything runs.

Faust's producer crashes when it sends to a topic that did not exist when it
started, so the worker (and `duanka topics create`) make them all first.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError

from rules.config import Settings
from rules.errors import DuankaError
from stream.security import kafka_python_options

log = logging.getLogger(__name__)

TOPIC_ALREADY_EXISTS = 36


class KafkaUnavailable(DuankaError):
    """The brokers did not answer, or refused an administrative request."""


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    configs: tuple[tuple[str, str], ...] = ()


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """Every topic duanka reads or writes; the watchlist is compacted."""
    topics = settings.topics
    specs = []
    for key, name in topics.names().items():
        configs = (("cleanup.policy", "compact"),) if key == "watchlist" else ()
        specs.append(TopicSpec(name, topics.partitions, topics.replication_factor, configs))
    return specs


def admin_client(settings: Settings, timeout_s: float = 15.0) -> KafkaAdminClient:
    """An admin client logged in as `kafka.security` says."""
    try:
        return KafkaAdminClient(
            bootstrap_servers=settings.bootstrap.split(","),
            client_id="duanka-admin",
            request_timeout_ms=int(timeout_s * 1000),
            **kafka_python_options(settings.security),
        )
    except KafkaError as exc:
        raise KafkaUnavailable(
            f"cannot use the Kafka brokers at {settings.bootstrap}: {exc}"
        ) from exc


def ensure_topics(settings: Settings, specs: list[TopicSpec] | None = None) -> list[str]:
    """Create the topics that are missing; return the names created."""
    wanted = specs if specs is not None else topic_specs(settings)
    admin = admin_client(settings)
    try:
        existing = set(admin.list_topics())
        missing = [spec for spec in wanted if spec.name not in existing]
        if not missing:
            return []
        response = admin.create_topics(
            {
                spec.name: {
                    "num_partitions": spec.partitions,
                    "replication_factor": spec.replication_factor,
                    "configs": dict(spec.configs),
                }
                for spec in missing
            },
            raise_errors=False,
        )
        created = _created(response)
        admin.wait_for_topics([spec.name for spec in missing], timeout_ms=30_000)
    except KafkaError as exc:
        raise KafkaUnavailable(f"creating topics at {settings.bootstrap} failed: {exc}") from exc
    finally:
        admin.close()
    for name in created:
        log.info("created topic %s", name)
    return created


def _created(response: dict[str, object]) -> list[str]:
    created = []
    topics = response.get("topics")
    assert isinstance(topics, list)
    for topic in topics:
        code = topic.get("error_code", 0)
        if code == 0:
            created.append(topic["name"])
        elif code != TOPIC_ALREADY_EXISTS:
            message = topic.get("error_message") or f"error code {code}"
            raise KafkaUnavailable(f"cannot create topic {topic['name']}: {message}")
    return created

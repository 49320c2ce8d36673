"""The topics duanka uses, and making them before anything runs.

Faust's producer crashes when it sends to a topic that did not exist when it
started, so the worker (and `duanka topics create`) make them all first,
the tables' changelog topics too. Faust would make those itself at start,
but its consumer may then not see them in its metadata yet: faust reads a
missing topic as 0 partitions and the stage writing that table crashes with
`PartitionsMismatch`, again and again until the metadata catches up.
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


# the worker's tables; each has a changelog topic named after the app id
TABLES = (
    "identity-state",
    "outlet-state",
    "agent-state",
    "case-state",
    "number-state",
    "place-state",
)
# the cases are one partition: an alert may link to any other
CASE_TABLE = "case-state"
CASE_PARTITIONS = 1


class KafkaUnavailable(DuankaError):
    """The brokers did not answer, or refused an administrative request."""


class MissingTopic(DuankaError):
    """A topic a command writes to does not exist (and the brokers will not make it)."""


class TopicMismatch(DuankaError):
    """A topic exists with another number of partitions than the config says."""


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    configs: tuple[tuple[str, str], ...] = ()
    # the worker's own topics and changelogs must have exactly `partitions`:
    # a table's partition is its topic's partition (the others may differ)
    exact: bool = False


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """Every topic duanka reads or writes; the watchlist, holdings and changelogs are compacted."""
    topics = settings.topics
    compact = (("cleanup.policy", "compact"),)
    specs = []
    internal = {
        topics.identity_events,
        topics.outlet_events,
        topics.agent_signals,
        topics.number_events,
        topics.place_events,
    }
    for name in topics.names().values():
        configs = compact if name in topics.compacted else ()
        partitions = CASE_PARTITIONS if name == topics.case_links else topics.partitions
        exact = name in internal or name == topics.case_links
        specs.append(TopicSpec(name, partitions, topics.replication_factor, configs, exact))
    for table in TABLES:
        name = changelog_topic(settings, table)
        partitions = CASE_PARTITIONS if table == CASE_TABLE else topics.partitions
        specs.append(TopicSpec(name, partitions, topics.replication_factor, compact, True))
    return specs


def changelog_topic(settings: Settings, table: str) -> str:
    """The name faust gives a table's changelog topic."""
    return f"{settings.worker.app_id}-{table}-changelog"


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
    """Create the topics that are missing; return the names created.

    Raises TopicMismatch if one of the worker's own topics or changelogs
    exists with another number of partitions: the stages and their tables
    must be partitioned alike.
    """
    wanted = specs if specs is not None else topic_specs(settings)
    admin = admin_client(settings)
    try:
        existing = set(admin.list_topics())
        _check_partitions(admin, [spec for spec in wanted if spec.exact and spec.name in existing])
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


def require_topics(settings: Settings, names: list[str], timeout_s: float = 15.0) -> None:
    """Fail, naming them, if any of `names` is not a topic on the cluster.

    Producing to a missing topic would wait a minute for metadata that never
    comes (duanka's brokers do not create topics on first use) and then fail
    with a traceback that does not say which topic or what to do.
    """
    admin = admin_client(settings, timeout_s)
    try:
        existing = set(admin.list_topics())
    except KafkaError as exc:
        raise KafkaUnavailable(f"cannot list the topics at {settings.bootstrap}: {exc}") from exc
    finally:
        admin.close()
    missing = [name for name in names if name not in existing]
    if missing:
        which = (
            f"topic {missing[0]} does" if len(missing) == 1 else (f"topics {', '.join(missing)} do")
        )
        raise MissingTopic(
            f"{which} not exist on the Kafka cluster at {settings.bootstrap}: "
            "run `duanka topics create` (with the same config) first"
        )


def input_origins(settings: Settings) -> frozenset[str]:
    """Every partition of the input topics, as "topic/partition": the stages' origins."""
    topics = settings.topics
    names = [*topics.inputs, topics.watchlist, topics.holdings, topics.implicated]
    admin = admin_client(settings)
    try:
        found = {topic["name"]: len(topic["partitions"]) for topic in admin.describe_topics(names)}
    except KafkaError as exc:
        raise KafkaUnavailable(f"cannot describe the input topics: {exc}") from exc
    finally:
        admin.close()
    missing = [name for name in names if not found.get(name)]
    if missing:
        raise KafkaUnavailable(
            f"topic {', '.join(missing)} does not exist: run `duanka topics create`"
        )
    return frozenset(f"{name}/{p}" for name in names for p in range(found[name]))


def _check_partitions(admin: KafkaAdminClient, specs: list[TopicSpec]) -> None:
    if not specs:
        return
    found = {
        topic["name"]: len(topic["partitions"])
        for topic in admin.describe_topics([spec.name for spec in specs])
    }
    wrong = [spec for spec in specs if found.get(spec.name, spec.partitions) != spec.partitions]
    if wrong:
        lines = [
            f"topic {spec.name} has {found[spec.name]} partitions, config says {spec.partitions}"
            for spec in wrong
        ]
        raise TopicMismatch(
            "; ".join(lines) + ": set topics.partitions to match, or recreate the topics"
            " (an existing topic's partitions cannot be reduced, and adding some moves keys"
            " away from their state)"
        )


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

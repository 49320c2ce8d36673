"""The worker's local state belongs to one Kafka cluster, and to its changelog topics.

The RocksDB stores in the data directory are a cache of the changelog
topics, with the changelog offsets they reach. Started against another
cluster (a rebuilt broker, a second local broker elsewhere) or against
changelogs deleted and made again, a worker would trust that cache, find
every event already applied, and screen a whole stream without an alert.
So the data directory records the cluster id and the ids of the changelog
topics (`cluster.json`); on a mismatch the worker says why, discards its
local state, and faust rebuilds it from the changelogs that are there.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from kafka.errors import KafkaError

from rules.config import Settings
from stream.topics import TABLES, KafkaUnavailable, admin_client, changelog_topic

log = logging.getLogger("duanka.worker")

RECORD = "cluster.json"


@dataclass(frozen=True)
class ClusterIdentity:
    cluster_id: str
    changelogs: dict[str, str]  # changelog topic -> topic id


def identify(settings: Settings) -> ClusterIdentity:
    """The cluster's id and the changelog topics' ids, from the brokers."""
    names = [changelog_topic(settings, table) for table in TABLES]
    admin = admin_client(settings)
    try:
        cluster_id = admin.describe_cluster()["cluster_id"]
        topics = admin.describe_topics(names)
    except KafkaError as exc:
        raise KafkaUnavailable(f"cannot identify the Kafka cluster: {exc}") from exc
    finally:
        admin.close()
    return ClusterIdentity(str(cluster_id), {t["name"]: str(t.get("topic_id")) for t in topics})


def mismatch(recorded: ClusterIdentity, current: ClusterIdentity) -> str | None:
    """Why state recorded for `recorded` is not valid for `current` (None if it is)."""
    if recorded.cluster_id != current.cluster_id:
        return (
            f"it was built on Kafka cluster {recorded.cluster_id}, "
            f"and the brokers now are cluster {current.cluster_id}"
        )
    for name, topic_id in current.changelogs.items():
        before = recorded.changelogs.get(name)
        if before is not None and before != topic_id:
            return f"changelog topic {name} was made again since (id {before}, now {topic_id})"
    return None


def bind_state(data_dir: Path, tables: Path, current: ClusterIdentity) -> str | None:
    """Keep the local state only if it was built on `current`; the reason if it was discarded."""
    record = data_dir / RECORD
    reason: str | None = None
    if record.exists():
        try:
            recorded = ClusterIdentity(**json.loads(record.read_text()))
        except (ValueError, TypeError) as error:
            reason = f"its record of the cluster ({record}) cannot be read: {error}"
        else:
            reason = mismatch(recorded, current)
    elif tables.exists() and any(tables.iterdir()):
        reason = f"there is no record ({record}) of the cluster it was built on"
    if reason is not None:
        log.warning(
            "discarding the local state in %s, to rebuild it from the changelogs: %s",
            tables,
            reason,
        )
        shutil.rmtree(tables, ignore_errors=True)
    data_dir.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(asdict(current), indent=2) + "\n")
    return reason

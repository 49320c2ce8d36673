"""`duanka topics create` on the real broker: every topic, changelogs too, and a clear mismatch."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

from stream.topics import CASE_TABLE, TABLES
from tests.workerkit import WorkerRun


def describe(admin: KafkaAdminClient, names: list[str]) -> dict[str, int]:
    """{topic: partitions} of those of `names` that exist."""
    existing = set(admin.list_topics())
    wanted = [name for name in names if name in existing]
    return {topic["name"]: len(topic["partitions"]) for topic in admin.describe_topics(wanted)}


def cleanup_policy(admin: KafkaAdminClient, topic: str) -> str | None:
    """The topic's own cleanup.policy; None if it has the broker's (delete)."""
    response = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    entry = response["topic"][topic].get("cleanup.policy")
    return None if entry is None else str(entry["value"])


def test_create_makes_every_topic_and_each_tables_changelog(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    run = WorkerRun(kafka_bootstrap, tmp_path, partitions=3)
    changelogs = [f"duanka-test-{run.run}-{table}-changelog" for table in TABLES]
    names = [*run.topics.values(), *changelogs]

    first = run.duanka("topics", "create").stdout.decode()
    again = run.duanka("topics", "create").stdout.decode()

    for name in names:
        assert f"{name} " in first and f"{name} " in again
    assert first.count("created") == len(names), first
    assert again.count("exists") == len(names) and "created" not in again, again
    # the cases are one partition: an alert may link to any other
    one = {run.topics["case_links"], f"duanka-test-{run.run}-{CASE_TABLE}-changelog"}
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        assert describe(admin, names) == {name: 1 if name in one else 3 for name in names}
        for name in changelogs:
            assert cleanup_policy(admin, name) == "compact", name
        for name in ("watchlist", "holdings", "dispositions", "cases", "traces"):
            assert cleanup_policy(admin, run.topics[name]) == "compact", name
        assert cleanup_policy(admin, run.topics["alerts"]) is None
    finally:
        admin.close()


def test_an_internal_topic_with_other_partitions_is_refused_with_both_counts(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    run = WorkerRun(kafka_bootstrap, tmp_path, partitions=2)
    run.duanka("topics", "create")
    config = yaml.safe_load(run.config.read_text())
    config["topics"]["partitions"] = 5
    run.config.write_text(yaml.safe_dump(config))

    for command in (["topics", "create"], ["worker"]):
        with pytest.raises(subprocess.CalledProcessError) as failed:
            run.duanka(*command)
        error = failed.value.stderr.decode()
        assert failed.value.returncode == 1, error
        assert "duanka: error: topic " in error, error
        assert f"{run.topics['identity_events']} has 2 partitions, config says 5" in error
        assert f"duanka-test-{run.run}-agent-state-changelog has 2 partitions" in error
        # topics the worker only reads or writes may have partitions of their own
        assert run.topics["sim_events"] not in error and run.topics["alerts"] not in error
        assert "Traceback" not in error

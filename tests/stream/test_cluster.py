"""Local state is kept only on the cluster, and the changelogs, it was built from."""

from __future__ import annotations

import json
from pathlib import Path

from stream.cluster import RECORD, ClusterIdentity, bind_state

HERE = ClusterIdentity("cluster-a", {"app-identity-state-changelog": "id-1"})


def tables_with_state(root: Path) -> Path:
    tables = root / "v1" / "tables"
    (tables / "identity-state-0.db").mkdir(parents=True)
    (tables / "identity-state-0.db" / "CURRENT").write_text("x")
    return tables


def test_state_of_the_recorded_cluster_is_kept(tmp_path: Path) -> None:
    tables = tmp_path / "v1" / "tables"
    assert bind_state(tmp_path, tables, HERE) is None  # a first start: nothing to discard
    tables_with_state(tmp_path)  # the worker ran
    assert bind_state(tmp_path, tables, HERE) is None
    assert (tables / "identity-state-0.db" / "CURRENT").exists()
    assert json.loads((tmp_path / RECORD).read_text())["cluster_id"] == "cluster-a"


def test_state_of_another_cluster_or_changelog_is_discarded(tmp_path: Path) -> None:
    tables = tmp_path / "v1" / "tables"
    bind_state(tmp_path, tables, HERE)
    tables_with_state(tmp_path)
    other = ClusterIdentity("cluster-b", HERE.changelogs)
    assert "built on Kafka cluster cluster-a" in (bind_state(tmp_path, tables, other) or "")
    assert not tables.exists()
    tables_with_state(tmp_path)
    remade = ClusterIdentity("cluster-b", {"app-identity-state-changelog": "id-2"})
    reason = bind_state(tmp_path, tables, remade) or ""
    assert "app-identity-state-changelog was made again" in reason
    assert not tables.exists()


def test_state_with_no_record_of_its_cluster_is_discarded(tmp_path: Path) -> None:
    tables = tables_with_state(tmp_path)
    assert "no record" in (bind_state(tmp_path, tables, HERE) or "")
    assert not tables.exists()
    (tmp_path / RECORD).write_text("{not json")
    tables_with_state(tmp_path)
    assert "cannot be read" in (bind_state(tmp_path, tables, HERE) or "")

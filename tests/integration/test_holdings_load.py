"""`duanka holdings load` on the real broker: snapshots keyed by source and id, bad ones named."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import orjson
import pytest
from kafka.admin import KafkaAdminClient
from workerkit import OwnTopic, compacted_topic, read_topic

RESIDENT = "11010519491231002X"
OTHER = "110105198001010016"
BAD_CHECK = "110105194912310021"  # the bad record's id number: never on stderr
AS_OF = "2026-11-30T00:00:00+08:00"


def snapshot(source: str, id_number: str, sims: dict[str, int], accounts: dict[str, int]) -> bytes:
    return orjson.dumps(
        {
            "schema": "duanka.holding/1",
            "source": source,
            "id_type": "resident_id",
            "id_number": id_number,
            "as_of": AS_OF,
            "sims": sims,
            "accounts": accounts,
        }
    )


class Loader(OwnTopic):
    """A config whose holdings topic is the test's own, and `duanka holdings load` with it."""

    def load(self, path: Path) -> subprocess.CompletedProcess[str]:
        return self.duanka("holdings", "load", str(path))


@pytest.fixture
def loader(kafka_bootstrap: str, kafka_admin: KafkaAdminClient, tmp_path: Path) -> Loader:
    topic = compacted_topic(kafka_admin, "holdings", 2)
    return Loader(kafka_bootstrap, tmp_path, "holdings", topic)


def test_json_lines_and_csv_snapshots_are_published_and_bad_ones_named(
    loader: Loader, tmp_path: Path
) -> None:
    jsonl = tmp_path / "holdings.jsonl"
    jsonl.write_bytes(
        snapshot("CMCC-GS", RESIDENT, {"personal": 3, "iot": 1}, {})
        + b"\n"
        + snapshot("CMCC-GS", BAD_CHECK, {"personal": 1}, {})
        + b"\n\n"
        + snapshot("ICBC-GS", OTHER, {}, {"I": 1, "II": 2})
        + b"\n"
    )
    done = loader.load(jsonl)
    assert done.returncode == 1, done.stderr
    assert done.stdout == f"published 2 holdings snapshots to {loader.topic}; 1 rejected\n"
    assert done.stderr == f"{jsonl}:2: id_number: bad check digit\n"
    assert BAD_CHECK not in done.stderr

    csv = tmp_path / "holdings.csv"
    csv.write_text(
        "source,id_type,id_number,as_of,kind,class,count\n"
        f"CUCC-GS,resident_id,{RESIDENT},{AS_OF},sim,personal,2\n"
        f"ABC-GS,resident_id,{OTHER},{AS_OF},account,unknown,4\n"
        f"CUCC-GS,resident_id,{BAD_CHECK},{AS_OF},sim,personal,1\n"
        f"CUCC-GS,resident_id,{RESIDENT},{AS_OF},sim,iot,5\n"
    )
    done = loader.load(csv)
    assert done.returncode == 1, done.stderr
    assert done.stdout == f"published 2 holdings snapshots to {loader.topic}; 1 rejected\n"
    assert done.stderr == f"{csv}:4: id_number: bad check digit\n"
    assert BAD_CHECK not in done.stderr

    records = read_topic(loader.bootstrap, loader.topic)
    published = {record.key: orjson.loads(record.value) for record in records}
    assert len(records) == len(published) == 4
    assert {key: (v["sims"], v["accounts"]) for key, v in published.items()} == {
        f"CMCC-GS\x1f{RESIDENT}".encode(): ({"personal": 3, "iot": 1}, {}),
        f"ICBC-GS\x1f{OTHER}".encode(): ({}, {"I": 1, "II": 2}),
        f"CUCC-GS\x1f{RESIDENT}".encode(): ({"personal": 2, "iot": 5}, {}),
        f"ABC-GS\x1f{OTHER}".encode(): ({}, {"unknown": 4}),
    }
    for key, value in published.items():
        source, id_number = key.decode().split("\x1f")
        assert (value["schema"], value["source"], value["id_number"]) == (
            "duanka.holding/1",
            source,
            id_number,
        )
        assert value["as_of"] == AS_OF
    assert not any(BAD_CHECK.encode() in record.key for record in records)


def test_a_file_with_only_good_snapshots_exits_0(loader: Loader, tmp_path: Path) -> None:
    path = tmp_path / "holdings.jsonl"
    path.write_bytes(snapshot("CMCC-GS", RESIDENT, {"personal": 1}, {}) + b"\n")
    done = loader.load(path)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == f"published 1 holdings snapshots to {loader.topic}; 0 rejected\n"


def test_a_missing_topic_or_file_is_named(kafka_bootstrap: str, tmp_path: Path) -> None:
    path = tmp_path / "holdings.jsonl"
    missing = Loader(kafka_bootstrap, tmp_path, "holdings", f"holdings-{uuid.uuid4().hex[:12]}")
    done = missing.load(tmp_path / "nowhere.jsonl")
    assert done.returncode == 1
    assert "nowhere.jsonl: no such file" in done.stderr
    path.write_bytes(snapshot("CMCC-GS", RESIDENT, {"personal": 1}, {}) + b"\n")
    done = missing.load(path)
    assert done.returncode == 1
    assert f"topic {missing.topic} does not exist" in done.stderr
    assert "duanka topics create" in done.stderr

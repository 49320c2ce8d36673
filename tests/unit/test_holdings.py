"""Inventory snapshots (`duanka.holding/1`) and their files: JSON lines and CSV."""

from __future__ import annotations

import contextlib
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import resident_ids

from rules.holdings import (
    InvalidHolding,
    Snapshot,
    carrier_of,
    holding_from_fields,
    parse_holding,
    read_holdings,
)

RESIDENT = "11010519491231002X"  # the standard's own example
BAD_CHECK = "110105194912310021"
EXAMPLE: dict[str, Any] = {  # CHECK.md's example
    "schema": "duanka.holding/1",
    "source": "CMCC-GS",
    "id_type": "resident_id",
    "id_number": RESIDENT,
    "as_of": "2026-11-30T00:00:00+08:00",
    "sims": {"personal": 3, "iot": 0},
    "accounts": {},
}
CST = timezone(timedelta(hours=8))


def test_the_contract_example_reads_as_what_it_says() -> None:
    record = parse_holding(orjson.dumps(EXAMPLE))
    assert (record.id_type, record.id_number) == ("resident_id", RESIDENT)
    assert record.snapshot == Snapshot(
        "CMCC-GS", datetime(2026, 11, 30, tzinfo=CST), (("personal", 3),), ()
    )
    assert record.snapshot.sim_count("personal") == 3
    assert record.snapshot.sim_count("iot") == 0
    assert record.snapshot.account_count("I") == 0
    assert record.key() == b"CMCC-GS\x1f" + RESIDENT.encode()


@settings(max_examples=50)
@given(
    id_number=resident_ids(),
    sims=st.dictionaries(st.sampled_from(["personal", "iot"]), st.integers(0, 99)),
    accounts=st.dictionaries(st.sampled_from(["I", "II", "III", "unknown"]), st.integers(0, 9)),
)
def test_a_record_written_back_reads_the_same(
    id_number: str, sims: dict[str, int], accounts: dict[str, int]
) -> None:
    fields = EXAMPLE | {"id_number": id_number, "sims": sims, "accounts": accounts}
    record = parse_holding(orjson.dumps(fields))
    assert parse_holding(record.to_json()) == record
    for kind in ("personal", "iot"):
        assert record.snapshot.sim_count(kind) == sims.get(kind, 0)
    for account_class in ("I", "II", "III", "unknown"):
        assert record.snapshot.account_count(account_class) == accounts.get(account_class, 0)


@pytest.mark.parametrize(
    ("source", "carrier"),
    [
        ("CMCC-GS", "CMCC"),
        ("CMCC-SC", "CMCC"),
        ("ICBC-GS", "ICBC"),
        ("ALIPAY", "ALIPAY"),
        ("A-B-C", "A"),
    ],
)
def test_the_carrier_is_the_source_before_its_first_dash(source: str, carrier: str) -> None:
    assert carrier_of(source) == carrier


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"schema": "duanka.holding/2"}, "schema"),
        ({"source": ""}, "source"),
        ({"source": 7}, "source"),
        ({"id_type": "passport"}, "id_type"),
        ({"id_number": BAD_CHECK}, "id_number"),
        ({"as_of": "2026-11-30T00:00:00"}, "as_of"),  # no offset
        ({"as_of": "2026-02-30T00:00:00+08:00"}, "as_of"),
        ({"sims": {"personal": -1}}, "sims.personal"),
        ({"sims": {"personal": True}}, "sims.personal"),
        ({"sims": {"personal": 2.0}}, "sims.personal"),
        ({"sims": {"data": 1}}, "sims.data"),
        ({"sims": [3]}, "sims"),
        ({"accounts": {"IV": 1}}, "accounts.IV"),
    ],
)
def test_a_bad_record_names_its_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidHolding) as caught:
        parse_holding(orjson.dumps(EXAMPLE | change))
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("raw", "reason"),
    [(b"{", "not valid JSON"), (b"[]", "not a JSON object"), (b"x" * 70_000, "larger than 64 KiB")],
)
def test_what_is_not_a_record_at_all(raw: bytes, reason: str) -> None:
    with pytest.raises(InvalidHolding) as caught:
        parse_holding(raw)
    assert caught.value.field == "record"
    assert reason in caught.value.reason


def test_an_other_id_is_kept_as_given() -> None:
    record = holding_from_fields(EXAMPLE | {"id_type": "other", "id_number": "E12345678"})
    assert (record.id_type, record.id_number) == ("other", "E12345678")


def test_a_json_lines_file_with_a_bom_blank_lines_and_a_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "holdings.jsonl"
    bad = orjson.dumps(EXAMPLE | {"id_number": BAD_CHECK})
    path.write_bytes(b"\xef\xbb\xbf" + orjson.dumps(EXAMPLE) + b"\n\n" + bad + b"\r\n")
    lines = list(read_holdings(path))
    assert [line.number for line in lines] == [1, 3]
    assert lines[0].record is not None and lines[0].record.id_number == RESIDENT
    assert lines[1].record is None and lines[1].error is not None
    assert lines[1].error.field == "id_number"
    assert lines[1].raw == bad


HEADER = "source,id_type,id_number,as_of,kind,class,count\n"
AS_OF = "2026-11-30T00:00:00+08:00"


def test_the_rows_of_one_snapshot_make_one_record(tmp_path: Path) -> None:
    path = tmp_path / "holdings.csv"
    path.write_text(
        HEADER
        + f"CMCC-GS,resident_id,{RESIDENT},{AS_OF},sim,personal,3\n"
        + f"ICBC-GS,resident_id,{RESIDENT},{AS_OF},account,I,1\n"
        + f"CMCC-GS,resident_id,{RESIDENT},{AS_OF},sim,iot,2\n"
        + f"ICBC-GS,resident_id,{RESIDENT},{AS_OF},account,unknown,4\n",
        encoding="utf-8-sig",
    )
    lines = list(read_holdings(path))
    assert [line.number for line in lines] == [2, 3]
    snapshots = [line.record.snapshot for line in lines if line.record is not None]
    assert [(s.source, s.sims, s.accounts) for s in snapshots] == [
        ("CMCC-GS", (("personal", 3), ("iot", 2)), ()),
        ("ICBC-GS", (), (("I", 1), ("unknown", 4))),
    ]


@pytest.mark.parametrize(
    ("rows", "field"),
    [
        ([f"CMCC-GS,resident_id,{RESIDENT},{AS_OF},card,personal,3"], "kind"),
        ([f"CMCC-GS,resident_id,{RESIDENT},{AS_OF},sim,data,3"], "sims.data"),
        ([f"CMCC-GS,resident_id,{RESIDENT},{AS_OF},sim,personal,-3"], "count"),
        ([f"CMCC-GS,resident_id,{RESIDENT},{AS_OF},sim,personal,three"], "count"),
        (
            [
                f"CMCC-GS,resident_id,{RESIDENT},{AS_OF},sim,personal,3",
                f"CMCC-GS,resident_id,{RESIDENT},{AS_OF},sim,personal,4",
            ],
            "class",
        ),
        ([f"CMCC-GS,resident_id,{BAD_CHECK},{AS_OF},sim,personal,3"], "id_number"),
        ([f"CMCC-GS,resident_id,{RESIDENT},{AS_OF},sim,personal"], "record"),
    ],
)
def test_a_bad_csv_snapshot_names_its_field(tmp_path: Path, rows: list[str], field: str) -> None:
    path = tmp_path / "holdings.csv"
    path.write_text(HEADER + "\n".join(rows) + "\n")
    lines = list(read_holdings(path))
    assert len(lines) == 1
    assert lines[0].record is None and lines[0].error is not None
    assert lines[0].error.field == field
    assert lines[0].number == 2


def test_a_csv_file_with_another_header_is_refused_as_a_whole(tmp_path: Path) -> None:
    path = tmp_path / "holdings.csv"
    path.write_text(f"source,id_number,count\nCMCC-GS,{RESIDENT},3\n")
    lines = list(read_holdings(path))
    assert len(lines) == 1
    assert lines[0].error is not None and "header" in lines[0].error.reason


def test_a_reader_stopped_early_closes_its_file(tmp_path: Path) -> None:
    path = tmp_path / "holdings.jsonl"
    path.write_bytes(orjson.dumps(EXAMPLE) + b"\n" + orjson.dumps(EXAMPLE) + b"\n")
    lines = read_holdings(path)
    next(lines)
    lines.close()  # as `with closing(read_holdings(path))` does when its user stops
    assert str(path) not in open_files()


def open_files() -> list[str]:
    """The files this process has open (Linux)."""
    names = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(FileNotFoundError):  # the listing's own descriptor, gone
            names.append(os.readlink(f"/proc/self/fd/{fd}"))
    return names

"""Watchlist records (`duanka.watch/1`) and files: JSON lines and CSV."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rulekit import resident
from strategies import DROP, other_ids, resident_ids

from rules.errors import InvalidRecord
from rules.state import WatchEntry
from rules.watchlist import (
    InvalidWatch,
    WatchRecord,
    is_long,
    parse_watch,
    read_watchlist,
    watch_from_fields,
)

RESIDENT = "11010519491231002X"  # the standard's own example
BAD_CHECK = "110105194912310021"
EXAMPLE: dict[str, Any] = {
    "schema": "duanka.watch/1",
    "id_number": RESIDENT,
    "scope": "telecom",
    "since": "2025-03-01",
    "until": "2030-03-01",
    "list": "credit_punishment",
    "reason": "sold two bank cards (case 2025-118)",
}
EXAMPLE_ENTRY = WatchEntry(
    "telecom",
    date(2025, 3, 1),
    date(2030, 3, 1),
    "credit_punishment",
    "sold two bank cards (case 2025-118)",
)


def record(**changes: Any) -> bytes:
    obj = dict(EXAMPLE)
    for key, value in changes.items():
        if value is DROP:
            obj.pop(key)
        else:
            obj[key] = value
    return orjson.dumps(obj)


def test_the_contract_example_parses() -> None:
    assert parse_watch(record()) == WatchRecord("resident_id", RESIDENT, EXAMPLE_ENTRY)


def test_an_optional_basis_is_kept_and_written_back() -> None:
    basis = "2024 joint punishment, conviction"
    parsed = parse_watch(record(basis=basis))
    assert parsed.entry.basis == basis
    assert parse_watch(parsed.to_json()) == parsed
    assert b"basis" not in parse_watch(record()).to_json()
    with pytest.raises(InvalidRecord) as caught:
        parse_watch(record(basis=["x"]))
    assert (caught.value.field, caught.value.reason) == ("basis", "must be a string")


@pytest.mark.parametrize(
    ("since", "until", "long"),
    [
        ("2025-03-01", "2030-03-01", False),  # five years exactly: the regime's most
        ("2025-03-01", "2030-03-02", True),
        ("2024-12-01", "2027-12-01", False),
        ("2024-02-29", "2029-03-01", False),  # from 29 February: up to 1 March
        ("2024-02-29", "2029-03-02", True),
    ],
)
def test_periods_over_five_years_are_long(since: str, until: str, long: bool) -> None:
    assert is_long(parse_watch(record(since=since, until=until)).entry) is long


@pytest.mark.parametrize(
    ("changes", "id_type", "id_number"),
    [
        ({}, "resident_id", RESIDENT),
        ({"id_number": RESIDENT.lower()}, "resident_id", RESIDENT),  # lowercase x
        ({"id_number": "E12345678"}, "other", "E12345678"),
        ({"id_number": "E12345678", "id_type": "other"}, "other", "E12345678"),
        ({"id_type": "other"}, "other", RESIDENT),  # said so: a permit with 18 characters
        ({"id_type": ""}, "resident_id", RESIDENT),  # empty: inferred
    ],
)
def test_id_type_is_inferred_unless_given(
    changes: dict[str, Any], id_type: str, id_number: str
) -> None:
    parsed = parse_watch(record(**changes))
    assert (parsed.id_type, parsed.id_number) == (id_type, id_number)


@pytest.mark.parametrize(
    ("raw", "field", "reason"),
    [
        (b"{not json", "record", "not valid JSON"),
        (b"[1, 2]", "record", "not a JSON object"),
        (b" " * (64 * 1024 + 1), "record", "larger than 64 KiB (65537 bytes)"),
        (record(schema="duanka.watch/2"), "schema", "must be duanka.watch/1"),
        (record(schema=DROP), "schema", "must be duanka.watch/1"),
        (record(id_number=DROP), "id_number", "missing"),
        (record(id_number=""), "id_number", "missing"),
        (record(id_number=11010519491231002), "id_number", "must be a string"),
        (record(id_number="e123"), "id_number", "must contain only A-Z, 0-9 and '-'"),
        (record(id_number="E" * 33), "id_number", "must be 1 to 32 characters"),
        (record(id_type="resident_id", id_number=BAD_CHECK), "id_number", "bad check digit"),
        (record(id_type="passport"), "id_type", "unknown value 'passport'"),
        (record(scope="phone"), "scope", "unknown value 'phone' (expected all, bank, telecom)"),
        (record(scope=DROP), "scope", "missing"),
        (record(since="2025-3-1"), "since", "not a date like 2025-03-01"),
        (record(since="2025-02-30"), "since", "not a date like 2025-03-01"),
        (record(since="2025-03-01T00:00:00+08:00"), "since", "not a date like 2025-03-01"),
        (record(since=20250301), "since", "must be a string"),
        (record(until=DROP), "until", "missing"),
        (record(until="2025-03-01"), "until", "must be after since"),  # since == until
        (record(until="2024-03-01"), "until", "must be after since"),
        (record(list=DROP), "list", "missing"),
        (record(reason=5), "reason", "must be a string"),
    ],
)
def test_invalid_records_name_the_field_and_reason(raw: bytes, field: str, reason: str) -> None:
    with pytest.raises(InvalidWatch) as caught:
        parse_watch(raw)
    assert (caught.value.field, caught.value.reason) == (field, reason)
    assert isinstance(caught.value, InvalidRecord)


def test_reason_is_optional() -> None:
    assert parse_watch(record(reason=DROP)).entry.reason == ""
    assert parse_watch(record(reason=None)).entry.reason == ""


@given(
    st.one_of(
        st.tuples(st.just("resident_id"), resident_ids()),
        st.tuples(st.just("other"), other_ids),
    ),
    st.sampled_from(["telecom", "bank", "all"]),
    st.dates(min_value=date(1000, 1, 1), max_value=date(9000, 1, 1)),
    st.integers(1, 3650),
    st.text(max_size=20),
)
@settings(max_examples=50, deadline=None)
def test_records_round_trip_through_json(
    person: tuple[str, str], scope: str, since: date, days: int, reason: str
) -> None:
    until = date.fromordinal(since.toordinal() + days)
    id_type, id_number = person
    watched = WatchRecord(id_type, id_number, WatchEntry(scope, since, until, "cp", reason))
    assert parse_watch(watched.to_json()) == watched


def test_fields_of_a_csv_row_are_strings() -> None:
    row = {k: str(v) for k, v in EXAMPLE.items()}
    assert watch_from_fields(row).entry == EXAMPLE_ENTRY


# ---------------------------------------------------------------- files


def lines_of(path: Path) -> list[tuple[int, str | None, str | None]]:
    """(line number, id number or None, "field: reason" or None) of each line read."""
    return [
        (
            line.number,
            line.record.id_number if line.record else None,
            str(line.error) if line.error else None,
        )
        for line in read_watchlist(path)
    ]


SECOND_PERSON = resident("53", 7)


def test_json_lines_file_with_blank_and_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "list.jsonl"
    path.write_bytes(
        b"\r\n".join(
            [
                record(),
                b"",
                record(id_number=SECOND_PERSON, scope="all"),
                record(scope="phone"),
                b"   ",
                b"{oops",
                record(since="2030-03-01"),
            ]
        )
        + b"\r\n"
    )
    assert lines_of(path) == [
        (1, RESIDENT, None),
        (3, SECOND_PERSON, None),
        (4, None, "scope: unknown value 'phone' (expected all, bank, telecom)"),
        (6, None, "record: not valid JSON"),
        (7, None, "until: must be after since"),
    ]
    lines = list(read_watchlist(path))
    assert lines[1].record is not None
    assert lines[1].record.entry.scope == "all"
    assert lines[3].raw == b"{oops"  # as read, without the line ending


def test_json_lines_file_with_a_bom(tmp_path: Path) -> None:
    path = tmp_path / "list.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + record() + b"\n" + record(id_number=SECOND_PERSON) + b"\n")
    assert lines_of(path) == [(1, RESIDENT, None), (2, SECOND_PERSON, None)]


CSV_HEADER = "id_number,scope,since,until,list,reason"


@pytest.mark.parametrize("bom", ["", "\ufeff"])
def test_csv_file(tmp_path: Path, bom: str) -> None:
    path = tmp_path / "list.CSV"
    path.write_text(
        bom
        + "\r\n".join(
            [
                CSV_HEADER,
                f"{RESIDENT},telecom,2025-03-01,2030-03-01,credit_punishment,"
                '"sold two bank cards (case 2025-118)"',
                f"{SECOND_PERSON},bank,2025-03-01,2025-03-01,cp,",
                "E12345678,all,2025-03-01,2030-03-01,cp",
                "E12345678,all,2025-03-01",
                f"{RESIDENT},all,2025-03-01,2030-03-01,cp,a reason,an extra field",
                f"{RESIDENT.lower()},all,2025/03/01,2030-03-01,cp,",
            ]
        )
        + "\r\n",
        encoding="utf-8",
    )
    assert lines_of(path) == [
        (2, RESIDENT, None),
        (3, None, "until: must be after since"),
        (4, "E12345678", None),
        (5, None, "until: missing"),
        (6, None, "record: 1 more field(s) than the header"),
        (7, None, "since: not a date like 2025-03-01"),
    ]
    first = next(iter(read_watchlist(path)))
    assert first.record == WatchRecord("resident_id", RESIDENT, EXAMPLE_ENTRY)


def test_csv_with_schema_and_id_type_columns(tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    path.write_text(
        "schema,id_type,id_number,scope,since,until,list\n"
        f"duanka.watch/1,other,{RESIDENT},all,2025-03-01,2030-03-01,cp\n"
        f",,{RESIDENT},all,2025-03-01,2030-03-01,cp\n"
        f"duanka.watch/9,,{RESIDENT},all,2025-03-01,2030-03-01,cp\n"
        f",passport,{RESIDENT},all,2025-03-01,2030-03-01,cp\n",
        encoding="utf-8",
    )
    lines = list(read_watchlist(path))
    assert [(line.number, str(line.error) if line.error else None) for line in lines] == [
        (2, None),
        (3, None),
        (4, "schema: must be duanka.watch/1"),
        (5, "id_type: unknown value 'passport'"),
    ]
    assert [line.record.id_type for line in lines[:2] if line.record] == ["other", "resident_id"]
    assert orjson.loads(lines[2].raw)["schema"] == "duanka.watch/9"


def test_a_mistyped_resident_id_is_reported_not_taken_for_another_document() -> None:
    with pytest.raises(InvalidWatch) as caught:
        parse_watch(record(id_number=BAD_CHECK))
    assert (caught.value.field, caught.value.reason) == ("id_number", "bad check digit")

"""`duanka holdings load` without a broker: what is sent, what is printed, and the line count."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from tqdm import tqdm

from producers import holdings
from producers.holdings import count_lines, rejection, send_snapshots
from rules.holdings import read_holdings

RESIDENT = "11010519491231002X"
OTHER = "110105198001010016"
BAD_CHECK = "110105194912310021"
AS_OF = "2026-11-30T00:00:00+08:00"
HEADER = "source,id_type,id_number,as_of,kind,class,count\n"
TOPIC = "screening.holdings"


def snapshot(id_number: str, **change: Any) -> bytes:
    record = {
        "schema": "duanka.holding/1",
        "source": "CMCC-GS",
        "id_type": "resident_id",
        "id_number": id_number,
        "as_of": AS_OF,
        "sims": {"personal": 3},
        "accounts": {},
    }
    return orjson.dumps(record | change)


class Future:
    def __init__(self, error: Exception | None) -> None:
        self.error = error

    def add_errback(self, errback: Callable[..., None], *args: Any) -> None:
        if self.error is not None:
            errback(*args, self.error)


class Producer:
    """Takes what is sent; fails the sends whose turn is in `failing` (from 0)."""

    def __init__(self, failing: frozenset[int] = frozenset()) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.failing = failing
        self.flushed = False

    def send(self, topic: str, key: bytes, value: bytes) -> Future:
        failed = len(self.sent) in self.failing
        self.sent.append((topic, key, value))
        return Future(RuntimeError("TopicAuthorizationFailedError") if failed else None)

    def flush(self) -> None:
        self.flushed = True


def send(path: Path, producer: Producer) -> holdings.LoadSummary:
    with tqdm(disable=True) as bar:
        return send_snapshots(path, producer, TOPIC, bar)


def test_snapshots_are_keyed_by_source_and_id_number_and_bad_ones_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "holdings.jsonl"
    lines = [snapshot(RESIDENT), b"", snapshot(BAD_CHECK), snapshot(OTHER, source="CUCC-GS")]
    path.write_bytes(b"\n".join(lines) + b"\n")
    producer = Producer()
    summary = send(path, producer)
    assert (summary.published, summary.rejected, summary.unacknowledged) == (2, 1, 0)
    assert [(topic, key) for topic, key, _ in producer.sent] == [
        (TOPIC, b"CMCC-GS\x1f" + RESIDENT.encode()),
        (TOPIC, b"CUCC-GS\x1f" + OTHER.encode()),
    ]
    assert orjson.loads(producer.sent[0][2])["sims"] == {"personal": 3}
    assert producer.flushed
    out = capsys.readouterr()
    assert out.err == f"{path}:3: id_number: bad check digit\n"
    assert out.out == ""


def test_a_csv_file_is_sent_one_snapshot_per_source_and_identity(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "holdings.csv"
    path.write_text(
        HEADER
        + f"CMCC-GS,resident_id,{RESIDENT},{AS_OF},sim,personal,3\n"
        + f"CMCC-GS,resident_id,{RESIDENT},{AS_OF},sim,iot,1\n"
        + f"ICBC-GS,resident_id,{BAD_CHECK},{AS_OF},account,I,1\n"
    )
    producer = Producer()
    summary = send(path, producer)
    assert (summary.published, summary.rejected) == (1, 1)
    [(_, key, value)] = producer.sent
    assert key == b"CMCC-GS\x1f" + RESIDENT.encode()
    assert orjson.loads(value)["sims"] == {"personal": 3, "iot": 1}
    assert capsys.readouterr().err == f"{path}:4: id_number: bad check digit\n"


def test_the_load_stops_at_the_first_send_the_brokers_refuse(tmp_path: Path) -> None:
    path = tmp_path / "holdings.jsonl"
    path.write_bytes(b"".join(snapshot(RESIDENT, source=f"S{n}") + b"\n" for n in range(5)))
    producer = Producer(failing=frozenset({1}))
    summary = send(path, producer)
    assert len(producer.sent) == 2
    assert summary.unacknowledged == 1
    assert summary.first_failure == "line 2: TopicAuthorizationFailedError"


@pytest.mark.parametrize(
    ("content", "name", "shown"),
    [
        (  # the id number in the id_type field: columns swapped
            snapshot("resident_id", id_type=RESIDENT),
            "h.jsonl",
            "id_type: unknown value '1101**********002X'",
        ),
        (
            (HEADER + f"CMCC-GS,{RESIDENT},resident_id,{AS_OF},sim,personal,3\n").encode(),
            "h.csv",
            "id_type: unknown value '1101**********002X'",
        ),
        (
            (HEADER + f"CMCC-GS,resident_id,{RESIDENT},{AS_OF},{RESIDENT},x,3\n").encode(),
            "h.csv",
            "kind: unknown value '1101**********002X' (expected sim, account)",
        ),
        (  # an `other` id number, which has no shape to spot, repeated in a kind
            snapshot("PASSPORT-E1234567", id_type="other", sims={"PASSPORT-E1234567": 1}),
            "h.jsonl",
            "sims.PASS*********4567: unknown kind (expected one of: personal, iot)",
        ),
    ],
)
def test_a_reason_never_shows_an_id_number(
    tmp_path: Path, content: bytes, name: str, shown: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content + b"\n")
    [line] = read_holdings(path)
    assert rejection(line) == shown


def test_a_reason_without_an_id_number_is_printed_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "holdings.jsonl"
    path.write_bytes(snapshot(RESIDENT, sims={"personal": -1}) + b"\n")
    [line] = read_holdings(path)
    assert rejection(line) == "sims.personal: must be a whole number from 0 to 1000000"


@pytest.mark.parametrize(
    ("content", "count"),
    [(b"", 0), (b"a\n", 1), (b"a", 1), (b"a\nb", 2), (b"a\r\nb\r\n", 2), (b"\n\n\n", 3)],
)
def test_lines_are_counted_over_bytes(tmp_path: Path, content: bytes, count: int) -> None:
    path = tmp_path / "f"
    path.write_bytes(content)
    assert count_lines(path) == count


def test_lines_are_counted_across_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(holdings, "CHUNK", 3)
    path = tmp_path / "f"
    path.write_bytes(b"ab\ncd\n\nefgh\nij")
    assert count_lines(path) == 5

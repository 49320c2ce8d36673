"""`duanka holdings load`: publish carriers' and banks' inventory snapshots to the compacted topic.

Each snapshot is keyed by its source and id number (rules/holdings.py), so a
later snapshot for the same (source, identity) replaces the earlier one when
the topic is compacted. A file may hold tens of millions of snapshots: JSON
lines are read and sent as they go (a CSV file's rows are gathered into
snapshots first, see rules/holdings.py).
"""

from __future__ import annotations

import re
import sys
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import orjson
from kafka import KafkaProducer
from tqdm import tqdm

from producers.produce import ProduceError, make_producer
from rules.config import Settings
from rules.holdings import CSV_COLUMNS, HoldingLine, read_holdings
from rules.pseudonym import mask_id
from stream.topics import require_topics

CHUNK = 1 << 20
# A resident id number (or an old 15-digit one) in a message: masked before it is printed.
_ID_NUMBER_SHAPE = re.compile(r"[0-9]{15}(?:[0-9]{2}[0-9Xx])?")
_SHORTEST_MASKED = 6  # shorter values would mask ordinary words of the reason


@dataclass
class LoadSummary:
    """What a load did: snapshots handed to the producer, rejected, and not acknowledged."""

    published: int = 0
    rejected: int = 0
    unacknowledged: int = 0
    first_failure: str = ""

    def failed(self, number: int, exc: BaseException) -> None:
        if not self.unacknowledged:
            self.first_failure = f"line {number}: {exc}"
        self.unacknowledged += 1


def load_file(path: Path, settings: Settings, progress: bool = True) -> int:
    """Publish every valid snapshot; report the bad ones; exit 1 if there were any."""
    if not path.is_file():
        raise ProduceError(f"{path}: no such file")
    topic = settings.topics.holdings
    require_topics(settings, [topic])
    shown = progress and sys.stderr.isatty()
    producer = make_producer(settings.bootstrap, settings.security)
    try:
        total = count_lines(path) if shown else None
        with tqdm(total=total, unit=" lines", disable=not shown, file=sys.stderr) as bar:
            summary = send_snapshots(path, producer, topic, bar)
    finally:
        producer.close()
    if summary.unacknowledged:
        raise ProduceError(
            f"{summary.unacknowledged} snapshots were not acknowledged (the load stopped "
            f"sending at the first), first: {summary.first_failure}"
        )
    print(
        f"published {summary.published} holdings snapshots to {topic}; {summary.rejected} rejected"
    )
    return 1 if summary.rejected else 0


def send_snapshots(path: Path, producer: KafkaProducer, topic: str, bar: tqdm) -> LoadSummary:
    """Send each valid snapshot of `path` and print each rejected one; stop at a failed send."""
    summary = LoadSummary()
    with closing(read_holdings(path)) as lines:
        for line in lines:
            bar.update(max(0, line.number - bar.n))
            if line.record is None:
                summary.rejected += 1
                tqdm.write(f"{path}:{line.number}: {rejection(line)}", file=sys.stderr)
                continue
            if summary.unacknowledged:
                break  # the brokers refuse this topic or are gone: the rest would fail too
            future = producer.send(topic, key=line.record.key(), value=line.record.to_json())
            future.add_errback(summary.failed, line.number)
            summary.published += 1
    producer.flush()
    bar.update(max(0, (bar.total or 0) - bar.n))
    return summary


def rejection(line: HoldingLine) -> str:
    """`field: reason` of a rejected line, never its id number (masked if the reason repeats it).

    A reason may quote a value, and a value can be an id number in the wrong
    field (a CSV file with its columns swapped, say).
    """
    message = str(line.error)
    for value in _id_numbers(line.raw):
        message = message.replace(value, mask_id(value))
    return _ID_NUMBER_SHAPE.sub(lambda match: mask_id(match.group()), message)


def _id_numbers(raw: bytes) -> list[str]:
    """The id numbers a rejected record gives: its field, or its CSV rows' column."""
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return []
    if isinstance(record, dict):
        values = [record.get("id_number")]
    elif isinstance(record, list):
        rows = record if all(isinstance(row, list) for row in record) else [record]
        column = CSV_COLUMNS.index("id_number")
        values = [row[column] for row in rows if len(row) > column]
    else:
        return []
    found = {value.strip() for value in values if isinstance(value, str)}
    return sorted((v for v in found if len(v) >= _SHORTEST_MASKED), key=len, reverse=True)


def count_lines(path: Path) -> int:
    """The lines of a file, counted over its bytes: the progress bar's total."""
    count = 0
    last = b"\n"
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (last != b"\n")

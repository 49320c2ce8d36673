"""`duanka watchlist`: publish credit-punishment entries to the compacted topic.

Each entry is keyed by its id number, so a newer record replaces an older
one when the topic is compacted, and a null record removes it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from producers.produce import ProduceError, make_producer
from rules.config import Settings
from rules.idnumber import OTHER_ID, RESIDENT_ID, id_number_problem, normalise_id_number
from rules.watchlist import read_watchlist
from stream.topics import require_topics


def load_file(path: Path, settings: Settings) -> int:
    """Publish every valid entry; report the bad lines; exit 1 if there were any."""
    if not path.is_file():
        raise ProduceError(f"{path}: no such file")
    lines = list(read_watchlist(path))
    bad = [line for line in lines if line.record is None]
    for line in bad:
        print(f"{path}:{line.number}: {line.error}", file=sys.stderr)
    require_topics(settings, [settings.topics.watchlist])
    producer = make_producer(settings.bootstrap, settings.security)
    failures: list[str] = []
    try:
        for line in lines:
            if line.record is None:
                continue
            future = producer.send(
                settings.topics.watchlist,
                key=line.record.id_number.encode(),
                value=line.record.to_json(),
            )
            future.add_errback(lambda exc, n=line.number: failures.append(f"line {n}: {exc}"))
        producer.flush()
    finally:
        producer.close()
    if failures:
        raise ProduceError(f"{len(failures)} entries were not acknowledged, first: {failures[0]}")
    sent = len(lines) - len(bad)
    print(f"published {sent} watchlist entries to {settings.topics.watchlist}; {len(bad)} rejected")
    return 1 if bad else 0


def remove_entry(id_number: str, settings: Settings) -> int:
    """Publish a null record for `id_number`: the engine drops the entry."""
    id_type = RESIDENT_ID if id_number_problem(RESIDENT_ID, id_number) is None else OTHER_ID
    problem = id_number_problem(id_type, id_number)
    if problem is not None:
        raise ProduceError(f"id_number: {problem}")
    require_topics(settings, [settings.topics.watchlist])
    producer = make_producer(settings.bootstrap, settings.security)
    try:
        producer.send(
            settings.topics.watchlist,
            key=normalise_id_number(id_type, id_number).encode(),
            value=None,
        ).get(timeout=30)
    finally:
        producer.close()
    print(f"removed the watchlist entry (a null record on {settings.topics.watchlist})")
    return 0

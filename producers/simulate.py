"""`duanka simulate`: a simulated province to files, and optionally live into Kafka.

The files are what carriers, banks and list keepers would send, plus the
ground truth:

    events.jsonl     duanka.event/1, in event-time order
    watchlist.jsonl  duanka.watch/1
    holdings.jsonl   duanka.holding/1: what each person held at each carrier
                     and bank when the period began
    implicated.jsonl duanka.implicated/1: the numbers the police found in fraud
                     cases, by reported_at (some after the period)
    truth.jsonl      duanka.case/1: each labelled case, its rule and its events

With --to-kafka the watchlist and the holdings are published to their
compacted topics and the events are sent, in event-time order, at a steady
rate, as a province's systems would send them through a day.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import orjson

from producers.inventory import holding_lines
from producers.simulator import World, iter_lines, simulate
from rules.config import Settings


@dataclass(frozen=True, slots=True)
class WorldFiles:
    events: Path
    watchlist: Path
    truth: Path
    holdings: Path
    implicated: Path

    @classmethod
    def under(cls, directory: Path) -> WorldFiles:
        return cls(
            directory / "events.jsonl",
            directory / "watchlist.jsonl",
            directory / "truth.jsonl",
            directory / "holdings.jsonl",
            directory / "implicated.jsonl",
        )


def write_world(world: World, directory: Path) -> WorldFiles:
    """Write the events, watchlist, holdings, implicated numbers and ground truth of `world`."""
    directory.mkdir(parents=True, exist_ok=True)
    files = WorldFiles.under(directory)
    with files.events.open("wb") as out:
        for line in iter_lines(world.events):
            out.write(line + b"\n")
    files.watchlist.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in world.watchlist))
    with files.holdings.open("wb") as out:
        for line in holding_lines(world.holdings, world.as_of):
            out.write(line + b"\n")
    files.implicated.write_bytes(b"".join(r.to_json() + b"\n" for r in world.implicated))
    files.truth.write_bytes(b"".join(case.to_json() + b"\n" for case in world.cases))
    return files


def describe(world: World, days: int) -> str:
    kinds = Counter(event["event_type"] for event in world.events)
    parts = ", ".join(f"{count:,} {kind}" for kind, count in sorted(kinds.items()))
    expected = sum(case.expected for case in world.cases)
    return (
        f"{len(world.events):,} events ({parts}) by {world.people:,} people at "
        f"{world.outlets:,} outlets over {days} days; {len(world.watchlist)} watchlist entries; "
        f"{len(world.holdings):,} holdings snapshots; "
        f"{len(world.implicated):,} numbers found in fraud cases; "
        f"{expected} labelled cases and {len(world.cases) - expected} look-alikes"
    )


def run_simulate(
    settings: Settings,
    out: Path,
    events: int,
    days: int,
    seed: int,
    start: date,
    rounds: int | None,
    to_kafka: bool,
    rate: float,
    progress: bool = True,
) -> int:
    world = simulate(events, days=days, seed=seed, start=start, rounds=rounds)
    files = write_world(world, out)
    print(describe(world, days))
    print(
        f"wrote {files.events}, {files.watchlist}, {files.holdings}, {files.implicated} "
        f"and {files.truth}"
    )
    if not to_kafka:
        print(
            f"next: duanka replay {files.events} --watchlist {files.watchlist} "
            f"--holdings {files.holdings} --implicated {files.implicated} "
            f"--out {out / 'alerts.jsonl'} "
            f"&& duanka evaluate {files.truth} {out / 'alerts.jsonl'}"
        )
        return 0
    from producers import holdings, watchlist
    from producers.produce import produce_file

    # the lists go first, so that the first events are screened with them
    watchlist.load_file(files.watchlist, settings)
    holdings.load_file(files.holdings, settings, progress=progress)
    summary = produce_file(files.events, settings, progress=progress, rate=rate or None)
    print(summary.describe(str(files.events)))
    return 0

"""stream/internals.py against the real broker: what the stages write is what faust reads back.

The stages write their state to faust's RocksDB stores and changelog topics
themselves (stream/internals.py). After a run, each store must hold exactly
the newest changelog value of every key, and the changelog offset faust
resumes recovery from; a worker started on an empty data directory must
rebuild the same stores from those changelogs through faust's own recovery.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import rocksdict
from workerkit import WorkerRun, read_topic, wait_screened, write_world

from producers.simulator import Simulator
from stream.topics import TABLES

OFFSET_KEY = b"__faust\x00offset__"


def stores(run: WorkerRun) -> dict[tuple[str, int], dict[bytes, bytes]]:
    """Every table partition's RocksDB contents, read after the worker stopped."""
    found = {}
    for table in TABLES:
        for path in sorted((run.root / "data" / "v1" / "tables").glob(f"{table}-*.db")):
            partition = int(path.name.removesuffix(".db").rsplit("-", 1)[1])
            db = rocksdict.Rdict(str(path), options=rocksdict.Options(raw_mode=True))
            try:
                found[(table, partition)] = {bytes(k): bytes(v) for k, v in db.items()}
            finally:
                db.close()
    return found


def changelogs(run: WorkerRun) -> dict[tuple[str, int], tuple[dict[bytes, bytes], int]]:
    """Each changelog partition's newest value per key, and its last offset."""
    found: dict[tuple[str, int], tuple[dict[bytes, bytes], int]] = {}
    for table in TABLES:
        for record in read_topic(run.bootstrap, f"{run.app_id}-{table}-changelog"):
            values, _ = found.get((table, record.partition), ({}, -1))
            values[record.key] = record.value
            found[(table, record.partition)] = (values, record.offset)
    return found


def assert_stores_match_changelogs(run: WorkerRun) -> None:
    logs, dbs = changelogs(run), stores(run)
    assert logs, "nothing was written to the changelogs"
    for (table, partition), (values, last) in logs.items():
        db = dbs.get((table, partition))
        assert db is not None, f"no store for {table} partition {partition}"
        assert int(db.pop(OFFSET_KEY)) == last, f"{table}-{partition}: persisted offset"
        assert db == values, f"{table}-{partition}: store and changelog differ"


def test_stores_hold_the_changelogs_and_faust_recovers_them(
    worker_run: WorkerRun, tmp_path: Path
) -> None:
    run = worker_run
    world = Simulator(seed=35, days=30).build(ordinary_people=600)
    events, watchlist, holdings = write_world(world, tmp_path)
    run.load_lists(watchlist, holdings)
    run.duanka("produce", "--quiet", str(events))
    run.start()
    wait_screened(run, [run])
    run.stop()
    assert_stores_match_changelogs(run)

    shutil.rmtree(run.root / "data")  # a new machine: faust recovers the stores
    run.start()
    run.wait_ready()
    run.stop()
    assert_stores_match_changelogs(run)

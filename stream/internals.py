"""Every use of faust-streaming's private parts, in one place.

The stages keep their state in faust's tables (RocksDB, one database per
partition, a changelog topic each), so that faust's recovery, standbys and
partition assignment keep working, but they write it their own way: a
partition's changed keys as one RocksDB write batch, with the changelog
offset faust resumes recovery from, after the changelog records themselves
went to Kafka as one produce batch (stream/flush.py). Faust has no public
call for either. What this module relies on, checked against the real broker
by tests/integration/test_internals.py, and pinned by faust-streaming==0.15.3
in pyproject.toml:

- `Store._db_for_partition(partition)`: the partition's open `rocksdict.Rdict`
  (raw keys and values), opened by faust when the partition is assigned;
- `Store.offset_key`: the key under which faust keeps the last changelog
  offset applied to that database (`persisted_offset`);
- `Store._dbs`: the open databases, for the state-size metrics;
- `Consumer._committed_offset`: what faust last committed per partition, for
  the lag metrics;
- `Consumer._thread._consumer._fetcher` (faust's aiokafka consumer, in its
  thread, and aiokafka's fetcher): faust makes its consumer fetch as soon as
  one byte is there, which under a steady trickle of envelopes is a fetch
  per envelope for the broker and for faust's consumer thread; faust has no
  setting for it, so `batch_fetches` sets the fetcher's minimum and wait;
- `Worker._schedule_shutdown(signal)` (mode-streaming, faust's service
  library): what SIGTERM and SIGINT call; wrapped to start the stop deadline;
- `Consumer._commit_offsets(offsets)`: commits offsets in faust's consumer
  group (it drops those of partitions no longer assigned, and notes what it
  committed). The stages' topics are made with `acks=False`, so faust itself
  commits nothing there: the stages commit what they have flushed (see
  stream/flush.py for why faust's own acknowledgements would not do).
- `Web.blueprints._enabled` (faust's web driver): the built-in pages faust
  will mount when the worker starts; `drop_faust_pages` takes them out.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable, Mapping
from typing import Any

import rocksdict

from stream.cache import Row


class TablePartition:
    """One partition of a faust table's RocksDB store, read and written directly."""

    def __init__(self, table: Any, partition: int) -> None:
        self.store = table.data
        self.partition = partition
        self.db: Any = self.store._db_for_partition(partition)

    def get(self, key: bytes) -> bytes | None:
        value: bytes | None = self.db.get(key)
        return value

    def write(self, rows: list[Row], changelog_offset: int) -> None:
        """Write `rows` and the changelog offset they reach, as one batch."""
        batch = rocksdict.WriteBatch(raw_mode=True)
        for key, value in rows:
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        batch.put(self.store.offset_key, str(changelog_offset).encode())
        self.db.write(batch)

    def persisted_offset(self) -> int | None:
        raw = self.db.get(self.store.offset_key)
        return None if raw is None else int(raw)


def open_databases(table: Any) -> Mapping[int, Any]:
    """The RocksDB databases faust has open for `table`, by partition ({} if not RocksDB)."""
    dbs: Mapping[int, Any] | None = getattr(table.data, "_dbs", None)
    return {} if dbs is None else dbs


def batch_fetches(app: Any, min_bytes: int, max_wait_ms: int) -> None:
    """Make faust's consumer wait for `min_bytes` (or `max_wait_ms`) before a fetch returns."""
    consumer = getattr(getattr(app.consumer, "_thread", None), "_consumer", None)
    fetcher = getattr(consumer, "_fetcher", None)
    if fetcher is not None:
        fetcher._fetch_min_bytes = min_bytes
        fetcher._fetch_max_wait_ms = max_wait_ms


async def commit_offsets(consumer: Any, offsets: Mapping[Any, int]) -> bool:
    """Commit `offsets` (topic partition -> next offset to read) in faust's consumer group."""
    committed: bool = await consumer._commit_offsets(offsets)
    return committed


def committed_offsets(consumer: Any) -> Mapping[Any, int | None]:
    """The offsets faust last committed (or read as committed), by topic partition."""
    committed: Mapping[Any, int | None] = getattr(consumer, "_committed_offset", {})
    return committed


def stop_within(worker: Any, seconds: float, pending: Callable[[], str]) -> None:
    """Once SIGTERM or SIGINT asks `worker` to stop, exit with 1 if it has not after `seconds`.

    A stop waits for Kafka (a last flush, the consumer leaving its group);
    with the brokers gone it could wait for minutes. Past the deadline the
    process says what it leaves undone (`pending()`) and exits at once.
    """
    schedule = worker._schedule_shutdown

    def schedule_with_deadline(signal: Any) -> None:
        if not getattr(worker, "_duanka_deadline", None):
            timer = threading.Timer(seconds, _abandon, args=(seconds, pending))
            timer.daemon = True
            timer.start()
            worker._duanka_deadline = timer
        schedule(signal)

    worker._schedule_shutdown = schedule_with_deadline


def _abandon(seconds: float, pending: Callable[[], str]) -> None:
    try:
        what = pending()
    except Exception as error:  # a summary read from another thread may trip
        what = f"(could not tell: {type(error).__name__})"
    message = (
        f"the worker did not stop within {seconds:.0f} s of being asked to (is Kafka "
        f"reachable?); exiting now and leaving to the next start: {what}"
    )
    logging.getLogger("duanka.worker").error(message)
    print(f"duanka: error: {message}", file=sys.stderr, flush=True)
    os._exit(1)


def recovering(app: Any) -> bool:
    """Whether faust is still restoring the tables from their changelogs (public attributes)."""
    recovery = app.tables.recovery
    return bool(not recovery.completed.is_set() or recovery.in_recovery)


def drop_faust_pages(app: Any) -> None:
    """Keep faust's own web pages off `app`'s port: the worker serves only its own.

    faust-streaming 0.15.3 mounts these built-in blueprints on the web port
    when the worker starts (`Web.init_server`): `/router/...` (the cluster's
    workers and which holds each key), `/table/...` (a table's keys and
    values), `/` (a status page, or the sensors' statistics with
    `/assignment/` when `web_stats_enabled` or `debug` is on), `/graph/` and
    `/performance/`. Settings switch all but the `/` page off, and the app
    sets them so; but the environment (`APP_WEB_TABLES_ENABLED`, ...) takes
    precedence over an app's settings, and nothing switches `/` off.
    `Web.__init__` lists the chosen ones in `Web.blueprints._enabled`, as
    (prefix, "faust.web.apps...") pairs, until `init_server` applies them:
    this removes faust's from that list. Call it before the worker starts.
    """
    blueprints = app.web.blueprints
    if blueprints.applied:
        raise RuntimeError("faust's pages are already mounted on the web port")
    blueprints._enabled = [
        (prefix, blueprint)
        for prefix, blueprint in blueprints._enabled
        if not (isinstance(blueprint, str) and blueprint.startswith("faust.web.apps"))
    ]

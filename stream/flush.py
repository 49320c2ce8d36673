"""A stage's partitions, and the one function that decides the order of a flush.

Between flushes a stage screens what its merges release and sends the
results at once (alerts, envelopes for the next stage), while the state those
events changed waits in each partition's cache. `flush` then makes it all
durable in an order that a crash at any point can only repeat, never lose:

1. the alerts and envelopes sent so far are acknowledged by Kafka;
2. the changed state goes to the changelog, one record per changed key, as
   one produce batch per partition, and is acknowledged;
3. the same rows, with the changelog offset they reach, go to RocksDB as one
   write batch;
4. the offset after the last envelope all of whose items (and of every
   envelope before it) were screened is committed.

A crash before 4 reads those envelopes again; state remembers which events
it applied (by `(source, event_id)`), so they change nothing twice, and an
alert raised again has the same id.

The stages commit their offsets themselves rather than through faust's
acknowledgements: faust acknowledges, on a stream without acks too, the
messages it skips while a rebalance goes on, and commits past a gap of one
offset at the head of what was acknowledged (or any, on a partition with no
commit yet; faust-streaming 0.15.3, `Stream._py_aiter` and
`Consumer._new_offset`), either of which can put the committed offset past
an envelope still held.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from stream.cache import Row, StateCache
from stream.envelope import Envelope, EventItem, Item
from stream.ordering import Ends, Merge

S = TypeVar("S")


@dataclass(slots=True)
class Pending:
    """An envelope read from an internal topic; committed once all of it is flushed."""

    left: int  # items not yet released by the merge
    offset: int


def _give_up(future: asyncio.Future[bool]) -> None:
    if not future.done():
        future.set_result(False)


class Part(Generic[S]):
    """What a stage holds for one partition it processes."""

    def __init__(self, partition: int, origins: Iterable[str], cache: StateCache[S]) -> None:
        self.partition = partition
        self.merge: Merge[tuple[Item, Pending]] = Merge(origins)
        self.cache = cache
        self.unacked: list[Pending] = []
        self.alive = True  # False once the partition was taken away: nothing more is written
        self.held_since: float | None = None  # since when the merge has held something
        self.read_to = -1  # the offset of the last envelope received
        self.next: int | None = None  # the offset of the envelope to take next (None: ask Kafka)
        self.rereading: float | None = None  # when faust was last sent back to `next`
        # (offset, future) of pre-opening checks waiting until the envelope at offset is received
        self.readers: list[tuple[int, asyncio.Future[bool]]] = []
        # the events the merge holds, by identity: what a pre-opening check adds to the state
        self.waiting: dict[str, list[EventItem]] = {}

    def receive(self, envelope: Envelope, offset: int) -> None:
        pending = Pending(len(envelope.items), offset)
        waiting = self.waiting
        for item in envelope.items:
            self.merge.push(item.key, item.seq, (item, pending))
            if isinstance(item, EventItem):
                held = waiting.get(item.event.subject_key)
                if held is None:
                    waiting[item.event.subject_key] = [item]
                else:
                    held.append(item)
        for origin, mark in envelope.marks.items():
            self.merge.mark(origin, mark)
        self.unacked.append(pending)
        self.received(offset)

    def received(self, offset: int) -> None:
        """The envelope at `offset` is in: wake the checks that waited for it."""
        self.read_to = offset
        if self.readers:
            waiting = []
            for target, future in self.readers:
                if target <= offset:
                    if not future.done():
                        future.set_result(True)
                elif not future.done():
                    waiting.append((target, future))
            self.readers = waiting

    async def read_up_to(self, offset: int, timeout: float) -> bool:
        """Whether the envelope at `offset` was received within `timeout` seconds."""
        if self.read_to >= offset:
            return True
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        self.readers.append((offset, future))
        # a timer rather than asyncio.wait_for, which costs a task per wait
        timer = loop.call_later(timeout, _give_up, future)
        await future
        timer.cancel()
        return future.result()

    def release(self, ends: Ends | None = None, before: int = 0) -> list[Item]:
        """The items the merge lets go, in event-time order; the caller screens them now."""
        released = []
        waiting = self.waiting
        for item, pending in self.merge.release(ends, before):
            pending.left -= 1
            released.append(item)
            if isinstance(item, EventItem):
                key = item.event.subject_key
                held = waiting[key]
                del held[next(i for i, other in enumerate(held) if other is item)]
                if not held:
                    del waiting[key]
        return released

    def skip(self, offset: int) -> None:
        """An envelope with nothing to screen (one dead-lettered): committed in its turn."""
        self.unacked.append(Pending(0, offset))
        self.received(offset)

    def take_done(self) -> int | None:
        """The offset to commit: after the envelopes, in the order read, up to the first held.

        None if the first envelope not yet committed still has an item held.
        """
        count = 0
        for pending in self.unacked:
            if pending.left:
                break
            count += 1
        if not count:
            return None
        done, self.unacked = self.unacked[:count], self.unacked[count:]
        return done[-1].offset + 1


class Changelog(Protocol):
    """Sends rows to a changelog partition: (futures, records in the last batch)."""

    async def send_rows(
        self, topic: str, partition: int, rows: list[tuple[bytes, bytes | None]]
    ) -> tuple[list[asyncio.Future[Any]], int]: ...


class Store(Protocol):
    def write(self, rows: list[Row], changelog_offset: int) -> None: ...


Commit = Callable[[dict[int, int]], Awaitable[object]]  # partition -> offset to commit


@dataclass(frozen=True, slots=True)
class Flushed:
    commits: dict[int, int]  # partition -> offset committed
    rows: int  # state rows written


@dataclass(slots=True)
class Checkpoint:
    """What a flush makes durable: taken at one instant, between two screenings."""

    sends: list[asyncio.Future[Any]]
    parts: list[tuple[Part[Any], Store, list[Row], int | None]]


def checkpoint(
    parts: Iterable[tuple[Part[Any], Store]], sends: list[asyncio.Future[Any]]
) -> Checkpoint:
    """Take every partition's changed state (encoded now) and finished envelopes.

    `sends` must hold every send of everything screened so far: the caller
    takes this while no screening is under way.
    """
    return Checkpoint(
        sends, [(part, store, part.cache.take(), part.take_done()) for part, store in parts]
    )


async def flush(point: Checkpoint, changelog: Changelog, topic: str, commit: Commit) -> Flushed:
    """Make a checkpoint durable, in the order the module describes."""
    if point.sends:
        await asyncio.gather(*point.sends)
    waiting = []
    for part, _, rows, _ in point.parts:
        if rows:
            futures, count = await changelog.send_rows(topic, part.partition, list(rows))
            waiting.append((part.partition, futures, count))
    offsets: dict[int, int] = {}
    for partition, futures, count in waiting:
        results = await asyncio.gather(*futures)
        offsets[partition] = results[-1].offset + count - 1
    written = 0
    commits: dict[int, int] = {}
    for part, store, rows, done in point.parts:
        if rows:
            store.write(rows, offsets[part.partition])
            written += len(rows)
        part.cache.trim()
        if done is not None:
            commits[part.partition] = done
    if commits:
        await commit(commits)
    return Flushed(commits, written)

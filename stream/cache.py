"""One partition's state, as a stage sees it between two flushes.

A stage reads and writes its subjects' state only through `StateCache`: it
decodes a subject once, keeps the object while it is in use, and remembers
which subjects changed since the last flush. The flush (stream/flush.py)
takes the changed subjects, encoded at that moment, writes them to the
changelog and then to the store in one batch. Subjects left unchanged stay
cached, up to `limit`, so a busy one (an outlet) is not decoded again on
every event.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

S = TypeVar("S")

Row = tuple[bytes, bytes | None]  # a key and its encoded state (None: the key is deleted)


class PartitionStore(Protocol):
    """Where a partition's state lives: read one key, write a batch with the changelog offset."""

    def get(self, key: bytes) -> bytes | None: ...

    def write(self, rows: list[Row], changelog_offset: int) -> None: ...


class StateCache(Generic[S]):
    """Decoded state for a partition's subjects, and which of them changed since the last flush."""

    def __init__(
        self,
        store: PartitionStore,
        decode: Callable[[bytes], S],
        encode: Callable[[S], bytes | None],
        new: Callable[[], S],
        limit: int = 10_000,
    ) -> None:
        self.store = store
        self.decode = decode
        self.encode = encode
        self.new = new
        self.limit = limit
        self.entries: OrderedDict[bytes, S] = OrderedDict()
        self.dirty: set[bytes] = set()
        self.added = 0  # subjects that were not in the store, counted as they are first changed
        self._absent: set[bytes] = set()  # cached subjects the store did not have

    def get(self, key: bytes) -> S:
        """The subject's state (new and empty if it has none yet)."""
        entries = self.entries
        if key in entries:
            entries.move_to_end(key)
            return entries[key]
        raw = self.store.get(key)
        if raw is None:
            state = self.new()
            self._absent.add(key)
        else:
            state = self.decode(raw)
        self.entries[key] = state
        return state

    def put(self, key: bytes, state: S) -> None:
        """Replace a subject's state (an `encode` that gives None for it deletes the key)."""
        self.entries[key] = state
        self.entries.move_to_end(key)
        self.changed(key)

    def changed(self, key: bytes) -> None:
        """The state `get` returned for `key` was changed: the next flush writes it."""
        assert key in self.entries, "changed() before get()"
        self.dirty.add(key)
        if key in self._absent:
            self._absent.discard(key)
            self.added += 1

    def take(self) -> list[Row]:
        """Encode every changed subject as it is now; they count as clean from here."""
        rows = [(key, self.encode(self.entries[key])) for key in self.dirty]
        self.dirty = set()
        return rows

    def trim(self) -> None:
        """Forget the least recently used unchanged subjects beyond `limit`."""
        excess = len(self.entries) - self.limit
        if excess <= 0:
            return
        for key in list(self.entries):
            if excess <= 0:
                break
            if key not in self.dirty:
                del self.entries[key]
                self._absent.discard(key)
                excess -= 1

    def __len__(self) -> int:
        return len(self.entries)

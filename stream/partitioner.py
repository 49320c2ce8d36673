"""Which partition a key goes to: Kafka's default partitioner (murmur2), one key or many.

The worker's stages keep each subject's state in the partition Kafka's
default partitioner gives its key (faust's sends used it, and so do Kafka's
own clients), so the reader routes with the same function. aiokafka's
pure-Python murmur2 costs about 8 us a key; `partitions_of` works out a whole
batch of equal-length keys (every pseudonym has the same length) with numpy
in a few hundredths of a microsecond each, and `partition_of` does one key
in about half of aiokafka's time.
"""

from __future__ import annotations

import struct
from collections import defaultdict
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF
_WORDS = struct.Struct("<I").iter_unpack
_M32 = np.uint32(_M)
# below this many keys of one length, numpy's fixed cost is more than it saves
_VECTOR_MIN = 32


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 of `data` (org.apache.kafka.common.utils.Utils.murmur2), unsigned."""
    length = len(data)
    h = _SEED ^ length
    end = length & ~3
    for (word,) in _WORDS(data[:end]):
        k = (word * _M) & _MASK
        k ^= k >> 24
        h = ((h * _M) & _MASK) ^ ((k * _M) & _MASK)
    extra = length & 3
    if extra == 3:
        h ^= data[end + 2] << 16
    if extra >= 2:
        h ^= data[end + 1] << 8
    if extra:
        h = ((h ^ data[end]) * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    return h ^ (h >> 15)


def partition_of(key: bytes, partitions: int) -> int:
    """The partition of `key` among `partitions`, as Kafka's default partitioner picks it."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


@lru_cache(maxsize=65_536)
def cached_partition_of(key: bytes, partitions: int) -> int:
    """`partition_of` for keys that repeat (outlets, agents), which are not personal data."""
    return partition_of(key, partitions)


def partitions_of(keys: Sequence[bytes], partitions: int) -> list[int]:
    """`partition_of` of every key, the equal-length ones together."""
    out = [0] * len(keys)
    by_length: dict[int, list[int]] = defaultdict(list)
    for index, key in enumerate(keys):
        by_length[len(key)].append(index)
    for length, indexes in by_length.items():
        if length == 0 or len(indexes) < _VECTOR_MIN:
            for index in indexes:
                out[index] = partition_of(keys[index], partitions)
            continue
        hashes = _murmur2_many([keys[index] for index in indexes], length)
        chosen = (hashes & np.uint32(0x7FFFFFFF)) % np.uint32(partitions)
        for index, partition in zip(indexes, chosen.tolist(), strict=True):
            out[index] = partition
    return out


def _murmur2_many(keys: list[bytes], length: int) -> np.ndarray:
    """murmur2 of many keys of one `length`, as uint32, in one pass of numpy."""
    data = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), length)
    end = length & ~3
    words = np.ascontiguousarray(data[:, :end]).view("<u4")
    h = np.full(len(keys), _SEED ^ length, dtype=np.uint32)
    with np.errstate(over="ignore"):  # uint32 arithmetic wraps, as Java's int does
        for column in range(end // 4):
            k = words[:, column] * _M32
            k ^= k >> np.uint32(24)
            k *= _M32
            h *= _M32
            h ^= k
        extra = length & 3
        if extra == 3:
            h ^= data[:, end + 2].astype(np.uint32) << np.uint32(16)
        if extra >= 2:
            h ^= data[:, end + 1].astype(np.uint32) << np.uint32(8)
        if extra:
            h ^= data[:, end].astype(np.uint32)
            h *= _M32
        h ^= h >> np.uint32(13)
        h *= _M32
        h ^= h >> np.uint32(15)
    return h

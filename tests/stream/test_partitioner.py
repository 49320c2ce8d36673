"""The partitioner is Kafka's default: the same partition for a key as Java's and aiokafka's."""

from __future__ import annotations

from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given
from hypothesis import strategies as st

from stream.partitioner import murmur2, partition_of, partitions_of


def test_javas_test_vectors() -> None:
    """org.apache.kafka.common.utils.UtilsTest#testMurmur2 (signed there, unsigned here)."""
    for key, signed in (
        (b"21", -973932308),
        (b"foobar", -790332482),
        (b"a-little-bit-long-string", -985981536),
    ):
        assert murmur2(key) == signed & 0xFFFFFFFF


@given(st.binary(max_size=80))
def test_one_key_as_aiokafka(key: bytes) -> None:
    assert murmur2(key) & 0x7FFFFFFF == aiokafka_murmur2(key) & 0x7FFFFFFF


@given(st.lists(st.binary(max_size=40), max_size=120), st.integers(1, 64))
def test_many_keys_as_one_at_a_time(keys: list[bytes], partitions: int) -> None:
    assert partitions_of(keys, partitions) == [partition_of(k, partitions) for k in keys]


@given(st.lists(st.binary(min_size=34, max_size=34), min_size=40, max_size=200))
def test_a_batch_of_pseudonym_sized_keys_takes_the_vector_path(keys: list[bytes]) -> None:
    assert partitions_of(keys, 8) == [(aiokafka_murmur2(k) & 0x7FFFFFFF) % 8 for k in keys]

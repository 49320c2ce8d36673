"""The dead-letter record (`duanka.deadletter/1`): a rejected record and why.

The raw record is kept for the operator, cut to 4 KiB: as text when the
record is UTF-8 (cut on a character boundary), as base64 when it is not.
"""

from __future__ import annotations

import base64

import orjson

from rules.errors import InvalidRecord

DEADLETTER_SCHEMA = "duanka.deadletter/1"
RAW_LIMIT = 4096


def dead_letter(
    topic: str, partition: int, offset: int, error: InvalidRecord, raw: bytes | None
) -> dict[str, object]:
    """The dead-letter record for the record at (topic, partition, offset)."""
    text, encoding, truncated = _raw_text(raw or b"")
    return {
        "schema": DEADLETTER_SCHEMA,
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "error": str(error),
        "field": error.field,
        "raw": text,
        "raw_encoding": encoding,
        "raw_bytes": len(raw or b""),
        "truncated": truncated,
    }


def encode_dead_letter(
    topic: str, partition: int, offset: int, error: InvalidRecord, raw: bytes | None
) -> bytes:
    """`dead_letter(...)` as JSON bytes."""
    return orjson.dumps(dead_letter(topic, partition, offset, error, raw))


def _raw_text(raw: bytes) -> tuple[str, str, bool]:
    """(text, "utf-8" or "base64", truncated) for at most RAW_LIMIT bytes of raw."""
    truncated = len(raw) > RAW_LIMIT
    try:
        raw.decode()
    except UnicodeDecodeError:
        return base64.b64encode(raw[:RAW_LIMIT]).decode("ascii"), "base64", truncated
    return raw[: _character_boundary(raw, RAW_LIMIT)].decode(), "utf-8", truncated


def _character_boundary(data: bytes, limit: int) -> int:
    """The largest cut <= limit that does not split a UTF-8 character of data."""
    if len(data) <= limit:
        return len(data)
    cut = limit
    # Continuation bytes are 0b10xxxxxx; a character starts at any other byte.
    while cut > 0 and data[cut] & 0xC0 == 0x80:
        cut -= 1
    return cut

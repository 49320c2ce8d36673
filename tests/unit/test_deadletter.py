"""Dead letters: the rejected record, cut to 4 KiB, with the reason."""

from __future__ import annotations

import base64

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from rules.deadletter import DEADLETTER_SCHEMA, RAW_LIMIT, dead_letter, encode_dead_letter
from rules.errors import InvalidEvent

ERROR = InvalidEvent("id_number", "bad check digit")


def letter(raw: bytes | None) -> dict[str, object]:
    return dead_letter("carrier.sim-events", 3, 1042, ERROR, raw)


def test_a_small_record() -> None:
    raw = b'{"schema": "duanka.event/1", "source": "\xe4\xb8\xad"}'
    assert letter(raw) == {
        "schema": DEADLETTER_SCHEMA,
        "topic": "carrier.sim-events",
        "partition": 3,
        "offset": 1042,
        "error": "id_number: bad check digit",
        "field": "id_number",
        "raw": raw.decode(),
        "raw_encoding": "utf-8",
        "raw_bytes": len(raw),
        "truncated": False,
    }


def test_encode_dead_letter_is_the_json_of_dead_letter() -> None:
    raw = b"\x00\xff not json"
    encoded = encode_dead_letter("carrier.sim-events", 3, 1042, ERROR, raw)
    assert orjson.loads(encoded) == letter(raw)


def test_exactly_4_kib_is_kept_whole() -> None:
    raw = b"a" * RAW_LIMIT
    assert letter(raw)["raw"] == raw.decode()
    assert letter(raw)["truncated"] is False


def test_a_long_record_is_cut_at_a_character_boundary() -> None:
    # "中" is 3 bytes: 4095 = 3 * 1365, so byte 4096 falls inside character 1366.
    raw = "中".encode() * 2000
    result = letter(raw)
    assert result["raw"] == "中" * 1365
    assert result["raw_encoding"] == "utf-8"
    assert result["raw_bytes"] == 6000
    assert result["truncated"] is True


def test_a_cut_on_a_boundary_keeps_all_4096_bytes() -> None:
    raw = b"a" + "中".encode() * 2000  # 4096 = 1 + 3 * 1365: a character starts there
    text = letter(raw)["raw"]
    assert isinstance(text, str) and len(text.encode()) == RAW_LIMIT


def test_four_byte_characters() -> None:
    raw = b"x" + "😀".encode() * 1100  # characters span bytes 1-4, 5-8, ...
    text = letter(raw)["raw"]
    assert isinstance(text, str)
    assert text == "x" + "😀" * 1023 and len(text.encode()) == 4093


def test_non_utf8_is_base64_of_the_first_4_kib() -> None:
    raw = b"\xff" + b"a" * 5000
    result = letter(raw)
    assert result["raw_encoding"] == "base64"
    assert isinstance(result["raw"], str)
    assert base64.b64decode(result["raw"]) == raw[:RAW_LIMIT]
    assert result["raw_bytes"] == 5001
    assert result["truncated"] is True


def test_invalid_utf8_after_the_cut_still_means_base64() -> None:
    raw = b"a" * 5000 + b"\xff"
    assert letter(raw)["raw_encoding"] == "base64"


def test_a_short_non_utf8_record() -> None:
    raw = b"\xc3\x28"
    result = letter(raw)
    assert (result["raw"], result["raw_encoding"], result["truncated"]) == ("wyg=", "base64", False)


def test_a_tombstone() -> None:
    error = InvalidEvent("record", "no value (a null record)")
    result = dead_letter("carrier.sim-events", 0, 7, error, None)
    assert (result["raw"], result["raw_encoding"], result["raw_bytes"], result["truncated"]) == (
        "",
        "utf-8",
        0,
        False,
    )
    assert result["error"] == "record: no value (a null record)"
    assert result["field"] == "record"


@settings(max_examples=120, deadline=None)
@given(
    raw=st.binary(max_size=5000)
    | st.text(st.characters(codec="utf-8"), min_size=1000, max_size=3000).map(str.encode)
)
def test_raw_is_a_prefix_of_at_most_4_kib(raw: bytes) -> None:
    result = orjson.loads(encode_dead_letter("t", 0, 0, ERROR, raw))
    text = result["raw"]
    kept = base64.b64decode(text) if result["raw_encoding"] == "base64" else text.encode()
    assert raw.startswith(kept)
    assert len(kept) <= RAW_LIMIT
    assert len(kept) > RAW_LIMIT - 4 or kept == raw
    assert result["truncated"] == (len(raw) > RAW_LIMIT)
    assert result["raw_bytes"] == len(raw)

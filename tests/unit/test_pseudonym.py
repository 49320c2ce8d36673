"""Keyed pseudonyms, the key's source, and id masks."""

from __future__ import annotations

import hashlib
import hmac
import re

import pytest
import strategies
from hypothesis import given, settings
from hypothesis import strategies as st

from rules.errors import ConfigError
from rules.pseudonym import DEV_KEY, Pseudonymizer, mask_id, pseudonym_key

EXAMPLE = "11010519491231002X"


def test_subject_key_is_hmac_sha256_of_type_and_number() -> None:
    key = b"k" * 32
    expected = hmac.new(key, b"resident_id:" + EXAMPLE.encode(), hashlib.sha256).hexdigest()
    assert Pseudonymizer(key).subject_key("resident_id", EXAMPLE) == "k:" + expected[:32]


def test_subject_key_shape_and_stability() -> None:
    one, two = Pseudonymizer(DEV_KEY), Pseudonymizer(DEV_KEY)
    key = one.subject_key("resident_id", EXAMPLE)
    assert re.fullmatch(r"k:[0-9a-f]{32}", key)
    assert key == two.subject_key("resident_id", EXAMPLE) == one.subject_key("resident_id", EXAMPLE)


def test_subject_key_depends_on_key_type_and_number() -> None:
    dev = Pseudonymizer(DEV_KEY)
    other_key = Pseudonymizer(b"another secret key of enough length")
    base = dev.subject_key("resident_id", EXAMPLE)
    assert other_key.subject_key("resident_id", EXAMPLE) != base
    assert dev.subject_key("other", EXAMPLE) != base
    assert dev.subject_key("resident_id", "110105194912310011") != base


def test_the_key_is_required() -> None:
    with pytest.raises(ConfigError):
        Pseudonymizer(b"")


def test_development_key_is_recognised() -> None:
    assert Pseudonymizer(DEV_KEY).is_development_key
    assert not Pseudonymizer(b"production secret").is_development_key
    assert b"development" in DEV_KEY


def test_nothing_cached_and_no_key_in_repr() -> None:
    pseudonymizer = Pseudonymizer(b"s3cret-key")
    pseudonymizer.subject_key("resident_id", EXAMPLE)
    assert not hasattr(Pseudonymizer.subject_key, "cache_info")
    assert not hasattr(pseudonymizer, "__dict__")
    assert "s3cret" not in repr(pseudonymizer)
    assert EXAMPLE not in repr(pseudonymizer)


def test_pseudonym_key_sources() -> None:
    env = {"DUANKA_PSEUDONYM_KEY": "from-env"}
    assert pseudonym_key("from-config", env) == b"from-env"
    assert pseudonym_key("from-config", {}) == b"from-config"
    assert pseudonym_key(None, env) == b"from-env"
    assert pseudonym_key(None, {}) == DEV_KEY
    assert pseudonym_key("", {"DUANKA_PSEUDONYM_KEY": ""}) == DEV_KEY
    assert pseudonym_key("from-config", {"DUANKA_PSEUDONYM_KEY": ""}) == b"from-config"
    assert pseudonym_key("密钥", {}) == "密钥".encode()


@settings(max_examples=200, deadline=None)
@given(number=strategies.resident_ids() | strategies.other_ids)
def test_distinct_numbers_get_distinct_keys(number: str) -> None:
    pseudonymizer = Pseudonymizer(DEV_KEY)
    assert pseudonymizer.subject_key("other", number) != pseudonymizer.subject_key(
        "other", number + "0"
    )


# ---------------------------------------------------------------- masks


@pytest.mark.parametrize(
    ("number", "masked"),
    [
        ("11010519491231002X", "1101**********002X"),
        ("360426199101010071", "3604**********0071"),
        ("ABCDEFGHIJKLMNOPQRSTUVWXYZ012345", "ABCD************************2345"),
        ("E12345678", "E1*****78"),
        ("EA1234567", "EA*****67"),
        ("H1234567890", "H1*******90"),
        ("AB12345", "A*****5"),
        ("ABCDE", "A***E"),
        ("ABCD", "****"),
        ("ABC", "***"),
        ("AB", "**"),
        ("A", "*"),
        ("", ""),
    ],
)
def test_mask_examples(number: str, masked: str) -> None:
    assert mask_id(number) == masked


@settings(max_examples=300, deadline=None)
@given(number=st.text(st.characters(codec="utf-8"), max_size=40))
def test_mask_reveals_less_than_half(number: str) -> None:
    masked = mask_id(number)
    assert len(masked) == len(number)
    revealed = [i for i, c in enumerate(masked) if c != "*"]
    assert len([i for i in revealed if number[i] != "*"]) * 2 < max(len(number), 1)
    assert all(masked[i] == number[i] for i in revealed)
    if len(number) >= 17:
        assert masked[:4] == number[:4] and masked[-4:] == number[-4:]
        assert set(masked[4:-4]) == {"*"}

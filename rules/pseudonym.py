"""Keyed pseudonyms and masks: how an identity is named without its number.

Rule state, internal topics and alerts carry `subject_key` (an HMAC of the id
number under a secret key) and `id_masked`, never the raw id number.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from rules.errors import ConfigError

DEV_KEY = b"duanka-development-key-do-not-use-in-production"
KEY_ENV = "DUANKA_PSEUDONYM_KEY"
SUBJECT_KEY_PREFIX = "k:"
TOKEN_PREFIX = "t:"
_HEX_CHARS = 32


class Pseudonymizer:
    """Turns `(id_type, id_number)` into a stable, keyed, one-way subject key.

    Nothing is cached: an lru_cache would keep raw id numbers in memory, and
    one HMAC-SHA256 costs about a microsecond.
    """

    __slots__ = ("_is_development_key", "_key", "_template")

    def __init__(self, key: bytes) -> None:
        if not key:
            raise ConfigError("the pseudonym key must not be empty")
        self._key = key  # for a second process of replay's (pickling)
        # Keyed once; each call copies the keyed state instead of re-keying.
        self._template = hmac.new(key, digestmod=hashlib.sha256)
        self._is_development_key = hmac.compare_digest(key, DEV_KEY)

    @property
    def is_development_key(self) -> bool:
        """True when the built-in development key is in use (callers warn)."""
        return self._is_development_key

    def subject_key(self, id_type: str, id_number: str) -> str:
        """The pseudonym: "k:" + first 128 bits of HMAC-SHA256(key, "id_type:id_number") in hex."""
        mac = self._template.copy()
        mac.update(f"{id_type}:{id_number}".encode())
        return SUBJECT_KEY_PREFIX + mac.hexdigest()[:_HEX_CHARS]

    def token(self, kind: str, value: str | None) -> str | None:
        """A keyed token for other personal data (a phone number, a device id); None stays None.

        "t:" + 128 bits of HMAC-SHA256(key, "kind:value"): the kind keeps a
        phone number's token apart from the same digits as an account number.
        """
        if value is None:
            return None
        mac = self._template.copy()
        mac.update(f"{kind}:{value}".encode())
        return TOKEN_PREFIX + mac.hexdigest()[:_HEX_CHARS]

    def __reduce__(self) -> tuple[type[Pseudonymizer], tuple[bytes]]:
        return (Pseudonymizer, (self._key,))

    def __repr__(self) -> str:
        which = "development key" if self._is_development_key else "configured key"
        return f"Pseudonymizer(<{which}>)"


def pseudonym_key(configured: str | None, environ: Mapping[str, str]) -> bytes:
    """The HMAC key: $DUANKA_PSEUDONYM_KEY, else the configured value, else DEV_KEY.

    Empty values count as unset. The text is used as its UTF-8 bytes.
    """
    for candidate in (environ.get(KEY_ENV), configured):
        if candidate:
            return candidate.encode()
    return DEV_KEY


def mask_id(id_number: str) -> str:
    """The id with its middle replaced by "*": "11010519491231002X" -> "1101**********002X".

    Keeps up to 4 characters at each end, but always fewer than half of the
    whole, so a short id (a 9-character passport number) is not given away.
    """
    length = len(id_number)
    keep = min(4, (length - 1) // 4)
    if keep <= 0:
        return "*" * length
    return id_number[:keep] + "*" * (length - 2 * keep) + id_number[-keep:]

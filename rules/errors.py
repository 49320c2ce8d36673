"""The exceptions of duanka: one root, and a record that fails validation.

A rejected record is data, not a crash: `InvalidEvent` carries the field and
the reason, and the stream layer turns it into a dead letter.
"""

from __future__ import annotations


class DuankaError(Exception):
    """Root of every error duanka raises on purpose."""


class InvalidRecord(DuankaError):
    """A record that does not follow its schema: which field, and why.

    `field` is a dotted path ("delivery.region_code"), or "record" when the
    record as a whole is wrong (too large, not JSON, not an object).
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason

    def __reduce__(self) -> tuple[type[InvalidRecord], tuple[str, str]]:
        # The default would call cls(message) and fail: keep the two parts.
        return (type(self), (self.field, self.reason))


class InvalidEvent(InvalidRecord):
    """An input event (or internal pseudonymous event) rejected by validation."""


class InvalidAlert(InvalidRecord):
    """A record on the alert topic, or an `Alert` built, that breaks the contract."""


class ConfigError(DuankaError):
    """Configuration that cannot be used (bad value, missing key, empty secret)."""

"""Durations in the words of an alert's summary."""

from __future__ import annotations

_UNITS_ZH = {"s": "秒", "m": "分钟", "h": "小时", "d": "天"}
_UNITS_EN = {"s": "second", "m": "minute", "h": "hour", "d": "day"}


def span_zh(duration: str) -> str:
    """`30d` -> `30天`."""
    return f"{duration[:-1]}{_UNITS_ZH[duration[-1]]}"


def span_en(duration: str) -> str:
    """`30d` -> `30 days`, `1h` -> `1 hour`."""
    count = duration[:-1]
    unit = _UNITS_EN[duration[-1]]
    return f"{count} {unit}" if count == "1" else f"{count} {unit}s"

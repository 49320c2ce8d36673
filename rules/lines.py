"""Reading the JSON-lines files that carriers, banks and list keepers hand over."""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path

BOM = b"\xef\xbb\xbf"  # as Windows tools start UTF-8 files


def json_lines(path: Path) -> Generator[tuple[int, bytes], None, None]:
    """Each non-blank line with its number (from 1), without its line end or a leading BOM."""
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            raw = line.rstrip(b"\r\n")
            if number == 1:
                raw = raw.removeprefix(BOM)
            if raw.strip():
                yield number, raw

"""The rule engine: events, their validation, pseudonyms, state, the rules and replay.

Built with `make install`, the modules are compiled with mypyc (setup.py):
an extension module beside each source. If a source has changed since it
was compiled, importing `rules` fails and says so, rather than run the old
compiled code.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


def check_compiled(here: Path) -> None:
    """Raise ImportError if an extension module in `here` was built from another source."""
    if not any(here.glob("*.so")):
        return
    try:
        recorded = json.loads((here / "compiled.json").read_text())
    except (OSError, ValueError):
        recorded = {}
    changed = [
        name
        for name, digest in recorded.items()
        if not (here / name).exists()
        or hashlib.sha256((here / name).read_bytes()).hexdigest() != digest
    ]
    if changed or not recorded:
        raise ImportError(
            f"rules/ was compiled from other sources than rules/{', '.join(changed) or '*.py'} "
            "now: run `make install` to compile them again (or remove rules/*.so to run "
            "them as Python)"
        )


check_compiled(Path(__file__).parent)

"""The rule engine compiled with mypyc, from the same Python source (pyproject.toml has the rest).

`rules/` is compiled to C extension modules beside its sources, which run
the rules about 1.6 times as fast as CPython does. `rules/config.py` stays
Python (mypyc cannot compile its reading of dataclass field types). The
hashes of the compiled sources go to `rules/compiled.json`, so that an
import of a `rules/` changed since (without `make install`) fails with a
message instead of running the old code. DUANKA_PURE_PYTHON=1 builds none.
"""

import hashlib
import json
import os
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).parent
PURE = ("__init__.py", "config.py")


def compiled_sources() -> list[Path]:
    return sorted(path for path in (HERE / "rules").glob("*.py") if path.name not in PURE)


def record(sources: list[Path]) -> None:
    hashes = {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sources}
    (HERE / "rules" / "compiled.json").write_text(json.dumps(hashes, indent=2) + "\n")


ext_modules = []
if not os.environ.get("DUANKA_PURE_PYTHON"):
    from mypyc.build import mypycify

    sources = compiled_sources()
    ext_modules = mypycify([str(path.relative_to(HERE)) for path in sources], opt_level="3")
    record(sources)

setup(ext_modules=ext_modules)

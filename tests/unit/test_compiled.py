"""A compiled rules/ is used only if it was compiled from the sources there now."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from rules import check_compiled


def package(tmp_path: Path, recorded_text: str | None) -> Path:
    (tmp_path / "engine.py").write_text("RULES = 10\n")
    (tmp_path / "engine.cpython-311-x86_64-linux-gnu.so").write_bytes(b"\x7fELF")
    if recorded_text is not None:
        digest = hashlib.sha256(recorded_text.encode()).hexdigest()
        (tmp_path / "compiled.json").write_text(json.dumps({"engine.py": digest}))
    return tmp_path


def test_sources_as_compiled_pass(tmp_path: Path) -> None:
    check_compiled(package(tmp_path, "RULES = 10\n"))


def test_a_source_changed_since_it_was_compiled_fails_the_import(tmp_path: Path) -> None:
    with pytest.raises(ImportError, match=r"rules/engine\.py now: run `make install`"):
        check_compiled(package(tmp_path, "RULES = 9\n"))


def test_compiled_modules_without_a_record_fail_the_import(tmp_path: Path) -> None:
    with pytest.raises(ImportError, match="compiled from other sources"):
        check_compiled(package(tmp_path, None))


def test_no_compiled_modules_no_check(tmp_path: Path) -> None:
    (tmp_path / "engine.py").write_text("changed\n")
    check_compiled(tmp_path)

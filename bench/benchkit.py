"""What the benchmarks share: the machine's facts with each result, and the --worker option."""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


def machine() -> dict[str, Any]:
    """What to keep with every figure: the Python, the CPUs, the load, the time."""
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def save_results(name: str, figures: dict[str, Any]) -> None:
    """Write `figures` to bench/results/<name>.json."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(figures, indent=2) + "\n")


def add_worker_option(parser: argparse.ArgumentParser, example: str) -> None:
    """--worker KEY=VALUE, repeatable: a setting of the config's worker section."""
    parser.add_argument(
        "--worker",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"a worker setting of the config, such as {example} (repeatable)",
    )

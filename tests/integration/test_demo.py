"""`duanka demo` end to end, on the session's broker (DUANKA_BOOTSTRAP set)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import yaml
from workerkit import TOPIC_NAMES

from stream.broker import free_port


def test_demo_shows_every_expected_alert_and_dead_letter(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    run = uuid.uuid4().hex[:8]
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "topics": {name: f"{name}-{run}" for name in TOPIC_NAMES},
                "worker": {"app_id": f"demo-{run}", "web_port": free_port()},
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("DUANKA_")}
    env["DUANKA_BOOTSTRAP"] = kafka_bootstrap
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "stream.cli",
            "--config",
            str(config),
            "demo",
            "--dir",
            str(tmp_path),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert f"using the Kafka broker at {kafka_bootstrap}" in out
    assert "5 should alert, 3 are malformed" in out
    assert out.count(" sim_mail_out_of_province ") == 4
    assert out.count(" sim_nonlocal_not_in_person ") == 1
    assert out.count("dead letter from sim_events-") == 3
    assert "5 alerts received, 5 expected; 3 dead letters, 3 expected" in out
    assert "every expected alert and dead letter arrived" in out
    assert "stopped the worker" in out
    assert (tmp_path / "demo" / "worker.log").stat().st_size > 0

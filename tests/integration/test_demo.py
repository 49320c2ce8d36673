"""`duanka demo` end to end, on the session's broker (DUANKA_BOOTSTRAP set), sped up."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import orjson
import yaml
from rulekit import ALL_RULES, IMPLICATED_RULES
from workerkit import TOPIC_NAMES

from stream.broker import free_port


def test_demo_shows_every_alert_and_scores_them(kafka_bootstrap: str, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "topics": {name: f"{name}-{run}" for name in TOPIC_NAMES},
                "worker": {"app_id": f"demo-{run}", "web_port": free_port()},
                "console": {"users_file": str(tmp_path / "console-users.json")},
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
            "--rate",
            "1000",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    out = result.stdout
    (tmp_path / "demo-output.txt").write_text(out)
    assert result.returncode == 0, out + result.stderr
    assert f"using the Kafka broker at {kafka_bootstrap}" in out
    assert "police console: http://127.0.0.1:" in out
    received = re.search(r"(\d+) alerts received, (\d+) expected by the rule engine", out)
    assert received and received[1] == received[2] and int(received[1]) >= 30, out
    assert "; 3 dead letters, 3 expected" in out
    before, _, police = out.partition("\nthe police's side: ")
    police, _, reported = police.partition("\nthe police report ")
    assert before.count("  dead letter: ") == 3
    shown = re.findall(r"^  \d\d-\d\d \d\d:\d\d  [A-Z]+ +([a-z0-9_]+) ", before, re.MULTILINE)
    assert len(shown) == int(received[1])  # each alert printed once, as it came
    # openings at a counter were checked first; what was refused was never opened
    checks = re.search(
        r"checks at the counter: (\d+) \((\d+) allow, (\d+) review, (\d+) refuse\)", out
    )
    assert checks and int(checks[1]) > 100 and int(checks[4]) > 0, out
    refused = dict(re.findall(r"^  refused by ([a-z0-9_]+): (\d+)$", out, re.MULTILINE))
    assert sum(map(int, refused.values())) >= int(checks[4])
    assert re.search(r"the refused openings were not made: \d+ alerts", out)
    # every rule on events alerted, or (a block rule) refused the openings it would have
    # alerted on; the rules on implicated numbers alert once the police report them
    assert set(shown) | set(refused) == ALL_RULES - IMPLICATED_RULES
    for rule_id in ALL_RULES:  # the ground-truth tables: every rule found all its cases
        row = re.search(rf"^{rule_id} +(\d+) +(\d+) +([\d.]+|-) ", out, re.MULTILINE)
        assert row and row[1] == row[2] and row[3] in ("1.00", "-"), rule_id
        assert (row.start() > out.index("\nthe police report ")) == (rule_id in IMPLICATED_RULES)
    assert "every labelled case was found and no alert was unexpected" in out
    assert "every expected alert and dead letter arrived through Kafka" in out
    # the police's side: a demo analyst signs in (the password printed, made for the run),
    # confirms the planted ring, punishes one member, and that person's next opening is
    # refused by the check and flagged by the stream
    signed = re.search(
        r"sign in as demo-analyst with the password (\S+) \(made for this run\)", out
    )
    assert signed, out
    users = orjson.loads((tmp_path / "console-users.json").read_bytes())
    assert users["users"]["demo-analyst"]["role"] == "analyst"
    assert signed[1] not in (tmp_path / "console-users.json").read_text()  # a hash only
    assert re.search(r"demo-analyst signed in; case case-[0-9a-f]{16}: \d+ alerts, 8 people", out)
    assert "confirmed the gang alert, and " in out
    assert re.search(r"the check says refuse \(watchlist_hit: ", out), out
    assert "opened anyway, the stream flags it: watchlist_hit" in out
    flagged = re.findall(r"^  \d\d-\d\d \d\d:\d\d  CRITICAL watchlist_hit", police, re.MULTILINE)
    assert len(flagged) == 1
    assert "POLICE STEP FAILED" not in out
    assert_implicated_step(reported)
    assert "IMPLICATED STEP FAILED" not in out
    assert "stopped the worker" in out
    assert (tmp_path / "demo" / "worker.log").stat().st_size > 0
    # masked ids only: no id number of the simulated events is printed
    events = (tmp_path / "demo" / "events.jsonl").read_bytes().splitlines()
    numbers = {orjson.loads(line)["id_number"] for line in events}
    assert not [n for n in numbers if n in out]


def assert_implicated_step(reported: str) -> None:
    """The police report numbers found in fraud cases: traced, ranked, and alerted on."""
    traced = re.search(
        r"^traced (\d+) to their openings \((\d+) cards\); (\d+) matched", reported, re.MULTILINE
    )
    assert traced and int(traced[1]) > 0 and int(traced[3]) > 0, reported
    assert "top outlets by implicated cards" in reported
    assert "top staff members by implicated cards" in reported
    assert re.search(r"ALERT outlet_implicated: outlet \S+", reported)
    assert re.search(r"ALERT agent_implicated: agent \S+", reported)
    assert re.search(r"identities to look at \(\d+ opened implicated cards\): \d{4}\*+", reported)
    assert "every expected alert on implicated cards arrived through Kafka" in reported

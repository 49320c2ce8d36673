"""The simulator, its files, and the evaluation of a replay against its ground truth."""

from __future__ import annotations

import re
import shlex
from collections import Counter
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest
from rulekit import ALL_RULES

from producers.evaluate import evaluate, read_alerts, read_truth, run_evaluate
from producers.simulate import WorldFiles, write_world
from producers.simulator import Simulator, simulate
from rules.alert import decode_alert
from rules.config import RuleSettings
from rules.engine import Engine
from rules.errors import InvalidEvent
from rules.event import parse_event
from rules.holdings import HoldingRecord, read_holdings
from rules.implicated import NO_OPENING, parse_implicated
from rules.pseudonym import Pseudonymizer, mask_id
from rules.replay import Implications, replay
from stream.cli import main

FIXED = datetime(2026, 6, 1, tzinfo=UTC)
KEY = Pseudonymizer(b"simulate-test")
RULE_IDS = list(RuleSettings.__dataclass_fields__)


def replayed(files: WorldFiles, out: Path, holdings: bool = True) -> Path:
    """The alerts of a replay of `files` in `out`; traces and dead letters beside them."""
    with (
        out.open("wb") as alerts,
        out.with_name("traces.jsonl").open("w+b") as traces,
        out.with_name("deadletter.jsonl").open("wb") as dead,
    ):
        replay(
            files.events,
            Engine(RuleSettings(), clock=lambda: FIXED),
            KEY,
            alerts,
            dead,
            files.watchlist,
            holdings=files.holdings if holdings else None,
            implicated=Implications(files.implicated, KEY, traces),
        )
    return out


@pytest.fixture(scope="module")
def month(tmp_path_factory: pytest.TempPathFactory) -> tuple[WorldFiles, Path]:
    """A seeded month of about 20,000 events, two rounds of cases, replayed."""
    directory = tmp_path_factory.mktemp("month")
    files = write_world(simulate(20_000, days=30, seed=7, rounds=2), directory)
    return files, replayed(files, directory / "alerts.jsonl")


def test_every_rule_is_found_and_no_alert_is_unexpected(month: tuple[WorldFiles, Path]) -> None:
    files, alerts = month
    cases = read_truth(files.truth)
    result = evaluate(cases, read_alerts(alerts), RULE_IDS)
    assert set(result.scores) == ALL_RULES
    for rule_id, score in result.scores.items():
        assert score.cases >= 2, rule_id  # two rounds: every rule has cases
        assert score.recall == 1.0, rule_id
        assert score.precision == 1.0, rule_id
        assert score.lookalikes_fired == 0, rule_id
    assert result.perfect
    assert not result.missed and not result.unexpected
    # look-alikes of every rule are in the truth, and none of them alerted
    lookalike_rules = {c.rule_id for c in cases if not c.expected}
    assert lookalike_rules == ALL_RULES


def test_the_police_find_cards_days_to_months_after_their_openings(
    month: tuple[WorldFiles, Path],
) -> None:
    files, alerts = month
    records = [parse_implicated(line) for line in files.implicated.read_bytes().splitlines()]
    assert [r.reported_at for r in records] == sorted(r.reported_at for r in records)
    assert {r.kind for r in records} == {"sim", "account"}
    assert any(r.source for r in records) and not all(r.source for r in records)
    traces = [orjson.loads(line) for line in alerts.with_name("traces.jsonl").read_bytes().split()]
    days = sorted(t["days_to_report"] for t in traces)
    assert days[0] < 14 and days[-1] > 90  # from days to months
    last = orjson.loads(files.events.read_bytes().splitlines()[-1])["occurred_at"]
    assert any(t["reported_at"] > last for t in traces)  # some long after the period
    assert {t["channel"] for t in traces} == {"counter", "dealer", "online"}
    # a number opened after its report, and numbers never opened: dead letters, two rounds
    dead = alerts.with_name("deadletter.jsonl").read_bytes().splitlines()
    assert len(dead) == 6 and all(NO_OPENING.encode() in line for line in dead)
    assert len(traces) + len(dead) == len(records)


def test_a_longer_period_has_the_lookalikes_that_need_one(tmp_path: Path) -> None:
    files = write_world(simulate(3_000, days=120, seed=3), tmp_path)
    cases = read_truth(files.truth)
    lookalikes = [c for c in cases if not c.expected and c.rule_id == "sim_nonlocal_monthly_limit"]
    assert {c.label for c in lookalikes} == {
        "non-local ID, second SIM after 30 days",  # only in a period of 40 days or more
        "local ID, second SIM within 30 days",
    }
    far = "three implicated cards opened over more than 90 days"  # 100 days or more
    places = [c for c in cases if not c.expected and c.label == far]
    assert {c.rule_id for c in places} == {"outlet_implicated", "agent_implicated"}
    result = evaluate(cases, read_alerts(replayed(files, tmp_path / "a.jsonl")), RULE_IDS)
    assert result.perfect, result.unexpected


def test_without_the_holdings_only_the_limit_cases_within_the_period_are_found(
    month: tuple[WorldFiles, Path], tmp_path: Path
) -> None:
    files, _ = month
    alerts = read_alerts(replayed(files, tmp_path / "alerts.jsonl", holdings=False))
    result = evaluate(read_truth(files.truth), alerts, RULE_IDS)
    assert not result.unexpected  # holdings only add to what a person holds
    assert {c.label for c in result.missed} == {
        "held five SIMs at the carrier, opened a sixth",
        "three SIMs held in two provinces, two opened, then a sixth and a seventh",
        "five SIMs at the carrier in two provinces, opened a sixth",
        "held a Type I account at the bank, opened another",
        "held a Type I account at the bank in another province, opened another here",
    }
    assert result.scores["bank_type1_limit"].found == 2  # two Type I opened in the month


def holders(path: Path) -> list[HoldingRecord]:
    records = []
    for line in read_holdings(path):
        assert line.record is not None, line.error
        assert line.raw == line.record.to_json()  # written as the engine writes them
        records.append(line.record)
    return records


def test_the_holdings_are_snapshots_of_the_people_in_the_events_at_the_start(
    month: tuple[WorldFiles, Path],
) -> None:
    files, _ = month
    records = holders(files.holdings)
    assert len({r.key() for r in records}) == len(records)  # one per (source, identity)
    start = datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=8)))
    assert {r.snapshot.as_of for r in records} == {start}
    people = {orjson.loads(line)["id_number"] for line in files.events.read_bytes().splitlines()}
    held = {r.id_number for r in records}
    assert held <= people and len(held) > 0.95 * len(people)
    sims: Counter[str] = Counter()
    accounts: Counter[str] = Counter()
    for r in records:
        sims[r.id_number] += r.snapshot.sim_count("personal")
        accounts[r.id_number] += sum(count for _, count in r.snapshot.accounts)
    assert sum(1 <= sims[who] <= 3 for who in held) > 0.8 * len(held)
    assert sum(1 <= accounts[who] <= 2 for who in held) > 0.7 * len(held)
    assert max(accounts.values()) <= 3  # a case's Type I and II, or two ordinary ones
    # non-local people hold cards at home: carriers and banks of other provinces
    elsewhere = {r.snapshot.source.split("-")[1] for r in records} - {"GS"}
    assert len(elsewhere) >= 10


def test_ordinary_holdings_stay_clear_of_the_limits() -> None:
    """Everyone who is not a limit case ends the month with five SIMs or fewer a carrier."""
    world = Simulator(seed=8, days=30).build(ordinary_people=3000, rounds=0)
    assert world.holdings and not world.cases
    sims: Counter[tuple[str, str]] = Counter()
    type_one: Counter[tuple[str, str]] = Counter()
    for holding in world.holdings:
        institution = holding.source.split("-")[0]
        sims[holding.id_number, institution] += holding.counts.get("personal", 0)
        type_one[holding.id_number, institution] += holding.counts.get("I", 0)
    for event in world.events:
        institution = event["source"].split("-")[0]
        if event["event_type"] == "sim.activate":
            sims[event["id_number"], institution] += 1
        elif event["event_type"] == "bank.open" and event.get("account_class") == "I":
            type_one[event["id_number"], institution] += 1
    assert 4 <= max(sims.values()) <= 5  # some come close
    assert max(type_one.values()) == 1


def test_the_evaluation_names_what_was_missed_and_what_was_unexpected(
    month: tuple[WorldFiles, Path], tmp_path: Path
) -> None:
    files, alerts = month
    lines = alerts.read_bytes().splitlines()
    # drop the gang alerts: their cases are missed
    kept = [line for line in lines if orjson.loads(line)["rule_id"] != "gang_batch_open"]
    partial = tmp_path / "partial.jsonl"
    partial.write_bytes(b"\n".join(kept) + b"\n")
    # a truth without the churn cases makes the churn alerts unexpected
    truth = [
        line
        for line in files.truth.read_bytes().splitlines()
        if orjson.loads(line)["rule_id"] != "sim_churn" or not orjson.loads(line)["expected"]
    ]
    no_churn = tmp_path / "truth.jsonl"
    no_churn.write_bytes(b"\n".join(truth) + b"\n")

    result = evaluate(read_truth(no_churn), read_alerts(partial), RULE_IDS)
    gangs = result.scores["gang_batch_open"]
    assert gangs.found == 0 and gangs.recall == 0.0 and gangs.alerts == 0
    assert {c.rule_id for c in result.missed} == {"gang_batch_open"}
    assert len(result.missed) == gangs.cases
    churn = result.scores["sim_churn"]
    assert churn.cases == 0 and churn.recall is None and churn.precision == 0.0
    assert {u.alert.rule_id for u in result.unexpected} == {"sim_churn"}
    overall = result.overall
    assert overall.found == overall.cases - gangs.cases
    assert overall.expected_alerts == overall.alerts - churn.alerts

    assert run_evaluate(no_churn, partial, RULE_IDS, strict=True) == 1
    assert run_evaluate(files.truth, alerts, RULE_IDS, strict=True) == 0


def test_an_alert_on_a_lookalike_is_unexpected_and_names_it(
    month: tuple[WorldFiles, Path],
) -> None:
    files, alerts = month
    cases = read_truth(files.truth)
    # pretend the expired watchlist entry was still active: the look-alike's event alerts
    lookalike = next(c for c in cases if c.label == "watchlist entry expired")
    source, event_id = lookalike.events[0].split("/", 1)
    raw = [orjson.loads(line) for line in alerts.read_bytes().splitlines()]
    fake = next(a for a in raw if a["rule_id"] == "watchlist_hit")
    fake["alert_id"] = "f" * 32
    fake["evidence"] = [{**fake["evidence"][0], "source": source, "event_id": event_id}]

    result = evaluate(cases, [*read_alerts(alerts), decode_alert(orjson.dumps(fake))], RULE_IDS)
    assert [u.lookalikes for u in result.unexpected] == [[lookalike]]
    assert result.scores["watchlist_hit"].lookalikes_fired == 1
    assert not result.missed


def test_the_same_seed_gives_the_same_files(tmp_path: Path) -> None:
    first = write_world(simulate(3_000, seed=5), tmp_path / "a")
    second = write_world(simulate(3_000, seed=5), tmp_path / "b")
    other = write_world(simulate(3_000, seed=6), tmp_path / "c")
    for name in ("events", "watchlist", "truth", "holdings", "implicated"):
        assert getattr(first, name).read_bytes() == getattr(second, name).read_bytes()
    assert first.events.read_bytes() != other.events.read_bytes()


def test_events_are_valid_ordered_and_varied() -> None:
    world = simulate(30_000, days=30, seed=9)
    parsed = []
    for event in world.events:
        raw = orjson.dumps({k: v for k, v in event.items() if v is not None})
        try:
            parsed.append(parse_event(raw))
        except InvalidEvent as exc:  # pragma: no cover - shown if it ever happens
            pytest.fail(f"{raw!r}: {exc}")
    times = [e.occurred_at for e in parsed]
    assert times == sorted(times)
    assert times[0].date() >= date(2026, 1, 1) and times[-1].date() <= date(2026, 1, 30)
    refs = Counter((e.source, e.event_id) for e in parsed)
    assert refs.most_common(1)[0][1] == 1  # (source, event_id) is unique
    assert {e.event_type for e in parsed} == {
        "sim.activate",
        "sim.cancel",
        "bank.open",
        "bank.close",
    }
    assert {e.channel for e in parsed} == {"counter", "online", "dealer"}
    assert len({e.source for e in parsed}) >= 10  # three carriers, banks, payment institutions
    homes = Counter(e.id_province for e in parsed if e.is_nonlocal)
    assert len(homes) >= 20  # non-local people from most of the country
    assert 0.1 < sum(homes.values()) / len(parsed) < 0.3
    people = {e.id_number for e in parsed}
    assert len(people) == world.people  # one number per person, never reused
    assert 0.9 * 30_000 < len(parsed) < 1.1 * 30_000


def test_every_case_lists_events_that_exist() -> None:
    world = Simulator(seed=1, days=30).build(ordinary_people=100, rounds=1)
    refs = {f"{e['source']}/{e['event_id']}" for e in world.events}
    for case in world.cases:
        assert case.events and set(case.events) <= refs, case
    identities = [c for c in world.cases if c.subject_kind == "identity"]
    ids = {e["id_number"] for e in world.events}
    assert {c.subject for c in identities} <= {mask_id(i) for i in ids}
    truth = b"".join(c.to_json() for c in world.cases)
    assert not any(i.encode() in truth for i in ids)  # the ground truth holds masked ids only


def test_every_case_stays_within_the_shortest_period() -> None:
    world = Simulator(seed=2, days=10).build(ordinary_people=200, rounds=3)
    days = {event["occurred_at"][:10] for event in world.events}
    assert min(days) == "2026-01-01" and max(days) <= "2026-01-10"


def test_cases_need_ten_days() -> None:
    with pytest.raises(ValueError, match="10 days"):
        Simulator(days=5).build(ordinary_people=10, rounds=1)
    assert Simulator(days=5).build(ordinary_people=10, rounds=0).events


def test_simulate_and_evaluate_commands(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "sim"
    assert main(["simulate", "--out", str(out), "--events", "3000", "--seed", "4"]) == 0
    said = capsys.readouterr().out
    assert "labelled cases" in said and "duanka evaluate" in said
    assert "holdings snapshots" in said and f"--holdings {out / 'holdings.jsonl'}" in said
    assert "numbers found in fraud cases" in said
    assert f"--implicated {out / 'implicated.jsonl'}" in said
    # the commands it says to run next, as they are
    replay_command, evaluate_command = said.split("next: ", 1)[1].strip().split(" && ")
    config = tmp_path / "config.yaml"
    config.write_text("pseudonym: {key: simulate-test}\n")
    monkeypatch.setenv("DUANKA_CONFIG", str(config))
    replay_args = shlex.split(replay_command)[1:]
    assert main([*replay_args, "--quiet", "--processes", "1"]) == 0
    assert "implicated numbers traced" in capsys.readouterr().err
    assert (out / "traces.jsonl").read_bytes()
    alerts = out / "alerts.jsonl"
    assert main([*shlex.split(evaluate_command)[1:], "--strict"]) == 0
    table = capsys.readouterr().out
    assert "overall" in table and "every labelled case was found" in table
    for rule_id in ALL_RULES:
        row = re.search(rf"^{rule_id} +(\d+) +(\d+) +1\.00 ", table, re.MULTILINE)
        assert row and row[1] == row[2] != "0", rule_id

    assert main(["simulate", "--events", "10"]) == 1
    assert "--out DIR" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "nothing.jsonl"), str(alerts)]) == 1
    assert "no such file" in capsys.readouterr().err
    assert main(["evaluate", str(alerts), str(alerts)]) == 1  # alerts are not a ground truth
    assert "not a ground-truth case" in capsys.readouterr().err

"""No personal data where it must not be: internal topics, changelogs, state files, logs, pages.

Personal data here is an id number, and the phone numbers, account numbers
and device ids events carry (the worker keeps keyed tokens of those, and
masks in alerts).

A simulated province in which every rule fires (the watchlist loaded through
its topic and one entry removed again, the holdings snapshots through theirs,
a person with a non-resident id, and malformed records that carry id
numbers) runs through a real worker. Every id number of the input is then
looked for in everything the worker writes or shows: every topic of the run
except the inputs and the dead-letter topic (so
the alerts too, which may carry a number only masked), the RocksDB stores
(iterated, and every file under the data dir scanned byte for byte), the
worker's log, /metrics and the console's JSON. The pseudonyms, which is what
the worker keeps instead, must turn up in the same places, so the search
cannot pass by looking in the wrong one.

The worker then runs once more, at log level debug, on a second month of
events: faust's and aiokafka's debug logging must leak nothing either.
"""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import orjson
import pytest
from checkkit import decide
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient
from rocksdict import AccessType, Options, Rdict
from rulekit import ALL_RULES
from workerkit import KEY, WorkerRun, by_alert_id, read_topic, replay_alerts, write_world

from producers.simulator import Simulator, World, iter_lines
from rules.idnumber import check_digit
from rules.pseudonym import Pseudonymizer, mask_id

PSEUDONYMS = Pseudonymizer(KEY.encode())
# what an event carries besides the id number that is personal data too
PERSONAL_FIELDS = ("msisdn", "account_id", "device_id", "contact_phone")
WAIT_S = 120.0


def resident(first17: str) -> str:
    return first17 + check_digit(first17)


PASSPORT = "PE-2026-0731-LEAKCHECK"  # an `other` id: pseudonymised and masked like any
REMOVED = resident("62010219880717004")  # a watch entry loaded, then removed
# valid id numbers that only ever appear inside records the worker rejects
REJECTED = resident("62010319770228005")
BAD_CHECK = REJECTED[:17] + ("0" if REJECTED[17] != "0" else "1")
WATCH_REJECTED = resident("62010419691212001")


@pytest.fixture
def run(worker_run: WorkerRun) -> WorkerRun:
    return worker_run


def id_pattern(numbers: Iterable[str]) -> re.Pattern[bytes]:
    """Any of the id numbers, in either case; a resident id also by its first 17 digits.

    The 17 digits alone catch a number whatever became of its check character.
    """
    forms: set[bytes] = set()
    for number in numbers:
        forms |= {number.encode(), number.lower().encode()}
        if len(number) == 18 and number[:17].isdigit():
            forms.add(number[:17].encode())
    return re.compile(b"|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True)))


class Search:
    """Looks for id numbers (leaks) and for pseudonyms (the control) in named places."""

    def __init__(self, numbers: Iterable[str], pseudonyms: Iterable[str]) -> None:
        self.numbers = set(numbers)
        self.ids = id_pattern(self.numbers)
        self.pseudonyms = re.compile(b"|".join(re.escape(p.encode()) for p in set(pseudonyms)))
        self.leaks: list[str] = []
        self.seen: dict[str, int] = {}  # kind of place -> pseudonyms found there
        self.scanned: dict[str, int] = {}  # kind of place -> things scanned

    def scan(self, kind: str, place: str, data: bytes | None) -> None:
        self.scanned[kind] = self.scanned.get(kind, 0) + 1
        if not data:
            return
        for match in self.ids.finditer(data):
            context = data[max(0, match.start() - 80) : match.end() + 80]
            self.leaks.append(f"{place}: {match.group().decode()} in {context!r}")
        self.seen[kind] = self.seen.get(kind, 0) + len(self.pseudonyms.findall(data))


def first_month(tmp_path: Path) -> tuple[World, Path, Path, Path]:
    """Every rule's cases and a passport holder mailing a SIM to a hotspot; the replay files."""
    sim = Simulator(seed=21, days=30)
    world = sim.build(ordinary_people=100)
    mailed = {"method": "mail", "region_code": "530102", "address_key": "pp-1"}
    sim.emit("sim.activate", PASSPORT, sim.when(3), id_type="other", delivery=mailed)
    world.events.sort(key=lambda e: (e["occurred_at"], e["source"], e["event_id"]))
    events, watchlist, holdings = write_world(world, tmp_path)
    return world, events, watchlist, holdings


def second_month(tmp_path: Path) -> World:
    """Another month, after the first, of people of the same province (for the debug run)."""
    world = Simulator(seed=22, start=date(2026, 3, 1), days=10).build(ordinary_people=20)
    (tmp_path / "second.jsonl").write_bytes(b"".join(x + b"\n" for x in iter_lines(world.events)))
    return world


def malformed(world: World) -> list[tuple[str, bytes, bytes | None]]:
    """(topic name, key, value) of records carrying id numbers that the worker must reject."""
    good = dict(world.events[0])
    entry = {**world.watchlist[0], "id_number": WATCH_REJECTED, "scope": "everything"}

    def sim(**fields: Any) -> bytes:
        return orjson.dumps({**good, **fields})

    return [
        ("sim_events", REJECTED.encode(), sim(event_id="BAD-1", id_number=REJECTED, channel="fax")),
        ("sim_events", BAD_CHECK.encode(), sim(event_id="BAD-2", id_number=BAD_CHECK)),
        ("bank_events", b"-", sim(event_id="BAD-3", id_number=REJECTED, event_type="bank.open")),
        ("watchlist", WATCH_REJECTED.encode(), orjson.dumps(entry)),
        ("watchlist", BAD_CHECK.encode(), None),  # a removal naming an invalid number
    ]


def send(run: WorkerRun, records: list[tuple[str, bytes, bytes | None]]) -> None:
    producer = KafkaProducer(bootstrap_servers=run.bootstrap)
    try:
        for name, key, value in records:
            producer.send(run.topics[name], key=key, value=value).get(timeout=30)
    finally:
        producer.close()


def page(run: WorkerRun, path: str) -> bytes:
    url = f"http://127.0.0.1:{run.web_port}{path}"
    with urllib.request.urlopen(url, timeout=10) as response:
        return bytes(response.read())


def wait_for_page(run: WorkerRun, path: str, ready: Callable[[bytes], bool]) -> bytes:
    """The page once `ready` holds for it (the worker may still be starting)."""
    deadline = time.monotonic() + WAIT_S
    body = b""
    while time.monotonic() < deadline:
        run.check_alive()
        try:
            body = page(run, path)
        except OSError:
            body = b""
        if body and ready(body):
            return body
        time.sleep(0.5)
    raise AssertionError(f"{path} did not settle: {body[-2000:]!r}")


def total(metrics: bytes, family: str) -> float:
    """The sum of a metric family's samples in a Prometheus exposition."""
    prefix = family.encode()
    return sum(
        float(line.rpartition(b" ")[2])
        for line in metrics.splitlines()
        if line.startswith(prefix + b"{") or line.startswith(prefix + b" ")
    )


def distinct(records: list[Any]) -> int:
    return len({orjson.loads(r.value)["alert_id"] for r in records})


def run_topics(run: WorkerRun, admin: KafkaAdminClient) -> list[str]:
    """Every topic on the broker that belongs to this run, but its inputs and dead letters."""
    inputs = ("sim_events", "bank_events", "watchlist", "holdings", "deadletter")
    outside = {run.topics[n] for n in inputs}
    return sorted(t for t in admin.list_topics() if run.run in t and t not in outside)


def stores(data_dir: Path) -> list[Path]:
    """The RocksDB databases under the worker's data dir (each has a CURRENT file)."""
    return sorted(current.parent for current in data_dir.rglob("CURRENT"))


def read_store(path: Path) -> list[tuple[bytes, bytes]]:
    """Every key and value of a RocksDB database, opened read-only as faust writes it (raw)."""
    db = Rdict(str(path), options=Options(raw_mode=True), access_type=AccessType.read_only())
    try:
        items = []
        for key, value in db.items():
            assert isinstance(key, bytes) and isinstance(value, bytes)  # raw mode
            items.append((key, value))
        return items
    finally:
        db.close()


@dataclass
class FirstRun:
    """The first month through the worker at log level info, and its pages at the end."""

    world: World
    events: Path
    watchlist: Path
    holdings: Path
    expected: dict[str, dict[str, Any]]
    metrics: bytes
    console: bytes


def ask_checks(run: WorkerRun, world: World, count: int = 40) -> int:
    """Pre-opening checks for people of the month (the passport holder too): decided, audited."""
    openings = [e for e in world.events if e["event_type"] in ("sim.activate", "bank.open")]
    chosen = [e for e in openings if e["id_number"] == PASSPORT][:1] + openings[:count]
    for n, event in enumerate(chosen):
        request = {k: v for k, v in event.items() if k != "event_id"}
        answer = decide(run, request | {"schema": "duanka.check/1", "check_id": f"leak-{n}"})
        assert answer["subject"]["id_masked"] == mask_id(event["id_number"])
    assert any(e["id_number"] == PASSPORT for e in chosen)
    return len(chosen)


def first_run(run: WorkerRun, tmp_path: Path) -> FirstRun:
    world, events, watchlist, holdings = first_month(tmp_path)
    expected = replay_alerts(run, events, watchlist, holdings)
    assert {a["rule_id"] for a in expected.values()} == ALL_RULES
    assert mask_id(PASSPORT) in {a["subject"].get("id_masked") for a in expected.values()}
    removed = tmp_path / "removed.jsonl"
    removed.write_bytes(orjson.dumps({**world.watchlist[0], "id_number": REMOVED}) + b"\n")
    bad = malformed(world)

    run.load_lists(watchlist, holdings)
    run.duanka("watchlist", "load", str(removed))
    run.duanka("watchlist", "remove", REMOVED)
    send(run, bad)
    run.start()
    run.duanka("produce", "--quiet", str(events))
    alerts = run.read("alerts", until=lambda rs: distinct(rs) >= len(expected), settle=0)
    assert by_alert_id([r.value for r in alerts]) == expected
    checked = ask_checks(run, world)
    metrics = wait_for_page(
        run,
        "/metrics",
        lambda m: (
            total(m, "duanka_events_total") == len(world.events)
            and total(m, "duanka_rejected_total") == len(bad)
            and total(m, "duanka_events_held") == 0
        ),
    )
    console = wait_for_page(
        run, "/console/alerts.json", lambda body: orjson.loads(body)["total"] == len(expected)
    )
    decisions = run.read("decisions", until=lambda rs: len(rs) >= checked)
    assert len(decisions) == checked
    run.stop()
    return FirstRun(world, events, watchlist, holdings, expected, metrics, console)


def debug_run(run: WorkerRun, tmp_path: Path, first: FirstRun) -> World:
    """The same worker again, at log level debug, on a later month."""
    later = second_month(tmp_path)
    both = tmp_path / "both.jsonl"
    both.write_bytes(first.events.read_bytes() + (tmp_path / "second.jsonl").read_bytes())
    expected = replay_alerts(run, both, first.watchlist, first.holdings)
    assert len(expected) > len(first.expected)
    run.start("--loglevel", "debug")
    run.duanka("produce", "--quiet", str(tmp_path / "second.jsonl"))
    alerts = run.read("alerts", until=lambda rs: distinct(rs) >= len(expected), settle=0)
    assert by_alert_id([r.value for r in alerts]) == expected
    wait_for_page(
        run,
        "/metrics",
        lambda m: (
            total(m, "duanka_events_total") == len(later.events)
            and total(m, "duanka_events_held") == 0
        ),
    )
    run.stop()
    return later


def scan_topics(search: Search, run: WorkerRun, admin: KafkaAdminClient) -> set[bytes]:
    """Every record of the run's other topics; returns the identity changelog's keys."""
    topics = run_topics(run, admin)
    print(f"topics scanned: {topics}")
    assert len([t for t in topics if t.endswith("-changelog")]) == 3, topics
    assert run.topics["alerts"] in topics and run.topics["identity_events"] in topics
    identity_keys: set[bytes] = set()
    for topic in topics:
        for record in read_topic(run.bootstrap, topic):
            place = f"topic {topic} record {record.partition}/{record.offset}"
            search.scan("topics", place + " key", record.key)
            search.scan("topics", place + " value", record.value)
            for name, value in record.headers or []:
                search.scan("topics", f"{place} header {name}", name.encode() + b"=" + value)
            if topic.endswith("-identity-state-changelog") and record.key:
                identity_keys.add(record.key)
        if topic == run.topics["alerts"]:
            alerts = [orjson.loads(r.value) for r in read_topic(run.bootstrap, topic)]
            assert_masked(alerts, search.numbers)
    return identity_keys


def assert_masked(alerts: list[dict[str, Any]], numbers: set[str]) -> None:
    """Alerts show people by the masks of their numbers (the search checks: never the number)."""
    masks = {mask_id(n) for n in numbers}
    shown = {alert["subject"].get("id_masked") for alert in alerts}
    assert shown - {None} and shown <= masks | {None}


def scan_data_dir(search: Search, data_dir: Path) -> set[bytes]:
    """Every key and value of every store, then every file byte for byte; the identity keys."""
    databases = stores(data_dir)
    print(f"stores: {[db.name for db in databases]}")
    assert any("identity-state" in db.name for db in databases), databases
    identity_keys: set[bytes] = set()
    for db in databases:
        for key, value in read_store(db):
            search.scan("store items", f"store {db.name} key", key)
            search.scan("store items", f"store {db.name} value of {key!r}", value)
            if "identity-state" in db.name:
                identity_keys.add(key)
    for path in sorted(p for p in data_dir.rglob("*") if p.is_file()):
        search.scan("files", f"file {path.relative_to(data_dir)}", path.read_bytes())
    return identity_keys


def test_no_id_number_outside_the_inputs(
    run: WorkerRun, tmp_path: Path, kafka_admin: KafkaAdminClient
) -> None:
    first = first_run(run, tmp_path)
    later = debug_run(run, tmp_path, first)
    people = first.world.events + later.events
    numbers = {e["id_number"] for e in people + first.world.watchlist}
    numbers |= {REMOVED, REJECTED, BAD_CHECK, WATCH_REJECTED}
    numbers |= {e[f] for e in people for f in PERSONAL_FIELDS if e.get(f)}
    assert any(e.get("device_id") for e in people) and any(e.get("contact_phone") for e in people)
    pseudonyms = {PSEUDONYMS.subject_key(e["id_type"], e["id_number"]) for e in people}
    search = Search(numbers, pseudonyms)

    changelog_keys = scan_topics(search, run, kafka_admin)
    store_keys = scan_data_dir(search, run.root / "data")
    # the control: every person's pseudonym is a key of the identity state, in both places
    assert {p.encode() for p in pseudonyms} <= changelog_keys & store_keys

    info, _, debug = run.log.read_bytes().partition(b"==== start 2 ====")
    assert b"rejected record topic=" in info
    assert b"[DEBUG]" in debug and b"[DEBUG]" not in info
    search.scan("log", "log (info)", info)
    search.scan("log", "log (debug)", debug)
    search.scan("pages", "/metrics", first.metrics)
    search.scan("pages", "/console/alerts.json", first.console)
    assert_masked(orjson.loads(first.console)["alerts"], numbers)

    print(f"scanned {search.scanned}; pseudonyms found {search.seen}; {len(numbers)} id numbers")
    assert not search.leaks, "\n".join(search.leaks[:20])
    # pseudonyms are what the worker keeps: found in the topics, the stores and their files
    assert search.seen.get("topics") and search.seen.get("store items") and search.seen.get("files")

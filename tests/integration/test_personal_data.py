"""No personal data where it must not be: internal topics, changelogs, state files, logs, pages.

Personal data here is an id number, and the phone numbers, account numbers,
device ids and delivery address keys events carry (the worker keeps keyed
tokens of those, and masks in alerts).

A simulated province in which every rule fires (the watchlist loaded through
its topic and one entry removed again, the holdings snapshots through theirs,
a person with a non-resident id, and malformed records that carry id
numbers) runs through a real worker. The police then give verdicts on some of
its alerts (one confirmed with a punishment, one dismissed, one under
investigation, one on an alert that does not exist), each with a free-text
note that names a person's id number, phone number and device id, and report
the numbers the simulator planted as found in fraud cases (some of them
numbers nobody opened), which the worker traces to their openings. Every id
number and other personal value of the input, and every note, is then looked
for in everything the worker writes or shows: every topic of the run except
the inputs (the police's verdicts among them) and the dead-letter topic (so
the alerts too, which may carry a number only masked, the cases, the case
links and every changelog), the RocksDB stores (iterated key by key, values
read as JSON too, and every file under the data dir scanned byte for byte),
the worker's log, /metrics and the console's JSON. The pseudonyms and keyed
tokens, which is what the worker keeps instead, must turn up in each of those
places, so the search cannot pass by looking in the wrong one. The dead
letter of the verdict on the unknown alert may carry personal data, but the
note is left out there too.

The worker then runs once more, at log level debug, on a second month of
events: faust's and aiokafka's debug logging must leak nothing either.
"""

from __future__ import annotations

import base64
import re
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
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
from rulekit import ALL_RULES, IMPLICATED_RULES
from workerkit import (
    KEY,
    WorkerRun,
    by_alert_id,
    console_opener,
    read_topic,
    replay_alerts,
    write_world,
)

from producers.simulator import Simulator, World, iter_lines
from rules.idnumber import check_digit
from rules.pseudonym import Pseudonymizer, mask_id
from stream.topics import TABLES

PSEUDONYMS = Pseudonymizer(KEY.encode())
# what an event carries besides the id number that is personal data too, and the
# kind of keyed token the worker keeps of it instead (rules/event.py `pseudonymise`)
TOKEN_KINDS = {
    "msisdn": "msisdn",
    "account_id": "account",
    "device_id": "device",
    "contact_phone": "phone",
}
PERSONAL_FIELDS = tuple(TOKEN_KINDS)
# the topics the worker writes: each must hold pseudonyms or tokens (the control)
WRITTEN = (
    "alerts",
    "decisions",
    "identity_events",
    "outlet_events",
    "agent_signals",
    "case_links",
    "cases",
    "number_events",
    "place_events",
    "traces",
)
# what the police write and the worker reads, like the carriers' and banks' events
INPUTS = ("sim_events", "bank_events", "watchlist", "holdings", "dispositions", "implicated")
WAIT_S = 120.0
VIEWER, PASSWORD = "leak-viewer", "a console password of the test"
POLICE = "GS-LZ-police-0042"


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


def json_strings(data: bytes | None) -> bytes | None:
    """The strings of a JSON document (keys too), unescaped, one a line; None if not JSON."""
    if not data or data.lstrip()[:1] not in (b"{", b"[", b'"'):
        return None
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return "\n".join(strings_of(document)).encode()


def strings_of(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from strings_of(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings_of(item)


class Search:
    """Looks for personal data (leaks) and for pseudonyms and tokens (the controls) in places."""

    def __init__(self, secrets: Iterable[str], controls: Iterable[str]) -> None:
        self.secrets = id_pattern(secrets)
        self.controls = re.compile(b"|".join(re.escape(c.encode()) for c in sorted(set(controls))))
        self.leaks: list[str] = []
        self.found: dict[str, set[bytes]] = {}  # place -> the distinct controls found there
        self.scanned: dict[str, int] = {}  # place -> things scanned there

    def scan(self, where: str, what: str, data: bytes | None) -> None:
        """Search `data`, and its strings if it is JSON (escapes undone), in the place `where`."""
        self.scanned[where] = self.scanned.get(where, 0) + 1
        found = self.found.setdefault(where, set())
        for text in (data, json_strings(data)):
            if not text:
                continue
            for match in self.secrets.finditer(text):
                context = text[max(0, match.start() - 80) : match.end() + 80]
                self.leaks.append(f"{where}, {what}: {match.group().decode()} in {context!r}")
            found.update(self.controls.findall(text))

    def has(self, where: str, control: str) -> bool:
        return control.encode() in self.found.get(where, set())

    def empty(self) -> list[str]:
        """The places scanned where no control turned up."""
        return sorted(where for where in self.scanned if not self.found.get(where))


def first_month(tmp_path: Path) -> tuple[World, Path, Path, Path]:
    """Every rule's cases and a passport holder mailing a SIM to a hotspot; the replay files.

    The numbers the police found in fraud cases go to implicated.jsonl beside them.
    """
    sim = Simulator(seed=21, days=30)
    world = sim.build(ordinary_people=100)
    mailed = {"method": "mail", "region_code": "530102", "address_key": "pp-1"}
    sim.emit("sim.activate", PASSPORT, sim.when(3), id_type="other", delivery=mailed)
    world.events.sort(key=lambda e: (e["occurred_at"], e["source"], e["event_id"]))
    events, watchlist, holdings = write_world(world, tmp_path)
    implicated = tmp_path / "implicated.jsonl"
    implicated.write_bytes(b"".join(r.to_json() + b"\n" for r in world.implicated))
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


@dataclass(frozen=True)
class Verdict:
    """A police verdict of the test, and the personal values its free-text note names."""

    alert_id: str
    status: str
    values: tuple[str, str, str]  # an id number, a phone number and a device id of the input
    punish: bool = False

    @property
    def note(self) -> str:
        id_number, msisdn, device = self.values
        return f"{self.status}: 身份证 {id_number}, 手机 {msisdn}, device {device}; see the file"

    def args(self) -> list[str]:
        """`duanka dispose` arguments for it."""
        args = [self.alert_id, "--status", self.status, "--by", POLICE, "--note", self.note]
        if self.punish:
            args += ["--punish-scope", "telecom", "--since", "2026-12-01", "--until", "2028-12-01"]
            args += ["--basis", "2024 joint punishment: card trade"]
        return args


def personal_values(world: World, subject_key: str | None, skip: int = 0) -> tuple[str, str, str]:
    """An id number, a phone number and a device id of the input: the person's own where known."""
    own = [
        e
        for e in world.events
        if PSEUDONYMS.subject_key(e["id_type"], e["id_number"]) == subject_key
    ]
    others = world.events[skip:]

    def first(name: str) -> str:
        return str(next(e[name] for e in own + others if e.get(name)))

    return (own or others)[0]["id_number"], first("msisdn"), first("device_id")


def choose_verdicts(world: World, alerts: dict[str, dict[str, Any]]) -> list[Verdict]:
    """Verdicts on two alerted people and on a place, and one on an alert that does not exist."""
    people = sorted(
        (a for a in alerts.values() if a["subject"]["kind"] == "identity"),
        key=lambda a: a["alert_id"],
    )
    punished = people[0]
    other = next(a for a in people if a["subject"]["key"] != punished["subject"]["key"])
    places = [a for a in alerts.values() if a["subject"]["kind"] != "identity"]
    place = min(places, key=lambda a: a["alert_id"])
    key = punished["subject"]["key"], other["subject"]["key"]
    return [
        Verdict(punished["alert_id"], "confirmed", personal_values(world, key[0]), punish=True),
        Verdict(other["alert_id"], "dismissed", personal_values(world, key[1])),
        Verdict(place["alert_id"], "investigating", personal_values(world, None, 7)),
        Verdict(uuid.uuid4().hex, "confirmed", personal_values(world, None, 13)),  # no such alert
    ]


def page(run: WorkerRun, path: str, opener: urllib.request.OpenerDirector | None = None) -> bytes:
    url = f"http://127.0.0.1:{run.web_port}{path}"
    with (opener or urllib.request.build_opener()).open(url, timeout=10) as response:
        return bytes(response.read())


def wait_for_page(
    run: WorkerRun, path: str, ready: Callable[[bytes], bool], signed_in: bool = False
) -> bytes:
    """The page once `ready` holds for it (the worker may still be starting).

    `signed_in`: as the viewer `add_viewer` made (the console needs a user).
    """
    deadline = time.monotonic() + WAIT_S
    body = b""
    opener = None
    while time.monotonic() < deadline:
        run.check_alive()
        try:
            if signed_in and opener is None:
                opener = console_opener(run, VIEWER, PASSWORD)
            body = page(run, path, opener)
        except OSError:
            body = b""
        if body and ready(body):
            return body
        time.sleep(0.5)
    raise AssertionError(f"{path} did not settle: {body[-2000:]!r}")


def wait_until(what: str, holds: Callable[[], bool], run: WorkerRun) -> None:
    deadline = time.monotonic() + WAIT_S
    while not holds():
        run.check_alive()
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not in {WAIT_S:.0f} s")
        time.sleep(0.5)


def total(metrics: bytes, family: str, **labels: str) -> float:
    """The sum of a metric family's samples (with these label values) in a Prometheus exposition."""
    prefix = family.encode()
    wanted = [f'{name}="{value}"'.encode() for name, value in labels.items()]
    return sum(
        float(line.rpartition(b" ")[2])
        for line in metrics.splitlines()
        if (line.startswith(prefix + b"{") or line.startswith(prefix + b" "))
        and all(label in line for label in wanted)
    )


def distinct(records: list[Any]) -> int:
    return len({orjson.loads(r.value)["alert_id"] for r in records})


def latest(records: Iterable[Any]) -> dict[bytes, bytes | None]:
    """A compacted topic as it stands: the last value of each key."""
    return {record.key: record.value for record in records}


def changelog(run: WorkerRun, table: str) -> str:
    return f"{run.app_id}-{table}-changelog"


def run_topics(run: WorkerRun, admin: KafkaAdminClient) -> list[str]:
    """Every topic on the broker that belongs to this run, but its inputs and dead letters."""
    outside = {run.topics[n] for n in (*INPUTS, "deadletter")}
    return sorted(t for t in admin.list_topics() if run.run in t and t not in outside)


def stores(data_dir: Path) -> list[Path]:
    """The RocksDB databases under the worker's data dir (each has a CURRENT file)."""
    return sorted(current.parent for current in data_dir.rglob("CURRENT"))


def table_of(db: Path) -> str:
    """The table of a store: faust keeps a table's partition in `<table>-<partition>.db`."""
    return re.sub(r"-[0-9]+\.db$", "", db.name)


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
    verdicts: list[Verdict]
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


def case_verdicts(records: Iterable[Any]) -> dict[str, int]:
    """The verdicts counted over the cases as they stand on the cases topic."""
    counts: Counter[str] = Counter()
    for value in latest(records).values():
        counts.update(orjson.loads(value or b"{}").get("verdicts", {}))  # a merged case: none
    return {status: n for status, n in counts.items() if n}


def punished(run: WorkerRun, verdict: Verdict, subject_key: str) -> bool:
    """Whether the identity's state on its changelog holds the verdict's punishment."""
    records = read_topic(run.bootstrap, changelog(run, "identity-state"))
    value = latest(records).get(subject_key.encode())
    return value is not None and verdict.alert_id in orjson.loads(value).get("p", {})


def dispose(run: WorkerRun, expected: dict[str, dict[str, Any]], verdicts: list[Verdict]) -> None:
    """The police's verdicts, until the cases count them and the punishment is in force."""
    for verdict in verdicts:
        run.duanka("dispose", *verdict.args())
    counted = dict(Counter(v.status for v in verdicts[:-1]))
    cases = run.read("cases", until=lambda rs: case_verdicts(rs) == counted, settle=0)
    assert case_verdicts(cases) == counted
    subject_key = expected[verdicts[0].alert_id]["subject"]["key"]
    wait_until("the punishment", lambda: punished(run, verdicts[0], subject_key), run)


def assert_note_left_out(run: WorkerRun, verdicts: list[Verdict]) -> None:
    """The verdict on an unknown alert is dead-lettered with its reason, but not its note."""
    unknown = verdicts[-1]
    key = unknown.alert_id.encode()
    records = run.read("deadletter", until=lambda rs: any(r.key == key for r in rs), settle=0)
    (dead,) = [r for r in records if r.key == key]
    letter = orjson.loads(dead.value)
    raw = letter["raw"].encode()
    if letter["raw_encoding"] == "base64":
        raw = base64.b64decode(raw)
    assert letter["topic"] == run.topics["dispositions"] and "unknown alert_id" in letter["error"]
    assert orjson.loads(raw)["status"] == unknown.status
    note = id_pattern([unknown.note, *unknown.values])
    for data in (dead.key, dead.value, raw, *(value for _, value in dead.headers or [])):
        assert not note.search(data), data
    notes = id_pattern(v.note for v in verdicts)
    assert not any(notes.search(r.value or b"") for r in records)


def add_viewer(run: WorkerRun) -> None:
    """The console user the test reads alerts.json as, as an operator adds one."""
    stdin = f"{PASSWORD}\n".encode()
    run.duanka("users", "add", VIEWER, "--role", "viewer", "--password-stdin", stdin=stdin)


def assert_notes_in_input(run: WorkerRun, verdicts: list[Verdict]) -> None:
    """The search finds each note, and what it names, where the police wrote it."""
    records = read_topic(run.bootstrap, run.topics["dispositions"])
    written = b"\n".join(r.value for r in records)
    for verdict in verdicts:
        for value in (verdict.note, *verdict.values):
            assert id_pattern([value]).search(written), value


def first_run(run: WorkerRun, tmp_path: Path) -> FirstRun:
    world, events, watchlist, holdings = first_month(tmp_path)
    implicated = tmp_path / "implicated.jsonl"
    expected = replay_alerts(run, events, watchlist, holdings, implicated)
    assert {a["rule_id"] for a in expected.values()} == ALL_RULES
    assert mask_id(PASSPORT) in {a["subject"].get("id_masked") for a in expected.values()}
    removed = tmp_path / "removed.jsonl"
    removed.write_bytes(orjson.dumps({**world.watchlist[0], "id_number": REMOVED}) + b"\n")
    bad = malformed(world)
    verdicts = choose_verdicts(world, expected)

    run.load_lists(watchlist, holdings)
    run.duanka("watchlist", "load", str(removed))
    run.duanka("watchlist", "remove", REMOVED)
    add_viewer(run)
    send(run, bad)
    run.start()
    run.duanka("produce", "--quiet", str(events))
    send(run, [("implicated", r.number.encode(), r.to_json()) for r in world.implicated])
    alerts = run.read("alerts", until=lambda rs: distinct(rs) >= len(expected), settle=0)
    assert by_alert_id([r.value for r in alerts]) == expected
    checked = ask_checks(run, world)
    dispose(run, expected, verdicts)
    assert_note_left_out(run, verdicts)
    assert_notes_in_input(run, verdicts)
    known = len(verdicts) - 1
    metrics = wait_for_page(
        run,
        "/metrics",
        lambda m: (
            total(m, "duanka_events_total") == len(world.events)
            and total(m, "duanka_rejected_total") == len(bad) + 1  # the unknown alert's verdict
            and total(m, "duanka_events_held") == 0
            and total(m, "duanka_dispositions_total", outcome="applied") == known
            and total(m, "duanka_dispositions_total", outcome="unknown_alert") == 1
            and total(m, "duanka_verdicts") == known
        ),
    )
    console = wait_for_page(
        run,
        "/console/alerts.json",
        lambda body: orjson.loads(body)["total"] == len(expected),
        signed_in=True,
    )
    decisions = run.read("decisions", until=lambda rs: len(rs) >= checked)
    assert len(decisions) == checked
    run.stop()
    return FirstRun(world, events, watchlist, holdings, expected, verdicts, metrics, console)


def implicated_alerts(alerts: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {k: a for k, a in alerts.items() if a["rule_id"] in IMPLICATED_RULES}


def debug_run(run: WorkerRun, tmp_path: Path, first: FirstRun) -> World:
    """The same worker again, at log level debug, on a later month."""
    later = second_month(tmp_path)
    both = tmp_path / "both.jsonl"
    both.write_bytes(first.events.read_bytes() + (tmp_path / "second.jsonl").read_bytes())
    expected = replay_alerts(run, both, first.watchlist, first.holdings)
    assert len(expected) > len(first.expected) - len(implicated_alerts(first.expected))
    # the first month's numbers found in fraud cases were traced then; the second
    # month's simulator gives out some of the same numbers again, later
    expected |= implicated_alerts(first.expected)
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


Tables = dict[str, dict[bytes, bytes | None]]  # table -> its keys and values as they stand


def scan_topics(search: Search, run: WorkerRun, admin: KafkaAdminClient) -> Tables:
    """Every record of the run's other topics; the tables as their changelogs hold them."""
    topics = run_topics(run, admin)
    print(f"topics scanned: {topics}")
    changelogs = {changelog(run, table): table for table in TABLES}
    assert len([t for t in topics if t.endswith("-changelog")]) == len(TABLES), topics
    assert set(changelogs) | {run.topics[name] for name in WRITTEN} <= set(topics), topics
    tables: Tables = {}
    for topic in topics:
        records = read_topic(run.bootstrap, topic)
        for record in records:
            what = f"record {record.partition}/{record.offset}"
            search.scan(f"topic {topic}", what + " key", record.key)
            search.scan(f"topic {topic}", what + " value", record.value)
            for name, value in record.headers or []:
                search.scan(f"topic {topic}", f"{what} header {name}", name.encode() + b"=" + value)
        if topic in changelogs:
            tables[changelogs[topic]] = latest(records)
    return tables


def assert_masked(alerts: list[dict[str, Any]], numbers: set[str]) -> None:
    """Alerts show people by the masks of their numbers (the search checks: never the number)."""
    masks = {mask_id(n) for n in numbers}
    shown = {alert["subject"].get("id_masked") for alert in alerts}
    assert shown - {None} and shown <= masks | {None}


def scan_data_dir(search: Search, data_dir: Path) -> Tables:
    """Every key and value of every store, then every file byte for byte; the tables' items."""
    databases = stores(data_dir)
    print(f"stores: {[db.name for db in databases]}")
    assert {table_of(db) for db in databases} == set(TABLES), databases
    tables: Tables = {table: {} for table in TABLES}
    for db in databases:
        table = table_of(db)
        for key, value in read_store(db):
            search.scan(f"store {table}", f"{db.name} key {key!r}", key)
            search.scan(f"store {table}", f"{db.name} value of {key!r}", value)
            tables[table][key] = value
    for path in sorted(p for p in data_dir.rglob("*") if p.is_file()):
        search.scan("files", str(path.relative_to(data_dir)), path.read_bytes())
    return tables


@dataclass(frozen=True)
class Controls:
    """What the worker keeps instead of personal data, that each place must show."""

    pseudonyms: set[str]  # every person's
    tokens: set[str]  # of every phone number, account and device id
    punished: str  # the pseudonym of the person the police confirmed and punished
    shared: set[str]  # tokens of the devices two or more people used


def controls_of(people: list[dict[str, Any]], first: FirstRun) -> Controls:
    pseudonyms = {PSEUDONYMS.subject_key(e["id_type"], e["id_number"]) for e in people}
    tokens = {
        str(PSEUDONYMS.token(TOKEN_KINDS[name], e[name]))
        for e in people
        for name in PERSONAL_FIELDS
        if e.get(name)
    }
    users: dict[str, set[str]] = {}
    for e in people:
        if e.get("device_id"):
            users.setdefault(e["device_id"], set()).add(e["id_number"])
    tokens |= {
        str(PSEUDONYMS.token("address", a))
        for e in people
        if (a := (e.get("delivery") or {}).get("address_key"))
    }
    shared = {str(PSEUDONYMS.token("device", d)) for d, ids in users.items() if len(ids) > 1}
    assert shared, "no device was shared"
    punished = first.expected[first.verdicts[0].alert_id]["subject"]["key"]
    return Controls(pseudonyms, tokens, punished, shared)


def assert_controls(search: Search, run: WorkerRun, controls: Controls) -> None:
    """Each place shows what the worker keeps: the search looked where the data would be."""
    # the log and /metrics name no one: their controls are the lines the test asserts in them
    required = [f"topic {run.topics[name]}" for name in WRITTEN]
    required += [f"topic {changelog(run, table)}" for table in TABLES]
    required += [f"store {table}" for table in TABLES] + ["files", "console"]
    assert set(required) <= search.scanned.keys(), required
    assert not set(required) & set(search.empty()), f"without controls: {search.empty()}"
    cases, links = f"topic {run.topics['cases']}", f"topic {run.topics['case_links']}"
    case_log = f"topic {changelog(run, 'case-state')}"
    identity_log = f"topic {changelog(run, 'identity-state')}"
    for where in (cases, links, case_log, "store case-state", identity_log, "store identity-state"):
        assert search.has(where, controls.punished), f"{where}: not the punished person"
    for where in (cases, case_log, "store case-state"):
        assert any(search.has(where, t) for t in controls.shared), f"{where}: no shared device"


def assert_tables(tables: Tables, first: FirstRun, controls: Controls) -> None:
    """Store and changelog alike: every person by pseudonym, the punishment, verdicts sans note."""
    assert {p.encode() for p in controls.pseudonyms} <= tables["identity-state"].keys()
    punishment = orjson.loads(tables["identity-state"][controls.punished.encode()] or b"{}")
    assert first.verdicts[0].alert_id in punishment["p"], punishment
    cases = tables["case-state"]
    assert {b"tdevice\x1f" + t.encode() for t in controls.shared} & cases.keys()
    for verdict in first.verdicts[:-1]:
        row = orjson.loads(cases[b"a" + verdict.alert_id.encode()] or b"{}")["verdict"]
        assert row["status"] == verdict.status and row["by"] == POLICE and "note" not in row


def test_no_id_number_outside_the_inputs(
    run: WorkerRun, tmp_path: Path, kafka_admin: KafkaAdminClient
) -> None:
    first = first_run(run, tmp_path)
    later = debug_run(run, tmp_path, first)
    people = first.world.events + later.events
    numbers = {e["id_number"] for e in people + first.world.watchlist}
    numbers |= {REMOVED, REJECTED, BAD_CHECK, WATCH_REJECTED}
    numbers |= {e[f] for e in people for f in PERSONAL_FIELDS if e.get(f)}
    addresses = {a for e in people if (a := (e.get("delivery") or {}).get("address_key"))}
    assert addresses, "no event carries a delivery address"
    numbers |= addresses  # the sources' address keys: the engine keeps its own tokens of them
    # the numbers the police found in fraud cases (some nobody opened): tokens only, too
    numbers |= {r.number for r in first.world.implicated}
    assert any(e.get("device_id") for e in people) and any(e.get("contact_phone") for e in people)
    notes = {v.note for v in first.verdicts}
    assert {value for v in first.verdicts for value in v.values} <= numbers
    controls = controls_of(people, first)
    search = Search(numbers | notes, controls.pseudonyms | controls.tokens)

    changelogs = scan_topics(search, run, kafka_admin)
    data = scan_data_dir(search, run.root / "data")
    for tables in (changelogs, data):
        assert_tables(tables, first, controls)
    alerts = [orjson.loads(r.value) for r in read_topic(run.bootstrap, run.topics["alerts"])]
    assert_masked(alerts, numbers)

    info, _, debug = run.log.read_bytes().partition(b"==== start 2 ====")
    assert b"rejected record topic=" in info and b"dead-lettered a verdict" in info
    assert b"[DEBUG]" in debug and b"[DEBUG]" not in info
    search.scan("log", "log (info)", info)
    search.scan("log", "log (debug)", debug)
    assert b"duanka_dispositions_total" in first.metrics
    search.scan("metrics", "/metrics", first.metrics)
    search.scan("console", "/console/alerts.json", first.console)
    assert_masked(orjson.loads(first.console)["alerts"], numbers)

    found = {where: len(found) for where, found in search.found.items()}
    print(f"scanned {search.scanned}; controls found {found}; {len(numbers)} personal values")
    assert not search.leaks, "\n".join(search.leaks[:20])
    assert_controls(search, run, controls)

"""A poison-pill storm: hundreds of malformed records among valid events, against a real worker.

Hypothesis draws the whole storm as one example: a pool of valid events
(from `strategies.valid_events`) and a long list of recipes, each a valid
copy of a pool event or a broken one (truncated, wrong types, over 64 KiB,
bad check digits, impossible dates, not UTF-8, null, not an object, nested
too deep, NaN, duplicated keys, control characters, random bytes), plus
garbage on the watchlist topic. About half the records are malformed. They go
with kafka-python to the SIM, bank and watchlist topics of a fresh worker,
the valid events in event-time order, then a sentinel event that must alert.

The worker must stay up, dead-letter every bad record exactly once with the
validator's field and reason, its source topic, partition and offset and its
raw bytes (cut to 4 KiB, base64 when not UTF-8), and screen every good one:
its alerts must equal replay's for the good records alone, and its event
counter the number of good events. Each example is a few hundred records and
a worker start, so only three run, and failing examples are not shrunk (each
step of shrinking would be another worker run).
"""

from __future__ import annotations

import base64
import hashlib
import time
import urllib.request
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from kafka import KafkaProducer
from strategies import valid_event_objects, valid_resident_id
from workerkit import WorkerRun, by_alert_id, read_topic, replay_alerts

from rules.deadletter import DEADLETTER_SCHEMA, RAW_LIMIT
from rules.errors import InvalidRecord
from rules.event import EARLIEST_TIME, LATEST_TIME, MAX_RECORD_BYTES, parse_event
from rules.watchlist import parse_watch, watch_identity

WAIT_S = 120.0
SENTINEL_ID = "SENTINEL-AFTER-THE-STORM"
REQUIRED = (
    *("schema", "event_id", "event_type", "occurred_at", "source", "id_type"),
    *("id_number", "region_code", "outlet_id", "channel", "verification"),
)
STRING_FIELDS = (*REQUIRED, "agent_id", "msisdn", "device_id", "contact_phone")
WRONG_VALUES: tuple[object, ...] = (0, -1, 1.5, True, False, [], ["x"], {}, {"a": 1})
IMPOSSIBLE_TIMES = (
    "2026-02-29T10:00:00+08:00",
    "2026-04-31T10:00:00+08:00",
    "2026-13-01T10:00:00+08:00",
    "2026-00-10T10:00:00+08:00",
    "2026-01-01T24:00:00+08:00",
    "2026-01-01T23:60:00Z",
    "2100-01-01T00:00:00Z",
    "1969-12-31T23:59:59Z",
)
NOT_UTF8 = (b"\xff", b"\xfe", b"\xc0\xaf", b"\xed\xa0\x80", b"\x80")
NOT_OBJECTS = (b"[]", b"[1,2,3]", b'"an event"', b"42", b"-0.5", b"true", b"false", b"{}x")
NON_FINITE = (b"NaN", b"Infinity", b"-Infinity")


@dataclass(frozen=True)
class Pill:
    """One record of the storm and what it was meant to be."""

    topic: str  # a key of WorkerRun.topics
    key: bytes | None
    value: bytes | None
    kind: str
    expect: str | None  # "good", the field a rejection must name, or None: as validated


def shifted(obj: dict[str, Any], seconds: int) -> str:
    """occurred_at moved by `seconds`, if it stays in the contract's range."""
    when = datetime.fromisoformat(obj["occurred_at"])
    moved = when + timedelta(seconds=seconds)
    return (moved if EARLIEST_TIME <= moved < LATEST_TIME else when).isoformat()


def with_field(raw: bytes, name: str, value: bytes) -> bytes:
    """`raw` (a JSON object) with `"name": value` added at its end, as raw JSON text."""
    return raw[:-1] + b',"' + name.encode() + b'":' + value + b"}"


def padded(raw: bytes, size: int) -> bytes:
    """`raw` (a JSON object) with a "padding" string that makes it `size` bytes."""
    fill = size - len(with_field(raw, "padding", b'""'))
    return with_field(raw, "padding", b'"' + b"x" * fill + b'"')


def noise(seed: int, size: int) -> bytes:
    """Deterministic pseudo-random bytes (the storm must be the same when replayed)."""
    out = b""
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{len(out)}".encode()).digest()
    return out[:size]


@dataclass(frozen=True)
class Draw:
    """Recipe `n`'s copy of a pool event (unique by its event_id), and its two numbers."""

    n: int
    kind: str
    a: int
    b: int
    obj: dict[str, Any]

    @property
    def raw(self) -> bytes:
        return orjson.dumps(self.obj)

    def with_(self, **fields: Any) -> bytes:
        return orjson.dumps({**self.obj, **fields})

    def pill(self, value: bytes | None, expect: str | None) -> Pill:
        """A record for the event's own topic, keyed like `duanka produce` keys it."""
        topic = "bank_events" if self.obj["event_type"].startswith("bank.") else "sim_events"
        return Pill(topic, self.obj["id_number"].encode(), value, self.kind, expect)


def good(d: Draw) -> Pill:
    variant = d.b % 5
    if variant == 1:  # escaped control characters in a free-text field
        return d.pill(d.with_(outlet_id="\x01\x1f" + d.obj["outlet_id"] + "\x7f"), "good")
    if variant == 2:  # close to the 64 KiB limit, or exactly at it
        return d.pill(padded(d.raw, MAX_RECORD_BYTES - d.a % 4000), "good")
    return d.pill(d.raw, "good")


def truncated(d: Draw) -> Pill:
    return d.pill(d.raw[: d.a % len(d.raw)], "record")


def wrong_type(d: Draw) -> Pill:
    name = STRING_FIELDS[d.a % len(STRING_FIELDS)]
    return d.pill(d.with_(**{name: WRONG_VALUES[d.b % len(WRONG_VALUES)]}), name)


def huge(d: Draw) -> Pill:
    return d.pill(padded(d.raw, MAX_RECORD_BYTES + 1 + d.b % 20_000), "record")


def bad_check(d: Draw) -> Pill:
    number = valid_resident_id("62", f"19{d.a % 90 + 10:02d}0{d.a % 9 + 1}15", f"{d.b % 1000:03d}")
    wrong = "0123456789X".replace(number[17], "")[d.b % 10]
    return d.pill(d.with_(id_type="resident_id", id_number=number[:17] + wrong), "id_number")


def impossible_date(d: Draw) -> Pill:
    if d.a % 3 == 0:  # a resident id born on 30 February, with a right check digit
        born = valid_resident_id("62", "19900230")
        return d.pill(d.with_(id_type="resident_id", id_number=born), "id_number")
    when = IMPOSSIBLE_TIMES[d.b % len(IMPOSSIBLE_TIMES)]
    return d.pill(d.with_(occurred_at=when), "occurred_at")


def not_utf8(d: Draw) -> Pill:
    at = d.b % (len(d.raw) + 1)
    return d.pill(d.raw[:at] + NOT_UTF8[d.a % len(NOT_UTF8)] + d.raw[at:], "record")


def null(d: Draw) -> Pill:
    if d.a % 3 == 0:
        return d.pill(None, "record")  # a tombstone
    if d.a % 3 == 1:
        return d.pill(b"null", "record")
    name = REQUIRED[d.b % len(REQUIRED)]
    return d.pill(d.with_(**{name: None}), name)


def not_object(d: Draw) -> Pill:
    return d.pill(NOT_OBJECTS[d.a % len(NOT_OBJECTS)], "record")


def nan(d: Draw) -> Pill:
    return d.pill(with_field(d.raw, "score", NON_FINITE[d.a % len(NON_FINITE)]), "record")


def control(d: Draw) -> Pill:
    if d.a % 2:  # unescaped inside a string: not JSON
        at = d.raw.index(b'"event_id":"') + len(b'"event_id":"')
        return d.pill(d.raw[:at] + bytes([d.b % 32]) + d.raw[at:], "record")
    return d.pill(d.with_(channel=chr(d.b % 32) + d.obj["channel"]), "channel")


def binary(d: Draw) -> Pill:
    return d.pill(noise(d.b, d.a % 300), None)


def deep(d: Draw) -> Pill:
    """Nested up to past orjson's limit (1024 levels): fine below it, not JSON beyond."""
    depth = 1 + d.b % 1100
    if d.a % 2:  # a valid event with a deeply nested extra field
        return d.pill(with_field(d.raw, "extra", b"[" * depth + b"]" * depth), None)
    return d.pill(b'{"a":' * depth + b"1" + b"}" * depth, None)


def dup_keys(d: Draw) -> Pill:
    """A field given twice, a valid and an invalid value in either order: the last counts."""
    name, valid, invalid = [
        ("channel", d.obj["channel"], "fax"),
        ("verification", d.obj["verification"], "video"),
        ("id_type", d.obj["id_type"], "passport"),
    ][d.a % 3]
    first, last = (valid, invalid) if d.b % 2 else (invalid, valid)
    head = b'{"' + name.encode() + b'":' + orjson.dumps(first) + b","
    return d.pill(head + with_field(d.raw, name, orjson.dumps(last))[1:], None)


def watch_bad_value(d: Draw) -> Pill:
    entry = watch_entry(d.obj["id_number"])
    value = [
        orjson.dumps({**entry, "scope": "everything"}),
        orjson.dumps({**entry, "until": entry["since"]}),
        orjson.dumps({**entry, "schema": "duanka.watch/2"}),
        orjson.dumps({**entry, "id_number": entry["id_number"] + "?"}),
        orjson.dumps(entry)[: d.b % 60],
        noise(d.b, 40) + b"\xff",
        b"x" * (MAX_RECORD_BYTES + 1),
    ][d.a % 7]
    return Pill("watchlist", f"bad-{d.n}".encode(), value, d.kind, None)


def watch_bad_key(d: Draw) -> Pill:
    """A removal (a null value) keyed by something that is no valid id number."""
    key = [b"\xff\xfe-not-utf8", b"not an id number", b"110101199002301234"][d.a % 3]
    return Pill("watchlist", key, None, d.kind, None)


BUILDERS: dict[str, Callable[[Draw], Pill]] = {
    f.__name__: f
    for f in (
        *(truncated, wrong_type, huge, bad_check, impossible_date, not_utf8, null),
        *(not_object, nan, control, binary, deep, dup_keys, watch_bad_value, watch_bad_key),
        good,
    )
}
KINDS = tuple(BUILDERS)


Recipe = tuple[str, int, int]  # (kind, a, b): a and b pick what to break and how


def good_share(recipes: list[Recipe]) -> float:
    return sum(kind == "good" for kind, _, _ in recipes) / len(recipes)


# Half the recipes make valid events (some of the deep and duplicated-key ones
# turn out valid too); a storm mostly of one kind, as Hypothesis's simplest
# example would be, is not one.
storms = st.tuples(
    st.lists(valid_event_objects(), min_size=8, max_size=16),
    st.lists(
        st.tuples(
            st.sampled_from(KINDS + ("good",) * (len(KINDS) - 1)),
            st.integers(0, 2**32),
            st.integers(0, 2**32),
        ),
        min_size=300,
        max_size=600,
    ).filter(lambda recipes: 0.4 <= good_share(recipes) <= 0.6),
    st.integers(1, 4),  # how many pool people are on the watchlist
)


def pill(n: int, recipe: Recipe, pool: list[dict[str, Any]]) -> Pill:
    """The record recipe `n` makes of a pool event."""
    kind, a, b = recipe
    base = pool[a % len(pool)]
    obj = {**base, "event_id": f"{n:04d}:{base['event_id']}"}
    obj["occurred_at"] = shifted(obj, b % (80 * 86400) - 40 * 86400)
    return BUILDERS[kind](Draw(n, kind, a, b, obj))


def watch_entry(id_number: str) -> dict[str, str]:
    return {
        "schema": "duanka.watch/1",
        "id_number": id_number,
        "scope": "all",
        "since": "1970-01-01",
        "until": "2099-12-31",
        "list": "credit_punishment",
        "reason": "storm test",
    }


def verdict(pill: Pill) -> InvalidRecord | None:
    """What the validator says of a record: None if it is good, else its rejection."""
    try:
        if pill.topic != "watchlist":
            parse_event(pill.value)
        elif pill.value is not None:
            parse_watch(pill.value)
        elif not pill.key:
            raise InvalidRecord("key", "a watchlist record is keyed by its id number")
        else:
            try:
                watch_identity(pill.key.decode())
            except UnicodeDecodeError:
                raise InvalidRecord("key", "not UTF-8") from None
    except InvalidRecord as error:
        return error
    return None


def event_key(value: bytes) -> tuple[float, str, str]:
    event = parse_event(value)
    return (event.occurred_at.timestamp(), event.source, event.event_id)


def in_event_time_order(pills: list[Pill]) -> list[Pill]:
    """The storm with its good events put in event-time order, each bad record where it was."""
    good = [i for i, p in enumerate(pills) if verdict(p) is None]
    ordered = sorted((pills[i] for i in good), key=lambda p: event_key(p.value or b""))
    out = list(pills)
    for i, p in zip(good, ordered, strict=True):
        out[i] = p
    return out


def sentinel() -> Pill:
    """A SIM mailed from Gansu to Yunnan after every other event: it must alert."""
    number = valid_resident_id("62", "19800101", "777")
    obj = {
        "schema": "duanka.event/1",
        "event_id": SENTINEL_ID,
        "event_type": "sim.activate",
        "occurred_at": "2099-12-31T12:00:00+00:00",
        "source": "CMCC-GS",
        "id_type": "resident_id",
        "id_number": number,
        "region_code": "620102",
        "outlet_id": "GS-LZ-0012",
        "channel": "counter",
        "verification": "in_person",
        "msisdn": "13912345678",
        "sim_kind": "personal",
        "delivery": {"method": "mail", "region_code": "530102", "address_key": "s1"},
    }
    return Pill("sim_events", number.encode(), orjson.dumps(obj), "sentinel", "good")


def send(run: WorkerRun, pills: list[Pill]) -> list[tuple[str, int, int]]:
    """Send in order; the (topic, partition, offset) of each record."""
    producer = KafkaProducer(
        bootstrap_servers=run.bootstrap, acks="all", max_request_size=2 * 1024 * 1024
    )
    try:
        futures = [producer.send(run.topics[p.topic], key=p.key, value=p.value) for p in pills]
        producer.flush()
        where = [f.get(timeout=30) for f in futures]
    finally:
        producer.close()
    return [(m.topic, m.partition, m.offset) for m in where]


def metrics(run: WorkerRun) -> dict[str, float]:
    """Each metric family's total, summed over its labels."""
    url = f"http://127.0.0.1:{run.web_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    totals: dict[str, float] = defaultdict(float)
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            totals[name.split("{")[0]] += float(value)
    return totals


def wait_for(run: WorkerRun, ready: Callable[[dict[str, float]], bool]) -> dict[str, float]:
    deadline = time.monotonic() + WAIT_S
    seen: dict[str, float] = {}
    while time.monotonic() < deadline:
        run.check_alive()
        try:
            seen = metrics(run)
        except OSError:
            seen = {}
        if seen and ready(seen):
            return seen
        time.sleep(0.5)
    raise AssertionError(f"the worker did not get through the storm: {dict(seen)}")


def distinct(records: list[Any]) -> int:
    return len({orjson.loads(r.value)["alert_id"] for r in records})


def assert_dead_letter(letter: dict[str, Any], pill: Pill, error: InvalidRecord) -> None:
    assert letter["schema"] == DEADLETTER_SCHEMA
    assert (letter["field"], letter["error"]) == (error.field, str(error)), pill.kind
    assert letter["error"] and letter["field"]
    raw = pill.value or b""
    assert letter["raw_bytes"] == len(raw)
    assert letter["truncated"] == (len(raw) > RAW_LIMIT)
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        assert letter["raw_encoding"] == "base64"
        assert base64.b64decode(letter["raw"]) == raw[:RAW_LIMIT]
        return
    assert letter["raw_encoding"] == "utf-8"
    assert text.startswith(letter["raw"])
    kept = len(letter["raw"].encode())
    if len(raw) <= RAW_LIMIT:
        assert kept == len(raw)
    else:  # cut at 4 KiB, or up to 3 bytes before where a character would be split
        assert RAW_LIMIT - 4 < kept <= RAW_LIMIT


# kafka-python now and then leaves a socket of a closed client to the garbage
# collector, which reports it wherever it runs; that is not the worker's doing
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@settings(
    max_examples=3,
    deadline=None,
    phases=(Phase.explicit, Phase.reuse, Phase.generate),
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(storm=storms)
def test_a_poison_pill_storm(
    storm: tuple[list[dict[str, Any]], list[Recipe], int], kafka_bootstrap: str, tmp_path: Path
) -> None:
    pool, steps, watched = storm
    pills = in_event_time_order([pill(n, recipe, pool) for n, recipe in enumerate(steps)])
    for p in pills:  # the recipes made what they meant to
        error = verdict(p)
        if p.expect == "good":
            assert error is None, (p.kind, error)
        elif p.expect is not None:
            assert error is not None and error.field == p.expect, (p.kind, error)
    entries = [watch_entry(obj["id_number"]) for obj in pool[:watched]]
    watch = [
        Pill("watchlist", e["id_number"].encode(), orjson.dumps(e), "watch", "good")
        for e in entries
    ]
    bad = [p for p in pills if verdict(p) is not None]
    good = [p for p in pills if verdict(p) is None] + [sentinel()]
    print(
        f"storm: {len(pills)} records and the sentinel, {len(bad)} malformed "
        f"({len(bad) / len(pills):.0%}), {len(watch)} watchlist entries first; "
        f"malformed by kind: {dict(sorted(Counter(p.kind for p in bad).items()))}"
    )

    root = tmp_path / uuid.uuid4().hex[:8]
    root.mkdir()
    run = WorkerRun(kafka_bootstrap, root)
    run.create_topics()
    events = root / "good.jsonl"
    events.write_bytes(b"".join((p.value or b"") + b"\n" for p in good))
    watchlist = root / "watchlist.jsonl"
    watchlist.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in entries))
    expected = replay_alerts(run, events, watchlist)
    assert any(a["evidence"][-1]["event_id"] == SENTINEL_ID for a in expected.values())
    print(f"  {len(good)} good events, {len(expected)} alerts expected")

    try:
        send(run, watch)  # the list first: replay loads it before any event
        run.start()
        where = send(run, pills)
        run.check_alive()
        send(run, [good[-1]])  # the sentinel
        counted = wait_for(
            run,
            lambda m: (
                m["duanka_events_total"] + m["duanka_rejected_total"] >= len(good) + len(bad)
                and m["duanka_events_held"] == 0
            ),
        )
        assert counted["duanka_events_total"] == len(good)
        assert counted["duanka_rejected_total"] == len(bad)
        assert counted["duanka_watchlist_updates_total"] == len(entries)
        run.read("alerts", until=lambda rs: distinct(rs) >= len(expected), settle=0)
        run.check_alive()  # still up after the storm
    finally:
        run.stop()

    alerts = by_alert_id([r.value for r in read_topic(run.bootstrap, run.topics["alerts"])])
    assert alerts == expected
    assert_dead_letters(run, dict(zip(where, pills, strict=True)))


def assert_dead_letters(run: WorkerRun, sent: dict[tuple[str, int, int], Pill]) -> None:
    """One dead letter for each bad record sent, none for a good one; each as the validator says."""
    letters = read_topic(run.bootstrap, run.topics["deadletter"])
    values = [orjson.loads(r.value) for r in letters]
    places = [(d["topic"], d["partition"], d["offset"]) for d in values]
    assert sorted(places) == sorted(w for w, p in sent.items() if verdict(p))
    for record in letters:
        letter = orjson.loads(record.value)
        p = sent[(letter["topic"], letter["partition"], letter["offset"])]
        assert record.key == p.key
        error = verdict(p)
        assert error is not None
        assert_dead_letter(letter, p, error)

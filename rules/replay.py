"""Replay: the rule engine over a file of events, in event-time order.

This is how a province backtests a rule change on last year's data, and the
reference the stream is held to. Events are screened in the order the rules
define: by `occurred_at`, ties broken by `(source, event_id)`.

Two passes keep memory flat on large files: the first reads only each
line's sort key and where the line is; if the file is already in order (the
usual case for an export) the second pass simply reads it again from the top,
otherwise it visits the lines in sorted order.

`replay_in_two` does the same on two cores: a second process reads, orders,
validates and pseudonymises the events, while this one runs the rules on
what it sends; alerts and dead letters come out in the same order, and byte
for byte the same but for `detected_at`, as `replay` writes them.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import pickle
import shutil
import tempfile
import traceback
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import IO, Any, Protocol

import orjson

from rules.alert import encode_alert
from rules.cases import Cases
from rules.check import decide, decision_document
from rules.deadletter import encode_dead_letter
from rules.engine import Engine, Screening
from rules.errors import DuankaError, InvalidEvent
from rules.event import (
    PseudonymousEvent,
    parse_check,
    parse_event,
    pseudonymise,
    pseudonymous_from_row,
    pseudonymous_row,
)
from rules.holdings import read_holdings
from rules.implicated import NO_OPENING, InvalidImplicated, parse_implicated, report_of
from rules.lines import json_lines
from rules.pseudonym import Pseudonymizer
from rules.watchlist import WatchLine, read_watchlist

LATE = float("inf")  # the key of a line whose time cannot be read: it sorts last


class Progress(Protocol):
    """Told how many records there are, then how many are done (a progress bar, say)."""

    def start(self, total: int) -> None: ...

    def advance(self, count: int) -> None: ...


@dataclass
class ReplaySummary:
    events_read: int = 0
    rejected: int = 0
    watch_loaded: int = 0
    watch_rejected: int = 0
    holdings_loaded: int = 0
    holdings_rejected: int = 0
    in_order: bool = True
    alerts: Counter[str] = field(default_factory=Counter)
    decisions: Counter[str] = field(default_factory=Counter)  # allow, review, refuse
    refusals: Counter[str] = field(default_factory=Counter)  # by the rule of each block reason
    checks_rejected: int = 0
    implicated_read: int = 0
    implicated_rejected: int = 0
    implicated_unknown: int = 0  # numbers that matched no opening
    traced: int = 0

    @property
    def alert_count(self) -> int:
        return sum(self.alerts.values())


@dataclass(frozen=True, slots=True)
class LineRef:
    """Where a line is in the file, and its place in event-time order."""

    ts: float
    source: str
    event_id: str
    number: int
    offset: int
    length: int

    @property
    def order(self) -> tuple[float, str, str, int]:
        return (self.ts, self.source, self.event_id, self.number)


def sort_key(raw: bytes) -> tuple[float, str, str]:
    """The event-time order of a record, read cheaply; unreadable ones sort last."""
    try:
        obj = orjson.loads(raw)
        when = datetime.fromisoformat(obj["occurred_at"])
        if when.tzinfo is None:
            return (LATE, "", "")
        source, event_id = obj["source"], obj["event_id"]
        if not isinstance(source, str) or not isinstance(event_id, str):
            return (when.timestamp(), "", "")
        return (when.timestamp(), source, event_id)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, OverflowError):
        return (LATE, "", "")


def index_lines(path: Path) -> tuple[list[LineRef], bool]:
    """Every non-blank line's sort key and place, and whether the file is already in order."""
    refs: list[LineRef] = []
    in_order = True
    previous: tuple[float, str, str, int] | None = None
    offset = 0
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            raw = line.rstrip(b"\r\n")
            if raw.strip():
                ts, source, event_id = sort_key(raw)
                ref = LineRef(ts, source, event_id, number, offset, len(raw))
                if previous is not None and ref.order < previous:
                    in_order = False
                previous = ref.order
                refs.append(ref)
            offset += len(line)
    return refs, in_order


def ordered_lines(path: Path, refs: list[LineRef], in_order: bool) -> Iterator[tuple[int, bytes]]:
    """(line number, record) in event-time order."""
    with path.open("rb") as handle:
        if in_order:
            for number, line in enumerate(handle, start=1):
                raw = line.rstrip(b"\r\n")
                if raw.strip():
                    yield number, raw
            return
        for ref in sorted(refs, key=lambda r: r.order):
            handle.seek(ref.offset)
            yield ref.number, handle.read(ref.length)


def load_watchlist(
    path: Path,
    screening: Screening,
    pseudonymizer: Pseudonymizer,
    summary: ReplaySummary,
    deadletter: IO[bytes] | None,
) -> None:
    for line in read_watchlist(path):
        _watch_line(line, path, screening, pseudonymizer, summary, deadletter)


def _watch_line(
    line: WatchLine,
    path: Path | None,
    screening: Screening,
    pseudonymizer: Pseudonymizer,
    summary: ReplaySummary,
    deadletter: IO[bytes] | None,
) -> None:
    if line.record is None:
        assert line.error is not None and path is not None
        summary.watch_rejected += 1
        if deadletter is not None:
            deadletter.write(
                encode_dead_letter(f"file:{path.name}", 0, line.number, line.error, line.raw)
                + b"\n"
            )
        return
    record = line.record
    screening.watch(pseudonymizer.subject_key(record.id_type, record.id_number), record.entry)
    summary.watch_loaded += 1


def load_holdings(
    path: Path,
    screening: Screening,
    pseudonymizer: Pseudonymizer,
    summary: ReplaySummary,
    deadletter: IO[bytes] | None,
) -> None:
    """Seed the holdings from a snapshot file, as `screening.holdings` does the stream's."""
    for line in read_holdings(path):
        record = line.record
        if record is None:
            assert line.error is not None
            summary.holdings_rejected += 1
            if deadletter is not None:
                deadletter.write(
                    encode_dead_letter(f"file:{path.name}", 0, line.number, line.error, line.raw)
                    + b"\n"
                )
            continue
        screening.hold(pseudonymizer.subject_key(record.id_type, record.id_number), record.snapshot)
        summary.holdings_loaded += 1


class Checks:
    """A file of pre-opening checks, answered in event-time order among the events.

    Each check is decided at its `occurred_at` (replay has no other clock), so
    its reservation runs for `ttl_s` of event time. The decisions are written,
    in the order they were made, once the replay is done; a check that fails
    validation gets a line with its error instead, as the API's 400 would.
    """

    def __init__(
        self, path: Path, pseudonymizer: Pseudonymizer, ttl_s: float, remember_s: float
    ) -> None:
        self.ttl_s, self.remember_s = ttl_s, remember_s
        self.items: list[tuple[tuple[float, str, str], PseudonymousEvent]] = []
        self.rejected: list[bytes] = []
        for number, raw in json_lines(path):
            try:
                opening = pseudonymise(parse_check(raw), pseudonymizer)
            except InvalidEvent as error:
                self.rejected.append(
                    orjson.dumps({"line": number, "error": error.reason, "field": error.field})
                )
                continue
            self.items.append(((opening.epoch(), opening.source, opening.event_id), opening))
        self.items.sort(key=lambda item: item[0])
        self.start()

    def start(self) -> None:
        """From the first check again (a pass of replay_in_two that starts over)."""
        self.next = 0
        self.answers: list[bytes] = []

    def answer_before(
        self, key: tuple[float, str, str] | None, screening: Screening, summary: ReplaySummary
    ) -> None:
        """Decide every check that comes before `key` in event-time order (all: None)."""
        items = self.items
        while self.next < len(items) and (key is None or items[self.next][0] < key):
            opening = items[self.next][1]
            self.next += 1
            state = screening.identity(opening.subject_key)
            outcome = decide(
                screening.engine, state, opening, opening.epoch(), self.ttl_s, self.remember_s
            )
            summary.decisions[outcome.decision] += 1
            if outcome.decision == "refuse":
                for reason in outcome.answer["reasons"]:
                    if reason["action"] == "block":
                        summary.refusals[reason["rule_id"]] += 1
            self.answers.append(orjson.dumps(decision_document(opening, outcome)))

    def write(self, out: IO[bytes], summary: ReplaySummary) -> None:
        summary.checks_rejected = len(self.rejected)
        for line in self.rejected + self.answers:
            out.write(line + b"\n")


class Implications:
    """A file of implicated numbers, traced among the events at their `reported_at`.

    A report is traced once every event up to its time was screened (after
    those of the same second), as the stream's merge releases it. Traces go
    to `traces` as JSON lines (the campaign's figures are counted from them);
    an invalid record, or a number that matched no opening, is dead-lettered.
    """

    def __init__(self, path: Path, pseudonymizer: Pseudonymizer, traces: IO[bytes]) -> None:
        self.path = path
        self.traces = traces
        self.items: list[tuple[tuple[float, str, str], Any, int, bytes]] = []
        self.rejected: list[tuple[int, InvalidImplicated, bytes]] = []
        for number, raw in json_lines(path):
            try:
                report = report_of(parse_implicated(raw), pseudonymizer)
            except InvalidImplicated as error:
                self.rejected.append((number, error, raw))
                continue
            self.items.append((report.order, report, number, raw))
        self.items.sort(key=lambda item: item[0])
        self.start()

    def start(self) -> None:
        """From the first report again (a pass of replay_in_two that starts over)."""
        self.next = 0
        self.rejected_written = False
        self.traces.seek(0)
        self.traces.truncate()

    def trace_before(
        self,
        key: tuple[float, str, str] | None,
        screening: Screening,
        summary: ReplaySummary,
        out: IO[bytes],
        deadletter: IO[bytes] | None,
        cases: Cases | None,
    ) -> None:
        """Trace every report that comes before `key` in event-time order (all: None)."""
        items = self.items
        source = f"file:{self.path.name}"
        if key is None and not self.rejected_written:
            self.rejected_written = True
            for number, error, raw in self.rejected:
                summary.implicated_rejected += 1
                if deadletter is not None:
                    deadletter.write(encode_dead_letter(source, 0, number, error, raw) + b"\n")
        while self.next < len(items) and (key is None or items[self.next][0] < key):
            _, report, number, raw = items[self.next]
            self.next += 1
            summary.implicated_read += 1
            traced, alerts = screening.implicate(report)
            if traced.applied and traced.trace is None:
                summary.implicated_unknown += 1
                if deadletter is not None:
                    error = InvalidImplicated("number", NO_OPENING)
                    deadletter.write(encode_dead_letter(source, 0, number, error, raw) + b"\n")
            if traced.trace is not None:
                summary.traced += 1
                self.traces.write(orjson.dumps(traced.trace.row()) + b"\n")
            for alert in alerts:
                summary.alerts[alert.rule_id] += 1
                line = encode_alert(alert)
                out.write(line + b"\n")
                if cases is not None and traced.trace is not None:
                    cases.add(orjson.loads(line), screening.implicated_links(alert, traced.trace))


def _seed(
    screening: Screening,
    pseudonymizer: Pseudonymizer,
    summary: ReplaySummary,
    deadletter: IO[bytes] | None,
    watchlist: Path | None,
    holdings: Path | None,
) -> None:
    if watchlist is not None:
        load_watchlist(watchlist, screening, pseudonymizer, summary, deadletter)
    if holdings is not None:
        load_holdings(holdings, screening, pseudonymizer, summary, deadletter)


def replay(
    events: Path,
    engine: Engine,
    pseudonymizer: Pseudonymizer,
    out: IO[bytes],
    deadletter: IO[bytes] | None = None,
    watchlist: Path | None = None,
    progress: Progress | None = None,
    holdings: Path | None = None,
    checks: tuple[Checks, IO[bytes]] | None = None,
    cases: Cases | None = None,
    implicated: Implications | None = None,
) -> ReplaySummary:
    """Screen every event of `events`; write alerts (and rejected records) as JSON lines.

    A rejected record's dead letter names the file as `file:NAME`, partition 0,
    and its line number as the offset. `holdings` seeds what identities hold;
    `checks` are answered among the events, their decisions written to its file;
    `cases` takes every alert with what it links by.
    """
    summary = ReplaySummary()
    screening = Screening(engine)
    _seed(screening, pseudonymizer, summary, deadletter, watchlist, holdings)
    refs, summary.in_order = index_lines(events)
    if progress is not None:
        progress.start(len(refs))
    source = f"file:{events.name}"
    for number, raw in ordered_lines(events, refs, summary.in_order):
        summary.events_read += 1
        if progress is not None and summary.events_read % 1000 == 0:
            progress.advance(1000)
        try:
            event = parse_event(raw)
        except InvalidEvent as error:
            summary.rejected += 1
            if deadletter is not None:
                deadletter.write(encode_dead_letter(source, 0, number, error, raw) + b"\n")
            continue
        pseudonymous = pseudonymise(event, pseudonymizer)
        if checks is not None:
            checks[0].answer_before(_key_of(pseudonymous), screening, summary)
        if implicated is not None:
            key = _key_of(pseudonymous)
            implicated.trace_before(key, screening, summary, out, deadletter, cases)
        for alert in screening.screen(pseudonymous):
            summary.alerts[alert.rule_id] += 1
            line = encode_alert(alert)
            out.write(line + b"\n")
            if cases is not None:
                cases.add(orjson.loads(line), screening.links(alert, pseudonymous))
    if checks is not None:
        checks[0].answer_before(None, screening, summary)
        checks[0].write(checks[1], summary)
    if implicated is not None:
        implicated.trace_before(None, screening, summary, out, deadletter, cases)
    if progress is not None:
        progress.advance(summary.events_read % 1000)
    return summary


def _key_of(event: PseudonymousEvent) -> tuple[float, str, str]:
    return (event.epoch(), event.source, event.event_id)


# ---------------------------------------------------------------- on two cores

BATCH = 500  # events the second process sends at a time
_EVENT, _REJECT = 0, 1


def replay_in_two(
    events: Path,
    engine: Engine,
    pseudonymizer: Pseudonymizer,
    out: IO[bytes],
    deadletter: IO[bytes] | None = None,
    watchlist: Path | None = None,
    progress: Progress | None = None,
    holdings: Path | None = None,
    checks: tuple[Checks, IO[bytes]] | None = None,
    cases: Cases | None = None,
    implicated: Implications | None = None,
) -> ReplaySummary:
    """`replay`, with reading, validating and pseudonymising in a second process.

    The second process is started afresh (spawn), and gets the file's path and
    the pseudonym key. It sends the events in file order, taking the file to
    be in event-time order (an export usually is) and checking that as it
    goes, which spares `replay`'s first pass over the file. Alerts and dead
    letters are kept aside until it has read the last line: if a line was out
    of order, it starts again in sorted order and what was kept is dropped.
    """
    entries = list(read_watchlist(watchlist)) if watchlist is not None else []
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    reader = context.Process(
        target=_read, args=(str(events), pseudonymizer, send), name="duanka-replay-reader"
    )
    reader.daemon = True
    reader.start()
    send.close()
    passes = _Passes(engine, pseudonymizer, entries, watchlist, receive, events)
    passes.holdings = holdings
    passes.checks = checks[0] if checks is not None else None
    passes.cases = cases
    passes.implicated = implicated
    try:
        summary = passes.run(out, deadletter, progress)
        while summary is None:  # the file was out of order: again, sorted
            summary = passes.run(out, deadletter, progress)
        if checks is not None:
            checks[0].write(checks[1], summary)
    finally:
        receive.close()
        reader.join(timeout=30)
        if reader.is_alive():
            reader.kill()
    return summary


class _Passes:
    """The screening side of `replay_in_two`: a pass per time the second process reads the file."""

    def __init__(
        self,
        engine: Engine,
        pseudonymizer: Pseudonymizer,
        entries: list[Any],
        watchlist: Path | None,
        receive: Connection,
        events: Path,
    ) -> None:
        self.engine = engine
        self.pseudonymizer = pseudonymizer
        self.entries = entries
        self.watchlist = watchlist
        self.receive = receive
        self.source = f"file:{events.name}"
        self.holdings: Path | None = None
        self.checks: Checks | None = None
        self.cases: Cases | None = None
        self.implicated: Implications | None = None

    def run(
        self, out: IO[bytes], deadletter: IO[bytes] | None, progress: Progress | None
    ) -> ReplaySummary | None:
        """One pass; its summary, or None if the file turned out not to be in order."""
        with _kept() as (alerts, dead):
            run = _Run(self.engine, self.pseudonymizer, self.entries, self.watchlist, dead)
            if self.holdings is not None:
                load_holdings(self.holdings, run.screening, self.pseudonymizer, run.summary, dead)
            run.checks = self.checks
            run.cases = self.cases
            run.implicated = self.implicated
            if self.implicated is not None:
                self.implicated.start()
            if self.cases is not None:
                self.cases.clear()  # a second pass starts the cases again
            if self.checks is not None:
                self.checks.start()
            total = _message(self.receive)  # lines to come
            if progress is not None:
                progress.start(total)
            done = run.take(self.receive, self.source, alerts, dead, progress)
            if done is None:
                return None
            run.summary.in_order = done
            _copy(alerts, out)
            if deadletter is not None:
                _copy(dead, deadletter)
            return run.summary


class _Run:
    """One pass of `replay_in_two`'s screening side (a second after an out-of-order file)."""

    def __init__(
        self,
        engine: Engine,
        pseudonymizer: Pseudonymizer,
        entries: list[Any],
        watchlist: Path | None,
        dead: IO[bytes],
    ) -> None:
        self.summary = ReplaySummary()
        self.screening = Screening(engine)
        self.checks: Checks | None = None
        self.cases: Cases | None = None
        self.implicated: Implications | None = None
        for line in entries:
            _watch_line(line, watchlist, self.screening, pseudonymizer, self.summary, dead)

    def take(
        self,
        receive: Connection,
        source: str,
        out: IO[bytes],
        dead: IO[bytes],
        progress: Progress | None,
    ) -> bool | None:
        """Screen what comes until the end (whether the file was in order) or a restart (None)."""
        summary, screening = self.summary, self.screening
        while True:
            kind, body = _next(receive)
            if kind == "restart":
                return None
            if kind == "end":
                if self.checks is not None:
                    self.checks.answer_before(None, screening, summary)
                if self.implicated is not None:
                    self.implicated.trace_before(None, screening, summary, out, dead, self.cases)
                return bool(body)
            for entry in body:
                summary.events_read += 1
                if entry[0] == _REJECT:
                    _, number, error, raw = entry
                    summary.rejected += 1
                    dead.write(encode_dead_letter(source, 0, number, error, raw) + b"\n")
                    continue
                event = pseudonymous_from_row(entry[1])
                if self.checks is not None:
                    self.checks.answer_before(_key_of(event), screening, summary)
                if self.implicated is not None:
                    key = _key_of(event)
                    self.implicated.trace_before(key, screening, summary, out, dead, self.cases)
                for alert in screening.screen(event):
                    summary.alerts[alert.rule_id] += 1
                    line = encode_alert(alert)
                    out.write(line + b"\n")
                    if self.cases is not None:
                        self.cases.add(orjson.loads(line), screening.links(alert, event))
            if progress is not None:
                progress.advance(len(body))


@contextlib.contextmanager
def _kept() -> Iterator[tuple[IO[bytes], IO[bytes]]]:
    """Where alerts and dead letters wait until the reader has finished: memory, then disk."""
    with (
        tempfile.SpooledTemporaryFile(max_size=64 << 20) as alerts,
        tempfile.SpooledTemporaryFile(max_size=16 << 20) as dead,
    ):
        yield alerts, dead


def _copy(kept: IO[bytes], out: IO[bytes]) -> None:
    kept.seek(0)
    shutil.copyfileobj(kept, out)


def _next(receive: Connection) -> tuple[str, Any]:
    try:
        kind, body = pickle.loads(receive.recv_bytes())
    except EOFError:
        raise DuankaError("replay's second process ended without a word") from None
    if kind == "error":
        raise DuankaError(f"replay's second process failed:\n{body}")
    return kind, body


def _message(receive: Connection) -> Any:
    return _next(receive)[1]


def _read(path: str, pseudonymizer: Pseudonymizer, send: Connection) -> None:
    """The second process: events validated and pseudonymised, in event-time order."""
    try:
        file = Path(path)
        send.send_bytes(pickle.dumps(("start", _count_lines(file))))
        if _send_in_file_order(file, pseudonymizer, send):
            send.send_bytes(pickle.dumps(("end", True)))
            return
        send.send_bytes(pickle.dumps(("restart", None)))
        refs, _ = index_lines(file)
        send.send_bytes(pickle.dumps(("start", len(refs))))
        _send(ordered_lines(file, refs, False), pseudonymizer, send)
        send.send_bytes(pickle.dumps(("end", False)))
    except BaseException:
        send.send_bytes(pickle.dumps(("error", traceback.format_exc())))
        raise
    finally:
        send.close()


def _send_in_file_order(path: Path, pseudonymizer: Pseudonymizer, send: Connection) -> bool:
    """Send the lines as they come while they are in event-time order; False at the first not."""
    previous: tuple[float, str, str] | None = None

    def in_order() -> Iterator[tuple[int, bytes]]:
        nonlocal previous
        for number, raw in ordered_lines(path, [], True):
            key = sort_key(raw)
            if previous is not None and key < previous:
                previous = None
                return
            previous = key
            yield number, raw

    _send(in_order(), pseudonymizer, send)
    return previous is not None or _count_lines(path) == 0


def _send(
    lines: Iterator[tuple[int, bytes]], pseudonymizer: Pseudonymizer, send: Connection
) -> None:
    batch: list[tuple[Any, ...]] = []
    for number, raw in lines:
        try:
            event = pseudonymise(parse_event(raw), pseudonymizer)
        except InvalidEvent as error:
            batch.append((_REJECT, number, error, raw))
        else:
            batch.append((_EVENT, pseudonymous_row(event)))
        if len(batch) >= BATCH:
            send.send_bytes(pickle.dumps(("batch", batch), protocol=5))
            batch = []
    if batch:
        send.send_bytes(pickle.dumps(("batch", batch), protocol=5))


def _count_lines(path: Path) -> int:
    """Lines with something on them (for the progress bar)."""
    with path.open("rb") as handle:
        return sum(1 for line in handle if line.strip())

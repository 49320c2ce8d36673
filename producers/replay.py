"""`duanka replay`: the rules over a file, with a progress bar and a summary table."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from contextlib import ExitStack
from pathlib import Path

import orjson
from tqdm import tqdm

from rules.cases import Cases, DictStore
from rules.config import Settings
from rules.engine import Engine
from rules.errors import DuankaError
from rules.pseudonym import Pseudonymizer, pseudonym_key
from rules.replay import Checks, Implications, ReplaySummary, replay, replay_in_two

DEV_KEY_NOTE = (
    "note: pseudonyms use the built-in development key; alerts match a worker's only "
    "if both use the same DUANKA_PSEUDONYM_KEY"
)


class Bar:
    """A tqdm progress bar on stderr, as rules.replay.Progress."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: tqdm[object] | None = None

    def start(self, total: int) -> None:
        self.bar = tqdm(total=total, unit=" events", disable=not self.enabled, file=sys.stderr)

    def advance(self, count: int) -> None:
        if self.bar is not None:
            self.bar.update(count)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_replay(
    events: Path,
    out: Path,
    settings: Settings,
    environ: Mapping[str, str],
    watchlist: Path | None = None,
    deadletter: Path | None = None,
    progress: bool = True,
    processes: int = 2,
    holdings: Path | None = None,
    checks: Path | None = None,
    decisions: Path | None = None,
    cases: Path | None = None,
    implicated: Path | None = None,
    traces: Path | None = None,
) -> int:
    """Replay `events`; with `checks`, decisions go to `decisions` (or OUT.decisions.jsonl).

    The cases the alerts form go to `cases` (or cases.jsonl beside OUT), one
    `duanka.case/1` document a line, by case id. With `implicated`, the
    numbers' traces go to `traces` (or traces.jsonl beside OUT).
    """
    for path in (events, watchlist, holdings, checks, implicated):
        if path is not None and not path.is_file():
            raise DuankaError(f"{path}: no such file")
    pseudonymizer = Pseudonymizer(pseudonym_key(settings.pseudonym_key or None, environ))
    if pseudonymizer.is_development_key:
        print(DEV_KEY_NOTE, file=sys.stderr)
    bar = Bar(progress)
    kept = Cases(settings.cases, DictStore())
    cases = cases or out.with_name("cases.jsonl")
    if cases.resolve() == out.resolve():
        raise DuankaError(f"{out}: the alerts and the cases cannot go to one file")
    started = time.perf_counter()
    with ExitStack() as files:
        alerts = files.enter_context(out.open("wb"))
        rejected = files.enter_context(deadletter.open("wb")) if deadletter else None
        run = replay_in_two if processes > 1 else replay
        answered = None
        if checks is not None:
            decisions = decisions or out.with_name(f"{out.stem}.decisions.jsonl")
            check = settings.check
            answered = (
                Checks(checks, pseudonymizer, check.reservation_ttl_s, check.remember_s),
                files.enter_context(decisions.open("wb")),
            )
        reports = None
        if implicated is not None:
            traces = traces or out.with_name("traces.jsonl")
            if traces.resolve() in (out.resolve(), cases.resolve()):
                raise DuankaError(f"{traces}: the traces need a file of their own")
            traced = files.enter_context(traces.open("w+b"))
            reports = Implications(implicated, pseudonymizer, traced)
        try:
            summary = run(
                events,
                Engine(settings.rules, implicated=settings.implicated),
                pseudonymizer,
                alerts,
                rejected,
                watchlist,
                bar,
                holdings=holdings,
                checks=answered,
                cases=kept,
                implicated=reports,
            )
        finally:
            bar.close()
        documents = kept.documents()
        with cases.open("wb") as written:
            for document in documents:
                written.write(orjson.dumps(document) + b"\n")
    print(summary_table(summary, time.perf_counter() - started, settings), file=sys.stderr)
    print(f"{len(documents):,} cases written to {cases}", file=sys.stderr)
    if implicated is not None:
        print(f"{summary.traced:,} implicated numbers traced to {traces}", file=sys.stderr)
    return 0


def summary_table(summary: ReplaySummary, seconds: float, settings: Settings) -> str:
    rate = summary.events_read / seconds if seconds > 0 else 0.0
    rows = [
        ("events read", f"{summary.events_read:,}"),
        ("rejected", f"{summary.rejected:,}"),
        ("in file order", "yes" if summary.in_order else "no (sorted by event time)"),
    ]
    if summary.watch_loaded or summary.watch_rejected:
        rows.append(("watchlist entries", f"{summary.watch_loaded:,}"))
        rows.append(("watchlist rejected", f"{summary.watch_rejected:,}"))
    if summary.holdings_loaded or summary.holdings_rejected:
        rows.append(("holdings snapshots", f"{summary.holdings_loaded:,}"))
        rows.append(("holdings rejected", f"{summary.holdings_rejected:,}"))
    if summary.implicated_read or summary.implicated_rejected:
        rows.append(("implicated numbers", f"{summary.implicated_read:,}"))
        rows.append(("  traced", f"{summary.traced:,}"))
        rows.append(("  no opening known", f"{summary.implicated_unknown:,}"))
        rows.append(("  rejected", f"{summary.implicated_rejected:,}"))
    if summary.decisions or summary.checks_rejected:
        for decision in ("allow", "review", "refuse"):
            rows.append((f"checks: {decision}", f"{summary.decisions.get(decision, 0):,}"))
        for rule_id, count in sorted(summary.refusals.items()):
            rows.append((f"  refused by {rule_id}", f"{count:,}"))
        rows.append(("checks rejected", f"{summary.checks_rejected:,}"))
    rows.append(("seconds", f"{seconds:.1f} ({rate:,.0f} events/s)"))
    rows.append(("alerts", f"{summary.alert_count:,}"))
    for rule_id in settings.rules.__dataclass_fields__:
        rows.append((f"  {rule_id}", f"{summary.alerts.get(rule_id, 0):,}"))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value:>12}" for name, value in rows)

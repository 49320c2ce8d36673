"""`duanka report`: one self-contained HTML page about a file of alerts.

The alerts (`duanka.alert/1` JSON lines, as `duanka replay --out` or
`duanka alerts --out` write them) become a pandas DataFrame; the page shows
counts per rule and severity, alerts per day, the outlets and agents with the
most alerts, where mailed SIMs went, and severity by region. Charts are
matplotlib PNGs embedded as data URIs, so the page needs nothing else to open.
No id number appears: alerts carry pseudonyms, and the page lists no identity.

With a file of the pre-opening checks' decisions (`duanka.decision/1` JSON
lines, as `duanka replay --decisions` writes them, or the audit records of
`screening.decisions`), the page adds the checks decided by outcome and the
refusals by rule, counted as the police console counts them
(stream/decisions.py).

With a file of the police's verdicts (`duanka.disposition/1` JSON lines, as
a police system exports them), the table of alerts per rule adds the alerts
whose standing verdict (the last in the file) is confirmed, dismissed or
under investigation, and each rule's precision: confirmed / (confirmed +
dismissed), counted as the engine counts them (rules/disposition.py).

With a file of implicated numbers' traces (rows of `rules.implicated.Trace`,
as `duanka replay --implicated` writes them to traces.jsonl), the page adds
the implicated cards (涉案卡): opened per day, by carrier or bank, province
and channel, the outlets and staff members that opened the most, and the days
from opening to report, each card counted once (rules/figures.py).
"""

from __future__ import annotations

import base64
import html
import io
import math
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # a file, never a window; set before anything imports pyplot

import numpy as np
import orjson
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from rules.alert import SEVERITIES, Alert, decode_alert
from rules.disposition import (
    Disposition,
    InvalidDisposition,
    Verdicts,
    parse_disposition,
    standing,
)
from rules.errors import DuankaError, InvalidAlert
from rules.figures import Figures, InvalidTrace, parse_trace
from rules.regions import PROVINCES
from stream.decisions import DecisionCounts, InvalidDecision, decode_decision

MAIL_RULE = "sim_mail_out_of_province"
TOP = 10
COLUMNS = [
    "alert_id",
    "rule_id",
    "severity",
    "subject_kind",
    "subject_key",
    "event_time",
    "instant",
    "day",
    "source",
    "region_code",
    "province",
    "outlet_province",
    "delivery_province",
    "trigger",
    "evidence",
    "named_alerts",
]

IMPLICATED_COLOR = "#8e1020"
OUTCOME_COLORS = {"allow": "#2e7d32", "review": "#c98a00", "refuse": "#8e1020"}
# the line `duanka replay --decisions` writes for a check that failed validation
REJECTED_CHECK_KEYS = frozenset({"line", "error", "field"})

Skip = Callable[[int, str], None]


# ---------------------------------------------------------------- loading


def warn_skipped(path: Path, kind: str = "an alert") -> Skip:
    """A skip callback that warns on stderr, naming the file and line."""

    def warn(number: int, reason: str) -> None:
        print(f"duanka: warning: {path}:{number}: skipped, not {kind} ({reason})", file=sys.stderr)

    return warn


def load_alerts(path: Path, on_skip: Skip | None = None) -> pd.DataFrame:
    """The alerts of a JSON-lines file, one row each, in file order.

    A line that does not decode is skipped and passed to `on_skip` with its
    line number and the reason (a warning on stderr by default); blank lines
    are ignored. An alert repeated with the same `alert_id` (a consumer that
    read a topic twice) is kept once, as the contract lets consumers do.
    """
    skip = on_skip or warn_skipped(path)
    rows = [_row(alert) for alert in _decode_lines(path, skip)]
    frame = pd.DataFrame.from_records(rows, columns=COLUMNS)
    frame["instant"] = pd.to_datetime(frame["instant"], utc=True)
    return frame.drop_duplicates("alert_id", ignore_index=True)


def _decode_lines(path: Path, skip: Skip) -> Iterator[Alert]:
    with path.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                yield decode_alert(line)
            except InvalidAlert as error:
                skip(number, str(error))


def _row(alert: Alert) -> dict[str, object]:
    evidence = tuple((e.source, e.event_id) for e in alert.evidence)
    when = alert.event_time.isoformat()
    # the triggering event: the evidence from the alert's own source at its event time
    trigger = tuple(
        (e.source, e.event_id)
        for e in alert.evidence
        if e.source == alert.source and e.occurred_at == when
    )
    mailed = alert.rule_id == MAIL_RULE
    named = alert.facts.get("alerts") if alert.subject.kind == "agent" else None
    return {
        "alert_id": alert.alert_id,
        "rule_id": alert.rule_id,
        "severity": alert.severity,
        "subject_kind": alert.subject.kind,
        "subject_key": alert.subject.key,
        "event_time": when,  # as written, in the event's own offset
        "instant": alert.event_time,  # the same moment in UTC, for ordering
        # the calendar day where the event happened, in its own offset
        "day": alert.event_time.date(),
        "source": alert.source,
        "region_code": alert.region_code,
        "province": alert.region_code[:2],
        "outlet_province": _code(alert.facts.get("outlet_province")) if mailed else None,
        "delivery_province": _code(alert.facts.get("delivery_province")) if mailed else None,
        "trigger": trigger,
        "evidence": evidence,
        "named_alerts": tuple(str(a) for a in named) if isinstance(named, list) else (),
    }


@dataclass(frozen=True, slots=True)
class Decisions:
    """A file of decisions, counted: each check once, refusals under each blocking rule.

    `rejected`: lines for checks that failed validation (replay writes their
    error where their decision would be); `skipped`: lines that are neither.
    """

    counts: DecisionCounts
    rejected: int
    skipped: int


def load_decisions(path: Path, on_skip: Skip | None = None) -> Decisions:
    """The decisions of a JSON-lines file, counted as the police console counts them.

    A line that is neither a decision nor a rejected check is skipped and
    passed to `on_skip` (a warning on stderr by default); blank lines are
    ignored.
    """
    skip = on_skip or warn_skipped(path, "a decision")
    counts = DecisionCounts(remember=sys.maxsize)  # a file is counted exactly, however long
    rejected = skipped = 0
    with path.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                counts.add(decode_decision(line))
            except InvalidDecision as error:
                if _is_rejected_check(line):
                    rejected += 1
                else:
                    skipped += 1
                    skip(number, str(error))
    return Decisions(counts, rejected, skipped)


@dataclass(frozen=True, slots=True)
class Dispositions:
    """A file of police verdicts: the standing one of each alert (the last in the file).

    `read`: the valid dispositions in the file; `skipped`: the lines that are not.
    """

    standing: dict[str, Disposition]
    read: int
    skipped: int


def load_dispositions(path: Path, on_skip: Skip | None = None) -> Dispositions:
    """The verdicts of a JSON-lines file of `duanka.disposition/1` records, in file order.

    A line the engine would dead-letter is skipped and passed to `on_skip`
    with its line number and the field and reason (a warning on stderr by
    default); blank lines are ignored.
    """
    skip = on_skip or warn_skipped(path, "a disposition")
    valid: list[Disposition] = []
    skipped = 0
    with path.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                valid.append(parse_disposition(line))
            except InvalidDisposition as error:
                skipped += 1
                skip(number, str(error))
    return Dispositions(standing(valid), len(valid), skipped)


@dataclass(frozen=True, slots=True)
class Traces:
    """A file of implicated numbers' traces, counted: each card once, by its opening.

    `read`: the trace rows in the file (a card reported in two cases is two);
    `skipped`: the lines that are not trace rows.
    """

    figures: Figures
    read: int
    skipped: int


def load_traces(path: Path, on_skip: Skip | None = None) -> Traces:
    """The traces of a JSON-lines file (`duanka replay --traces`), counted as the figures count.

    A line that is not a trace row is skipped and passed to `on_skip` with its
    line number and the field and reason (a warning on stderr by default);
    blank lines are ignored.
    """
    skip = on_skip or warn_skipped(path, "a trace row")
    figures = Figures()
    read = skipped = 0
    with path.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = parse_trace(line)
            except InvalidTrace as error:
                skipped += 1
                skip(number, str(error))
                continue
            read += 1
            figures.add(row)
    return Traces(figures, read, skipped)


def _is_rejected_check(line: bytes) -> bool:
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return False
    return type(obj) is dict and set(obj) == REJECTED_CHECK_KEYS


def _code(value: object) -> str | None:
    return value if isinstance(value, str) else None


def province_label(code: str | None) -> str:
    """`Gansu (62)`: an English name, so the charts need no CJK font."""
    if not code:
        return "unknown"
    province = PROVINCES.get(code)
    return f"{province.name_en} ({code})" if province else f"? ({code})"


# ---------------------------------------------------------------- tables


def rule_counts(alerts: pd.DataFrame) -> pd.Series:
    """Alerts per rule, most first (ties by rule id)."""
    counts = alerts["rule_id"].value_counts()
    return counts.sort_index().sort_values(ascending=False, kind="stable")


def severity_counts(alerts: pd.DataFrame) -> pd.Series:
    """Alerts per severity, in the contract's order, severities with none left out."""
    counts = alerts["severity"].value_counts()
    return counts.reindex([s for s in SEVERITIES if s in counts.index])


def daily_counts(alerts: pd.DataFrame) -> pd.DataFrame:
    """Alerts per day (rows, every day of the period) and rule (columns)."""
    table = pd.crosstab(alerts["day"], alerts["rule_id"])
    first, last = min(table.index), max(table.index)
    days = [d.date() for d in pd.date_range(first, last, freq="D")]
    return table.reindex(days, fill_value=0)


def mail_matrix(alerts: pd.DataFrame) -> pd.DataFrame:
    """Mailed-SIM alerts per province opened in (rows) and mailed to (columns)."""
    mailed = alerts[alerts["rule_id"] == MAIL_RULE]
    # a fact missing from an alert (an older or foreign writer) shows as "unknown"
    opened = mailed["outlet_province"].fillna("")
    mailed_to = mailed["delivery_province"].fillna("")
    return pd.crosstab(opened.rename("opened"), mailed_to.rename("mailed_to"))


def severity_by_region(alerts: pd.DataFrame) -> pd.DataFrame:
    """Alerts per province of the alert's region_code (rows) and severity (columns)."""
    table = pd.crosstab(alerts["province"], alerts["severity"])
    table = table[[s for s in SEVERITIES if s in table.columns]]
    table["total"] = table.sum(axis=1)
    return table.sort_values("total", ascending=False, kind="stable")


def top_subjects(alerts: pd.DataFrame, kind: str, n: int = TOP) -> pd.DataFrame:
    """The `n` outlets or agents with the most alerts: their own, and identity alerts traced.

    Identity alerts carry no outlet_id or agent_id. One is traced to an agent
    when an agent alert names it in `facts.alerts`, and to an outlet when its
    triggering event is among the evidence of an alert about that outlet.
    """
    own = alerts[alerts["subject_kind"] == kind]
    identity = alerts[alerts["subject_kind"] == "identity"]
    if kind == "agent":
        owner = _owners(own, "named_alerts")
        traced = identity["alert_id"].map(owner.get)
    else:
        owner = _owners(own, "evidence")
        traced = identity["trigger"].map(lambda keys: _first_owner(keys, owner))
    table = pd.DataFrame(
        {
            f"{kind} alerts": own["subject_key"].value_counts(),
            "identity alerts traced": traced.dropna().value_counts(),
        }
    )
    table = table.fillna(0).astype(int)
    table["total"] = table.sum(axis=1)
    table = table.sort_index().sort_values(
        ["total", f"{kind} alerts"], ascending=False, kind="stable"
    )
    return table.head(n)


def _owners(own: pd.DataFrame, column: str) -> dict[object, str]:
    """What each outlet's (agent's) alerts point at, mapped to that outlet (agent)."""
    return {
        item: key
        for key, items in zip(own["subject_key"], own[column], strict=True)
        for item in items
    }


def _first_owner(keys: Iterable[object], owner: dict[object, str]) -> str | None:
    return next((owner[key] for key in keys if key in owner), None)


@dataclass(frozen=True, slots=True)
class Share:
    """A fraction shown as a percentage, or "–" when there is none."""

    value: float | None

    def __str__(self) -> str:
        return "–" if self.value is None or math.isnan(self.value) else f"{self.value:.1%}"


def verdict_counts(alerts: pd.DataFrame, dispositions: Dispositions) -> tuple[pd.DataFrame, int]:
    """Per rule (as `rule_counts` orders them): alerts by standing verdict, and precision.

    Each standing verdict is joined to its alert's rule by `alert_id`; the
    second value is how many verdicts matched no alert of the file.
    Precision is NaN for a rule with nothing confirmed or dismissed.
    """
    rule_of = dict(zip(alerts["alert_id"], alerts["rule_id"], strict=True))
    verdicts = Verdicts()
    unmatched = 0
    for alert_id, disposition in dispositions.standing.items():
        rule_id = rule_of.get(alert_id)
        if rule_id is None:
            unmatched += 1
        else:
            verdicts.set(alert_id, rule_id, disposition.status)
    columns = ["confirmed", "dismissed", "investigating"]
    table = pd.DataFrame.from_dict(verdicts.counts, orient="index", columns=columns)
    table = table.reindex(rule_counts(alerts).index, fill_value=0).astype(int)
    shares = pd.Series(verdicts.precision(), index=table.index, dtype=float)
    table["precision"] = shares  # None (nothing decided) is NaN
    return table, unmatched


def outcome_counts(decisions: Decisions) -> pd.Series:
    """Checks per outcome: allow, review, refuse, each shown even at zero."""
    return pd.Series(decisions.counts.by_decision, dtype=int)


def refusal_counts(decisions: Decisions) -> pd.Series:
    """Refused checks per blocking rule, most first (ties by rule id); rules with none left out."""
    refusals = {rule: n for rule, n in decisions.counts.refusals.items() if n}
    counts = pd.Series(refusals, dtype=int)
    return counts.sort_index().sort_values(ascending=False, kind="stable")


IMPLICATED_RULES = {"outlet_id": "outlet_implicated", "agent_id": "agent_implicated"}


def implicated_daily(figures: Figures) -> pd.Series:
    """Implicated cards per opening day, every day from the first to the last shown."""
    if not figures.by_day:
        return pd.Series(dtype=int)
    counts = pd.Series({date.fromisoformat(day): n for day, n in figures.by_day.items()})
    days = [d.date() for d in pd.date_range(min(counts.index), max(counts.index), freq="D")]
    return counts.reindex(days, fill_value=0).astype(int)


def implicated_by(figures: Figures, dimension: str) -> pd.Series:
    """Implicated cards per value of a dimension (source, province, ...), most first."""
    return pd.Series(dict(figures.top(dimension, len(figures.by[dimension]))), dtype=int)


def implicated_top(
    figures: Figures, dimension: str, alerts: pd.DataFrame, n: int = TOP
) -> pd.DataFrame:
    """The `n` outlets (or staff members) that opened the most implicated cards.

    Beside the cards, their share of all implicated cards, and the alerts of
    the rule on such places (`outlet_implicated`, `agent_implicated`) in the
    alert file.
    """
    rule_id = IMPLICATED_RULES[dimension]
    alerted = alerts.loc[alerts["rule_id"] == rule_id, "subject_key"].value_counts()
    rows = figures.top(dimension, n)
    return pd.DataFrame(
        {
            "cards": [count for _, count in rows],
            "of all": [Share(count / figures.cards) for _, count in rows],
            "alerts": [int(alerted.get(key, 0)) for key, _ in rows],
        },
        index=pd.Index([key for key, _ in rows], dtype=object),
    )


# ---------------------------------------------------------------- charts


def _png(figure: Figure) -> str:
    """The figure as a `data:image/png;base64,...` URI."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _plain(label: str) -> str:
    """A label drawn as written: a `$` in an outlet id must not start math mode."""
    return label.replace("$", r"\$")


def _colors(count: int) -> list[tuple[float, float, float, float]]:
    palette = matplotlib.colormaps["tab10" if count <= 10 else "tab20"]
    return [palette(i % palette.N) for i in range(count)]


def plot_daily(table: pd.DataFrame) -> str:
    """A stacked bar per day, a colour per rule."""
    days = len(table)
    figure = Figure(figsize=(min(16.0, max(7.0, 0.3 * days + 4)), 4.8), layout="constrained")
    ax = figure.add_subplot()
    positions = np.arange(days)
    bottom = np.zeros(days)
    for rule_id, color in zip(table.columns, _colors(len(table.columns)), strict=True):
        values = table[rule_id].to_numpy(dtype=float)
        ax.bar(positions, values, bottom=bottom, color=color, label=str(rule_id), width=0.8)
        bottom += values
    step = max(1, days // 15)
    ax.set_xticks(positions[::step], [d.isoformat() for d in table.index[::step]], rotation=45)
    ax.set_ylabel("alerts")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("Alerts per day and rule (event time, in the event's own offset)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    return _png(figure)


def plot_top(table: pd.DataFrame, kind: str) -> str:
    """Horizontal bars, the most alerted at the top: own alerts, then traced ones."""
    rows = table.iloc[::-1]
    figure = Figure(figsize=(8.0, max(2.5, 1.2 + 0.4 * len(rows))), layout="constrained")
    ax = figure.add_subplot()
    names = [_plain(str(name)) for name in rows.index]
    own = rows[f"{kind} alerts"].to_numpy(dtype=float)
    traced = rows["identity alerts traced"].to_numpy(dtype=float)
    ax.barh(names, own, color="#c0392b", label=f"{kind} alerts")
    ax.barh(names, traced, left=own, color="#f0a35e", label="identity alerts traced")
    ax.set_xlabel("alerts")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(f"Top {len(rows)} {kind}s by alerts")
    ax.legend(loc="lower right", fontsize="small")
    return _png(figure)


def plot_matrix(matrix: pd.DataFrame) -> str:
    """A heatmap of mailed SIMs with the count in each cell."""
    values = matrix.to_numpy(dtype=float)
    rows, cols = values.shape
    figure = Figure(
        figsize=(max(5.0, 1.3 * cols + 3), max(3.0, 0.6 * rows + 2)), layout="constrained"
    )
    ax = figure.add_subplot()
    image = ax.imshow(values, cmap="Reds", vmin=0, aspect="auto")
    ax.set_xticks(range(cols), [province_label(c) for c in matrix.columns], rotation=30, ha="right")
    ax.set_yticks(range(rows), [province_label(c) for c in matrix.index])
    ax.set_xlabel("mailed to")
    ax.set_ylabel("opened in")
    ax.set_title("SIMs mailed out of province")
    peak = values.max()
    for (row, col), value in np.ndenumerate(values):
        color = "white" if value > peak / 2 else "black"
        ax.text(col, row, f"{int(value)}", ha="center", va="center", color=color)
    figure.colorbar(image, ax=ax, label="alerts", ticks=MaxNLocator(integer=True))
    return _png(figure)


def plot_decisions(outcomes: pd.Series, refusals: pd.Series) -> str:
    """Checks per outcome (bars in the outcome's colour) and, beside it, refusals per rule."""
    panels = 2 if len(refusals) else 1
    height = max(3.2, 1.4 + 0.4 * len(refusals))
    figure = Figure(figsize=(5.0 + 6.0 * (panels - 1), height), layout="constrained")
    axes = figure.subplots(1, panels, squeeze=False)[0]
    ax = axes[0]
    names = [str(name) for name in outcomes.index]
    colors = [OUTCOME_COLORS.get(name, "#6b7689") for name in names]
    bars = ax.bar(names, outcomes.to_numpy(dtype=float), color=colors, width=0.6)
    ax.bar_label(bars, labels=[f"{int(v):,}" for v in outcomes])
    ax.set_ylabel("checks")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.margins(y=0.15)
    ax.set_title("Checks decided, by outcome")
    if panels == 2:
        ax = axes[1]
        rows = refusals.iloc[::-1]
        bars = ax.barh(
            [_plain(str(rule)) for rule in rows.index],
            rows.to_numpy(dtype=float),
            color=OUTCOME_COLORS["refuse"],
        )
        ax.bar_label(bars, labels=[f"{int(v):,}" for v in rows], padding=3)
        ax.set_xlabel("refused checks")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.margins(x=0.15)
        ax.set_title("Refused checks, by blocking rule")
    return _png(figure)


def plot_implicated_daily(daily: pd.Series) -> str:
    """A bar per opening day: the implicated cards opened that day."""
    days = len(daily)
    figure = Figure(figsize=(min(16.0, max(7.0, 0.2 * days + 4)), 3.8), layout="constrained")
    ax = figure.add_subplot()
    positions = np.arange(days)
    ax.bar(positions, daily.to_numpy(dtype=float), color=IMPLICATED_COLOR, width=0.8)
    step = max(1, days // 15)
    ax.set_xticks(positions[::step], [d.isoformat() for d in daily.index[::step]], rotation=45)
    ax.set_ylabel("implicated cards")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("Implicated cards by the day they were opened")
    return _png(figure)


def plot_implicated_top(outlets: pd.DataFrame, agents: pd.DataFrame) -> str:
    """Two panels of horizontal bars, the most at the top: outlets, and staff members."""
    longest = max(len(outlets), len(agents))
    figure = Figure(figsize=(11.0, max(2.5, 1.2 + 0.35 * longest)), layout="constrained")
    for ax, table, kind in zip(
        figure.subplots(1, 2), (outlets, agents), ("outlets", "staff members"), strict=True
    ):
        rows = table.iloc[::-1]
        values = rows["cards"].to_numpy(dtype=float)
        bars = ax.barh([_plain(str(key)) for key in rows.index], values, color=IMPLICATED_COLOR)
        ax.bar_label(bars, labels=[f"{int(v):,}" for v in values], padding=3)
        ax.set_xlabel("implicated cards opened")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.margins(x=0.15)
        ax.set_title(f"Top {len(rows)} {kind}")
    return _png(figure)


def plot_days_to_report(buckets: Sequence[tuple[str, int]], middle: float | None) -> str:
    """A histogram over the days-to-report buckets, with the median in the title."""
    figure = Figure(figsize=(8.0, 3.6), layout="constrained")
    ax = figure.add_subplot()
    labels = [label for label, _ in buckets]
    values = np.array([count for _, count in buckets], dtype=float)
    bars = ax.bar(labels, values, color="#6b7689", width=0.8)
    ax.bar_label(bars, labels=[f"{int(v):,}" if v else "" for v in values])
    ax.set_xlabel("days from opening to report")
    ax.set_ylabel("implicated cards")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.margins(y=0.15)
    where = "" if middle is None else f" (median {middle:.1f} days)"
    ax.set_title(f"Days from opening to report{where}")
    return _png(figure)


# ---------------------------------------------------------------- the page


@dataclass(frozen=True, slots=True)
class ReportSummary:
    """What went into a report: for the command's closing line."""

    alerts: int
    skipped: int
    decisions: int | None = None  # checks counted; None without a decisions file
    decisions_skipped: int = 0
    verdicts: int | None = None  # alerts with a standing verdict; None without dispositions
    verdicts_unmatched: int = 0  # of those, the ones with no alert in the file
    dispositions_skipped: int = 0
    cards: int | None = None  # implicated cards, each once; None without a traces file
    traces: int = 0  # trace rows read (a card reported twice is two)
    traces_skipped: int = 0


def render_report(
    alerts: pd.DataFrame,
    title: str,
    skipped: int = 0,
    decisions: Decisions | None = None,
    decisions_name: str = "",
    dispositions: Dispositions | None = None,
    dispositions_name: str = "",
    traces: Traces | None = None,
    traces_name: str = "",
) -> str:
    """The whole page as one string; every text from the alerts and decisions is escaped."""
    parts = [f"<h1>{_e(title)}</h1>"]
    if alerts.empty:
        parts.append('<p class="empty">There are no alerts in this file.</p>')
        parts.append(_skipped_note(skipped))
        if dispositions is not None:
            unmatched = len(dispositions.standing)
            parts.append(_verdicts_note(dispositions, dispositions_name, unmatched))
    else:
        parts += [
            _headline(alerts, skipped, dispositions, dispositions_name),
            _daily_section(alerts),
            _top_section(alerts, "outlet"),
            _top_section(alerts, "agent"),
            _mail_section(alerts),
            _region_section(alerts),
        ]
    if traces is not None:
        parts.append(_implicated_section(traces, traces_name, alerts))
    if decisions is not None:
        parts.append(_decisions_section(decisions, decisions_name))
    body = "\n".join(p for p in parts if p)
    return PAGE.format(title=_e(title), style=STYLE, body=body)


def write_report(
    alerts: pd.DataFrame,
    out: Path,
    title: str,
    skipped: int = 0,
    decisions: Decisions | None = None,
    decisions_name: str = "",
    dispositions: Dispositions | None = None,
    dispositions_name: str = "",
    traces: Traces | None = None,
    traces_name: str = "",
) -> None:
    """Write the page to `out` (UTF-8)."""
    page = render_report(
        alerts,
        title,
        skipped,
        decisions,
        decisions_name,
        dispositions,
        dispositions_name,
        traces,
        traces_name,
    )
    out.write_text(page, encoding="utf-8")


def run_report(
    alerts_file: Path,
    out: Path,
    decisions_file: Path | None = None,
    dispositions_file: Path | None = None,
    traces_file: Path | None = None,
) -> ReportSummary:
    """`duanka report`: read the alerts (and decisions, verdicts, traces), warn, write."""
    for path in (alerts_file, decisions_file, dispositions_file, traces_file):
        if path is not None and not path.is_file():
            raise DuankaError(f"{path}: no such file")
    skipped: list[int] = []
    warn = warn_skipped(alerts_file)

    def skip(number: int, reason: str) -> None:
        skipped.append(number)
        warn(number, reason)

    alerts = load_alerts(alerts_file, skip)
    decisions = load_decisions(decisions_file) if decisions_file is not None else None
    name = decisions_file.name if decisions_file is not None else ""
    verdicts = load_dispositions(dispositions_file) if dispositions_file is not None else None
    verdicts_name = dispositions_file.name if dispositions_file is not None else ""
    traces = load_traces(traces_file) if traces_file is not None else None
    traces_name = traces_file.name if traces_file is not None else ""
    title = f"duanka alert report: {alerts_file.name}"
    write_report(
        alerts,
        out,
        title,
        len(skipped),
        decisions,
        name,
        verdicts,
        verdicts_name,
        traces,
        traces_name,
    )
    summary = ReportSummary(len(alerts), len(skipped))
    if decisions is not None:
        summary = replace(
            summary, decisions=decisions.counts.total, decisions_skipped=decisions.skipped
        )
    if verdicts is not None:
        summary = replace(
            summary,
            verdicts=len(verdicts.standing),
            verdicts_unmatched=verdict_counts(alerts, verdicts)[1],
            dispositions_skipped=verdicts.skipped,
        )
    if traces is not None:
        summary = replace(
            summary,
            cards=traces.figures.cards,
            traces=traces.read,
            traces_skipped=traces.skipped,
        )
    return summary


def _headline(
    alerts: pd.DataFrame,
    skipped: int,
    dispositions: Dispositions | None = None,
    dispositions_name: str = "",
) -> str:
    times = alerts.sort_values("instant", kind="stable")["event_time"]
    days = (max(alerts["day"]) - min(alerts["day"])).days + 1
    facts = [
        ("alerts", f"{len(alerts):,}"),
        ("first event_time", str(times.iloc[0])),
        ("last event_time", str(times.iloc[-1])),
        ("days covered", f"{days:,}"),
    ]
    for kind in ("identity", "outlet", "agent"):
        facts.append((f"about an {kind}", f"{int((alerts['subject_kind'] == kind).sum()):,}"))
    rules = rule_counts(alerts)
    severities = severity_counts(alerts)
    header, rows = ["rule", "alerts"], list(rules.items())
    verdicts = None
    if dispositions is not None:
        table, unmatched = verdict_counts(alerts, dispositions)
        header += list(table.columns)
        by_rule = table.to_dict("index")
        rows = []
        for rule_id, count in rules.items():
            row = by_rule[rule_id]
            counts = [row[status] for status in ("confirmed", "dismissed", "investigating")]
            rows.append((rule_id, count, *counts, Share(row["precision"])))
        verdicts = _verdicts_note(dispositions, dispositions_name, unmatched)
    parts = [
        "<h2>Headline</h2>",
        _table("headline", [], facts),
        _skipped_note(skipped),
        '<div class="side">',
        _table("per-rule", header, rows),
        _table("per-severity", ["severity", "alerts"], severities.items()),
        "</div>",
    ]
    if verdicts is not None:
        parts.append(verdicts)
    return "\n".join(parts)


def _verdicts_note(dispositions: Dispositions, name: str, unmatched: int) -> str:
    """Where the verdicts come from, how they are counted, and how many matched no alert."""
    standing = len(dispositions.standing)
    read = "disposition" if dispositions.read == 1 else "dispositions"
    alerts = "alert" if standing == 1 else "alerts"
    text = (
        f"<p>Police verdicts from {_e(name)}: {dispositions.read:,} {read} on "
        f"{standing:,} {alerts}. The last disposition of an alert in the file stands; "
        f"precision is confirmed / (confirmed + dismissed), and alerts still under "
        f"investigation do not count in it. "
    )
    if unmatched:
        verdicts = "verdict" if unmatched == 1 else "verdicts"
        text += f"{unmatched:,} {verdicts} matched no alert in this file.</p>"
    else:
        text += "Every verdict matched an alert in this file.</p>"
    if dispositions.skipped:
        lines = "line was" if dispositions.skipped == 1 else "lines were"
        text += (
            f'\n<p class="note">{dispositions.skipped:,} {lines} not valid dispositions '
            f"and skipped (see the warnings).</p>"
        )
    return text


def _skipped_note(skipped: int) -> str:
    if not skipped:
        return ""
    lines = "line was" if skipped == 1 else "lines were"
    return f'<p class="note">{skipped:,} {lines} not alerts and skipped (see the warnings).</p>'


def _daily_section(alerts: pd.DataFrame) -> str:
    table = daily_counts(alerts)
    rows = [(d.isoformat(), *table.loc[d].tolist(), int(table.loc[d].sum())) for d in table.index]
    return "\n".join(
        [
            "<h2>Alerts per day and rule</h2>",
            "<p>By the date of event_time in the event's own offset (+08:00 for China).</p>",
            _img(plot_daily(table), "alerts per day and rule"),
            "<details><summary>as a table</summary>",
            _table("per-day", ["day", *map(str, table.columns), "total"], rows),
            "</details>",
        ]
    )


def _top_section(alerts: pd.DataFrame, kind: str) -> str:
    heading = f"<h2>Top {kind}s</h2>"
    note = (
        f"<p>Alerts about the {kind} itself, and identity alerts traced to it. Identity alerts "
        f"do not name the outlet or agent of their event: one is traced to an agent when that "
        f"agent's agent_flag_rate alert lists it in facts.alerts, and to an outlet when its "
        f"triggering event is in the evidence of that outlet's alerts. Identity alerts that "
        f"cannot be traced are left out here.</p>"
    )
    table = top_subjects(alerts, kind)
    if table.empty:
        return "\n".join([heading, note, f'<p class="empty">No alert names an {kind}.</p>'])
    rows = [
        (key, *values) for key, values in zip(table.index, table.to_numpy().tolist(), strict=True)
    ]
    return "\n".join(
        [
            heading,
            note,
            _img(plot_top(table, kind), f"top {kind}s"),
            _table(f"top-{kind}s", [kind, *map(str, table.columns)], rows),
        ]
    )


def _mail_section(alerts: pd.DataFrame) -> str:
    heading = "<h2>SIMs mailed out of province</h2>"
    matrix = mail_matrix(alerts)
    if matrix.empty:
        return "\n".join([heading, f'<p class="empty">No {MAIL_RULE} alerts.</p>'])
    note = (
        f"<p>{MAIL_RULE} alerts by the province of the outlet (rows) and the province "
        f"the SIM was mailed to (columns), from the alerts' facts.</p>"
    )
    header = ["opened in \\ mailed to", *map(province_label, matrix.columns)]
    rows = [(province_label(code), *matrix.loc[code].tolist()) for code in matrix.index]
    return "\n".join(
        [
            heading,
            note,
            _img(plot_matrix(matrix), "mailed SIMs by province"),
            _table("mail-matrix", header, rows),
        ]
    )


def _region_section(alerts: pd.DataFrame) -> str:
    table = severity_by_region(alerts)
    rows = [
        (province_label(code), *values)
        for code, values in zip(table.index, table.to_numpy().tolist(), strict=True)
    ]
    return "\n".join(
        [
            "<h2>Severity by region</h2>",
            "<p>By the province of the alert's region_code (the outlet's region).</p>",
            _table("severity-by-region", ["province", *map(str, table.columns)], rows),
        ]
    )


def _decisions_section(decisions: Decisions, name: str) -> str:
    heading = "<h2>Pre-opening checks: decisions and refusals by rule</h2>"
    counts = decisions.counts
    note = (
        f"<p>From {_e(name)}: the decisions of <code>POST /v1/check</code> (or of "
        f"<code>duanka replay --checks</code>). Each check counts once: a decision given "
        f"again to the same check_id, or a line read twice, is not counted again. A refused "
        f"check counts once under each rule that blocked it (a reason with action "
        f"<code>block</code>), so the refusals by rule can add up to more than the "
        f"refused checks.</p>"
    )
    facts = [
        ("checks decided", counts.total),
        ("refused", counts.by_decision["refuse"]),
        ("repeats, counted once", counts.repeats),
        ("checks rejected by validation", decisions.rejected),
    ]
    skipped = ""
    if decisions.skipped:
        lines = "line was" if decisions.skipped == 1 else "lines were"
        skipped = (
            f'<p class="note">{decisions.skipped:,} {lines} not decisions and skipped '
            f"(see the warnings).</p>"
        )
    parts = [heading, note, _table("decisions-headline", [], facts), skipped]
    if counts.total == 0:
        parts.append('<p class="empty">There are no decisions in this file.</p>')
        return "\n".join(p for p in parts if p)
    outcomes = outcome_counts(decisions)
    refusals = refusal_counts(decisions)
    parts += [
        _img(plot_decisions(outcomes, refusals), "checks by outcome and refusals by rule"),
        '<div class="side">',
        _table("decisions-by-outcome", ["outcome", "checks"], outcomes.items()),
        _table("refusals-by-rule", ["rule", "refused checks"], refusals.items())
        if len(refusals)
        else '<p class="empty">No check was refused.</p>',
        "</div>",
    ]
    return "\n".join(p for p in parts if p)


def _implicated_section(traces: Traces, name: str, alerts: pd.DataFrame) -> str:
    figures = traces.figures
    note = (
        f"<p>From {_e(name)}: the numbers the police found in fraud cases, each traced to the "
        f"opening that created it (<code>duanka replay --implicated</code>). Each card counts "
        f"once, by its opening, however many cases reported it. The day is the opening's date "
        f"in the event's own offset; the places are the opening's outlet, staff member "
        f"(agent_id) and channel.</p>"
    )
    parts = ["<h2>Implicated cards (涉案卡)</h2>", note, _implicated_headline(traces)]
    if traces.skipped:
        lines = "line was not a trace row" if traces.skipped == 1 else "lines were not trace rows"
        parts.append(
            f'<p class="note">{traces.skipped:,} {lines} and skipped (see the warnings).</p>'
        )
    if not figures.cards:
        parts.append('<p class="empty">There are no traces in this file.</p>')
        return "\n".join(parts)
    return "\n".join(
        [
            *parts,
            _implicated_daily_section(figures),
            _implicated_by_section(figures),
            _implicated_top_section(figures, alerts),
            _days_to_report_section(figures),
        ]
    )


def _implicated_headline(traces: Traces) -> str:
    figures = traces.figures
    facts: list[tuple[str, object]] = [
        ("reports traced", traces.read),
        ("implicated cards", figures.cards),
        ("SIM cards", figures.kinds["sim"]),
        ("bank accounts", figures.kinds["account"]),
        ("reported again, in another case", traces.read - figures.cards),
    ]
    daily = implicated_daily(figures)
    if len(daily):
        busiest, most = min(figures.by_day.items(), key=lambda item: (-item[1], item[0]))
        facts += [
            ("first opening day", min(daily.index)),
            ("last opening day", max(daily.index)),
            ("opened per day, on average", f"{figures.cards / len(daily):.1f}"),
            ("most opened on one day", f"{most:,} ({busiest})"),
        ]
    middle = figures.median_days()
    if middle is not None:
        facts.append(("median days from opening to report", f"{middle:.1f}"))
    return _table("implicated-headline", [], facts)


def _implicated_daily_section(figures: Figures) -> str:
    daily = implicated_daily(figures)
    return "\n".join(
        [
            "<h3>Opened per day</h3>",
            _img(plot_implicated_daily(daily), "implicated cards by opening day"),
            "<details><summary>as a table</summary>",
            _table("implicated-per-day", ["opened", "implicated cards"], daily.items()),
            "</details>",
        ]
    )


def _implicated_by_section(figures: Figures) -> str:
    sources = implicated_by(figures, "source")
    provinces = implicated_by(figures, "province")
    channels = implicated_by(figures, "channel")
    province_rows = [(province_label(str(code)), n) for code, n in provinces.items()]
    return "\n".join(
        [
            "<h3>By carrier or bank, province and channel</h3>",
            '<div class="side">',
            _table("implicated-by-source", ["carrier or bank", "cards"], sources.items()),
            _table("implicated-by-province", ["province", "cards"], province_rows),
            _table("implicated-by-channel", ["channel", "cards"], channels.items()),
            "</div>",
        ]
    )


def _implicated_top_section(figures: Figures, alerts: pd.DataFrame) -> str:
    note = (
        "<p>The outlets and staff members that opened the most implicated cards: where the "
        "review of whoever opened them starts (谁开卡谁负责, 一案双查): their implicated "
        "cards, the share of all, and the alerts of <code>outlet_implicated</code> or "
        "<code>agent_implicated</code> on them in the alert file (3 implicated cards within 90 "
        "days, with the shipped config).</p>"
    )
    outlets = implicated_top(figures, "outlet_id", alerts)
    agents = implicated_top(figures, "agent_id", alerts)
    parts = ["<h3>Top outlets and staff members</h3>", note]
    if len(outlets) or len(agents):
        parts.append(_img(plot_implicated_top(outlets, agents), "top outlets and staff members"))
    parts.append('<div class="side">')
    for table_id, kind, table in (
        ("implicated-outlets", "outlet", outlets),
        ("implicated-agents", "staff (agent_id)", agents),
    ):
        rows = [
            (key, *values)
            for key, values in zip(table.index, table.to_numpy().tolist(), strict=True)
        ]
        parts.append(_table(table_id, [kind, *map(str, table.columns)], rows))
    parts.append("</div>")
    return "\n".join(parts)


def _days_to_report_section(figures: Figures) -> str:
    buckets = figures.day_buckets()
    middle = figures.median_days()
    note = (
        f"<p>Days from the opening to the police's report, per card (its first report). "
        f"Median: {middle:.1f} days. A bucket holds the cards up to its bound, above the "
        f"bound before it.</p>"
        if middle is not None
        else ""
    )
    return "\n".join(
        [
            "<h3>Days from opening to report</h3>",
            note,
            _img(plot_days_to_report(buckets, middle), "days from opening to report"),
            "<details><summary>as a table</summary>",
            _table("implicated-days-to-report", ["days", "implicated cards"], buckets),
            "</details>",
        ]
    )


def _img(uri: str, alt: str) -> str:
    return f'<img src="{uri}" alt="{_e(alt)}">'


def _table(
    table_id: str,
    header: Sequence[str],
    rows: Iterable[Sequence[object]],
) -> str:
    """An HTML table; the first cell of each row is its heading. No header row if empty."""
    out = [f'<table id="{_e(table_id)}">']
    if header:
        out.append("<tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr>")
    for row in rows:
        first, *rest = row
        cells = "".join(f"<td{_num(v)}>{_e(_text(v))}</td>" for v in rest)
        out.append(f'<tr><th scope="row">{_e(_text(first))}</th>{cells}</tr>')
    out.append("</table>")
    return "\n".join(out)


def _text(value: object) -> str:
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _num(value: object) -> str:
    return ' class="n"' if isinstance(value, (int, float, np.number, Share)) else ""


def _e(text: str) -> str:
    return html.escape(text, quote=True)


STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; max-width: 80em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; }
h3 { font-size: 1em; margin-top: 1.5em; }
table { border-collapse: collapse; margin: 0.5em 1em 0.5em 0; vertical-align: top; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.side table { display: inline-table; }
.note, .empty { color: #555; font-style: italic; }
img { max-width: 100%; display: block; margin: 0.5em 0; }
"""

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>{style}</style>
</head>
<body>
{body}
</body>
</html>
"""

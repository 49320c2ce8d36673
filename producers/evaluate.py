"""`duanka evaluate`: the alerts of a run against the simulator's ground truth.

A case is found when an alert of the case's rule rests on one of the case's
events (its evidence shares an event with the case). An alert is expected
when it belongs to a case that should alert; any other alert is unexpected,
and if it belongs to a look-alike, the look-alike is named. Recall per rule
is found cases over cases; precision is expected alerts over alerts.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from producers.simulator import TRUTH_SCHEMA, Case
from rules.alert import Alert, decode_alert
from rules.errors import DuankaError, InvalidAlert


class EvaluationError(DuankaError):
    """A ground-truth or alert file that cannot be read."""


def read_truth(path: Path) -> list[Case]:
    """The cases of a ground-truth file (JSON lines of `duanka.case/1`)."""
    cases = []
    for number, line in _lines(path):
        try:
            record = orjson.loads(line)
            if record.get("schema") != TRUTH_SCHEMA:
                raise ValueError(f"schema is not {TRUTH_SCHEMA}")
            cases.append(
                Case(
                    case_id=str(record["case_id"]),
                    label=str(record["label"]),
                    rule_id=str(record["rule_id"]),
                    expected=bool(record["expected"]),
                    subject_kind=str(record["subject"]["kind"]),
                    subject=str(record["subject"]["key"]),
                    events=tuple(str(e) for e in record["events"]),
                )
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise EvaluationError(f"{path}:{number}: not a ground-truth case: {exc}") from exc
    return cases


def read_alerts(path: Path) -> list[Alert]:
    """The alerts of a JSON-lines file, as `duanka replay --out` or `duanka alerts --out` write."""
    alerts = []
    for number, line in _lines(path):
        try:
            alerts.append(decode_alert(line))
        except InvalidAlert as exc:
            raise EvaluationError(f"{path}:{number}: not an alert: {exc}") from exc
    return alerts


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    if not path.is_file():
        raise EvaluationError(f"{path}: no such file")
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                yield number, line


@dataclass
class RuleScore:
    rule_id: str
    cases: int = 0
    found: int = 0
    alerts: int = 0
    expected_alerts: int = 0
    lookalikes: int = 0
    lookalikes_fired: int = 0

    @property
    def recall(self) -> float | None:
        return self.found / self.cases if self.cases else None

    @property
    def precision(self) -> float | None:
        return self.expected_alerts / self.alerts if self.alerts else None


@dataclass
class Unexpected:
    alert: Alert
    lookalikes: list[Case]


@dataclass
class Evaluation:
    scores: dict[str, RuleScore]
    missed: list[Case] = field(default_factory=list)
    unexpected: list[Unexpected] = field(default_factory=list)

    @property
    def overall(self) -> RuleScore:
        total = RuleScore("overall")
        for score in self.scores.values():
            total.cases += score.cases
            total.found += score.found
            total.alerts += score.alerts
            total.expected_alerts += score.expected_alerts
            total.lookalikes += score.lookalikes
            total.lookalikes_fired += score.lookalikes_fired
        return total

    @property
    def perfect(self) -> bool:
        return not self.missed and not self.unexpected


def evaluate(cases: Sequence[Case], alerts: Iterable[Alert], rule_ids: Sequence[str]) -> Evaluation:
    """Match alerts to cases; `rule_ids` orders the table (other rules seen come after)."""
    scores = {rule_id: RuleScore(rule_id) for rule_id in rule_ids}

    def score(rule_id: str) -> RuleScore:
        return scores.setdefault(rule_id, RuleScore(rule_id))

    by_event: dict[tuple[str, str], list[Case]] = defaultdict(list)
    for case in cases:
        for ref in case.events:
            by_event[case.rule_id, ref].append(case)
        if case.expected:
            score(case.rule_id).cases += 1
        else:
            score(case.rule_id).lookalikes += 1

    found: set[str] = set()
    fired: set[str] = set()
    evaluation = Evaluation(scores)
    seen: set[str] = set()
    for alert in alerts:
        if alert.alert_id in seen:  # a consumer may see an alert twice
            continue
        seen.add(alert.alert_id)
        rule = score(alert.rule_id)
        rule.alerts += 1
        matches = {
            case.case_id: case
            for e in alert.evidence
            for case in by_event.get((alert.rule_id, f"{e.source}/{e.event_id}"), ())
        }
        hits = [c for c in matches.values() if c.expected]
        if hits:
            rule.expected_alerts += 1
            found.update(c.case_id for c in hits)
            continue
        lookalikes = sorted(matches.values(), key=lambda c: c.case_id)
        for case in lookalikes:
            if case.case_id not in fired:
                fired.add(case.case_id)
                rule.lookalikes_fired += 1
        evaluation.unexpected.append(Unexpected(alert, lookalikes))
    for case in cases:
        if case.expected and case.case_id in found:
            scores[case.rule_id].found += 1
        elif case.expected:
            evaluation.missed.append(case)
    return evaluation


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def table(evaluation: Evaluation) -> str:
    """Recall and precision per rule and overall, as a plain-text table."""
    header = ("rule", "cases", "found", "recall", "alerts", "expected", "precision", "look-alikes")
    rows = [header]
    for score in [*evaluation.scores.values(), evaluation.overall]:
        rows.append(
            (
                score.rule_id,
                str(score.cases),
                str(score.found),
                _ratio(score.recall),
                str(score.alerts),
                str(score.expected_alerts),
                _ratio(score.precision),
                f"{score.lookalikes_fired}/{score.lookalikes} fired",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for number, row in enumerate(rows):
        if number == len(rows) - 1:
            lines.append("  ".join("-" * w for w in widths))
        cells = [row[0].ljust(widths[0])]
        cells += [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def details(evaluation: Evaluation, limit: int = 20) -> str:
    """The missed cases and unexpected alerts, at most `limit` of each."""
    lines = []
    if evaluation.missed:
        lines.append(f"missed cases ({len(evaluation.missed)}):")
        for case in evaluation.missed[:limit]:
            who = f"{case.subject_kind} {case.subject}"
            lines.append(f"  {case.case_id}  {case.rule_id}  {who}: {case.label}")
        if len(evaluation.missed) > limit:
            lines.append(f"  ... and {len(evaluation.missed) - limit} more")
    if evaluation.unexpected:
        lines.append(f"unexpected alerts ({len(evaluation.unexpected)}):")
        for item in evaluation.unexpected[:limit]:
            alert = item.alert
            who = alert.subject.id_masked or alert.subject.key
            line = f"  {alert.alert_id}  {alert.rule_id}  {alert.subject.kind} {who}: "
            line += alert.summary_en
            if item.lookalikes:
                names = ", ".join(f"{c.case_id} ({c.label})" for c in item.lookalikes)
                line += f" [look-alike {names}]"
            lines.append(line)
        if len(evaluation.unexpected) > limit:
            lines.append(f"  ... and {len(evaluation.unexpected) - limit} more")
    if not lines:
        lines.append("every labelled case was found and no alert was unexpected")
    return "\n".join(lines)


def run_evaluate(truth: Path, alerts: Path, rule_ids: Sequence[str], strict: bool) -> int:
    evaluation = evaluate(read_truth(truth), read_alerts(alerts), rule_ids)
    print(table(evaluation))
    print()
    print(details(evaluation))
    return 1 if strict and not evaluation.perfect else 0

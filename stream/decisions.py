"""Decision records (`duanka.decision/1`) read back and counted, for the console and the report.

The worker audits every check's decision to `screening.decisions`
(`audit_document` in rules/check.py); `duanka replay --decisions` writes the
same documents without the audit's extra fields. `decode_decision` reads
either into a `Decision`, which keeps only what is counted: which check, its
outcome, and the rules that blocked it. The subject (a pseudonym and a masked
id number) is read past and never kept.

`DecisionCounts` counts each check once:

- a decision given again to a repeated request (the audit's `"repeat": true`)
  is the first decision answered again, not a new one;
- the same document read twice (a record sent again after a worker crash, a
  topic read twice, or a repeat in a replay file, which has no `repeat`
  field but the first answer's `decided_at`) is kept once. A decision is
  known by its `source`, `check_id` and `decided_at`.

A refused check counts once under each rule that blocked it: a reason with
action `block`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any

import orjson

from rules.check import DECISION_SCHEMA, DECISIONS
from rules.config import RuleSettings
from rules.errors import InvalidRecord

# How many decisions are remembered to drop repeats: a record sent again
# follows the first copy closely, so far fewer than this.
IDS_REMEMBERED = 200_000


class InvalidDecision(InvalidRecord):
    """A record that is not a `duanka.decision/1` document."""


@dataclass(frozen=True, slots=True)
class Decision:
    """What is counted of a decision document; nothing about its subject."""

    check_id: str
    source: str  # "" in replay's documents, which do not carry it
    decision: str
    decided_at: str
    blocked_by: tuple[str, ...]  # the rules of the reasons with action "block", each once
    repeat: bool  # the audit of an answer given again to the same check_id

    @property
    def key(self) -> str:
        return f"{self.source}\x1f{self.check_id}\x1f{self.decided_at}"


def decode_decision(raw: bytes) -> Decision:
    """Read a decision document; raises InvalidDecision (field, reason) if it is not one."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidDecision("record", "not valid JSON") from None
    if type(obj) is not dict:
        raise InvalidDecision("record", "must be an object")
    if obj.get("schema") != DECISION_SCHEMA:
        raise InvalidDecision("schema", f"must be {DECISION_SCHEMA!r}")
    decision = _string(obj, "decision")
    if decision not in DECISIONS:
        raise InvalidDecision("decision", f"must be one of {', '.join(DECISIONS)}")
    reasons = obj.get("reasons")
    if type(reasons) is not list:
        raise InvalidDecision("reasons", "must be a list")
    blocked: dict[str, None] = {}
    for index, reason in enumerate(reasons):
        if type(reason) is not dict:
            raise InvalidDecision(f"reasons[{index}]", "must be an object")
        rule_id = _string(reason, "rule_id", f"reasons[{index}].")
        if _string(reason, "action", f"reasons[{index}].") == "block":
            blocked[rule_id] = None
    source = obj.get("source", "")
    if type(source) is not str:
        raise InvalidDecision("source", "must be a string")
    repeat = obj.get("repeat", False)
    if type(repeat) is not bool:
        raise InvalidDecision("repeat", "must be true or false")
    check_id = _string(obj, "check_id")
    if not check_id:
        raise InvalidDecision("check_id", "must not be empty")
    return Decision(
        check_id=check_id,
        source=source,
        decision=decision,
        decided_at=_string(obj, "decided_at"),
        blocked_by=tuple(blocked),
        repeat=repeat,
    )


def _string(obj: dict[str, Any], key: str, prefix: str = "") -> str:
    value = obj.get(key)
    if value is None:
        raise InvalidDecision(prefix + key, "missing")
    if type(value) is not str:
        raise InvalidDecision(prefix + key, "must be a string")
    return value


def blocking_rules(rules: RuleSettings) -> tuple[str, ...]:
    """The rules whose configured action is `block`: the ones a refusal can name."""
    return tuple(f.name for f in fields(rules) if getattr(rules, f.name).action == "block")


class DecisionCounts:
    """Checks decided, by outcome, and refusals by rule; each check counted once."""

    def __init__(self, rule_ids: Iterable[str] = (), remember: int = IDS_REMEMBERED) -> None:
        self.by_decision: Counter[str] = Counter(dict.fromkeys(DECISIONS, 0))
        # the rules named here are listed even before they refuse anything
        self.refusals: Counter[str] = Counter(dict.fromkeys(rule_ids, 0))
        self.repeats = 0
        self.skipped = 0
        self._seen: dict[str, None] = {}  # insertion-ordered: the oldest goes first
        self._remember = remember

    @property
    def total(self) -> int:
        return sum(self.by_decision.values())

    def add(self, decision: Decision) -> bool:
        """Count a decision; False (and counted as a repeat) if it is one already counted."""
        if decision.repeat or decision.key in self._seen:
            self.repeats += 1
            return False
        self._seen[decision.key] = None
        if len(self._seen) > self._remember:
            del self._seen[next(iter(self._seen))]
        self.by_decision[decision.decision] += 1
        if decision.decision == "refuse":
            for rule_id in decision.blocked_by:
                self.refusals[rule_id] += 1
        return True

    def skip(self) -> None:
        """Count a record that is not a decision."""
        self.skipped += 1

    def receive(self, values: Iterable[bytes | None]) -> list[InvalidDecision]:
        """Decode and count a batch of records; the errors of those that are not decisions."""
        errors: list[InvalidDecision] = []
        for value in values:
            try:
                decision = decode_decision(value or b"")
            except InvalidDecision as error:
                self.skip()
                errors.append(error)
                continue
            self.add(decision)
        return errors

    def counts(self) -> dict[str, dict[str, int]]:
        """`decision`: checks per outcome; `refusals`: refused checks per rule, in a fixed order.

        The rules given at the start come first, in their order; others as they are seen.
        """
        return {"decision": dict(self.by_decision), "refusals": dict(self.refusals)}

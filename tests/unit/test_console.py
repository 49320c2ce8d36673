"""The police console without a browser: its alerts, its decision counts, filters and page."""

from __future__ import annotations

import base64
import hashlib
import re
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from rulekit import ALL_RULES

from rules.alert import Alert, Evidence, Subject, encode_alert, make_alert_id
from rules.config import RuleSettings, WatchlistSettings
from stream.console import ALERTS_KEPT, RULE_IDS, Checks, Console, Query, console_page
from stream.decisions import blocking_rules

DETECTED = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)


def alert(
    n: int,
    rule_id: str = "sim_mail_out_of_province",
    severity: str = "high",
    region_code: str = "620102",
    detected: datetime | None = None,
) -> Alert:
    """Alert number `n`: its event is `E-n`, so its id is its own."""
    key = f"k{n:04d}"
    event_time = datetime(2026, 11, 20, 10, 0, tzinfo=UTC) + timedelta(minutes=n)
    return Alert(
        alert_id=make_alert_id(rule_id, key, "CMCC-GS", f"E-{n}"),
        rule_id=rule_id,
        severity=severity,
        action="review",
        subject=Subject("identity", key, "6201**********1234", "62"),
        event_time=event_time,
        detected_at=detected or DETECTED + timedelta(seconds=n),
        source="CMCC-GS",
        region_code=region_code,
        summary_zh="摘要",
        summary_en="summary",
        facts={"n": n},
        evidence=(Evidence(f"E-{n}", "CMCC-GS", "sim.activate", event_time.isoformat()),),
    )


def seqs(console: Console, query: Query | None = None) -> list[int]:
    return [row["seq"] for row in console.query(query or Query())["alerts"]]


def ids(console: Console, query: Query) -> list[str]:
    return [row["alert_id"] for row in console.query(query)["alerts"]]


def test_the_console_counts_every_rule_of_the_contract() -> None:
    assert set(RULE_IDS) == ALL_RULES
    counts = Console().query(Query())["counts"]
    assert counts["rule"] == dict.fromkeys(RULE_IDS, 0)
    assert counts["severity"] == {"low": 0, "medium": 0, "high": 0, "critical": 0}


def test_alerts_are_listed_newest_first_as_contract_json_with_their_sequence() -> None:
    console = Console()
    alerts = [alert(n) for n in range(1, 4)]
    for a in alerts:
        assert console.add(a)
    view = console.query(Query())
    assert view["latest"] == 3
    assert seqs(console) == [3, 2, 1]
    for row, a in zip(view["alerts"], reversed(alerts), strict=True):
        assert row == {**orjson.loads(encode_alert(a)), "seq": row["seq"]}
    assert seqs(console, Query(after=1)) == [3, 2]
    assert seqs(console, Query(after=3)) == []


def test_a_repeated_alert_is_dropped_and_counted_as_a_repeat() -> None:
    console = Console()
    first = alert(1)
    assert console.add(first)
    assert not console.add(first)
    assert not console.add(alert(1, detected=DETECTED + timedelta(hours=1)))  # same id
    view = console.query(Query())
    assert [row["alert_id"] for row in view["alerts"]] == [first.alert_id]
    assert (view["total"], view["duplicates"], view["latest"]) == (1, 2, 1)
    assert view["counts"]["rule"]["sim_mail_out_of_province"] == 1


def test_counts_per_rule_severity_and_province_cover_every_alert_read() -> None:
    console = Console(keep=2)
    console.add(alert(1, "sim_mail_out_of_province", "high", "620102"))
    console.add(alert(2, "sim_mail_out_of_province", "medium", "620502"))
    console.add(alert(3, "watchlist_hit", "critical", "510104"))
    console.add(alert(4, "gang_batch_open", "critical", "530102"))
    view = console.query(Query())
    assert len(console) == 2 and view["kept"] == 2 and view["keep"] == 2
    assert seqs(console) == [4, 3]  # the oldest fell out of the list ...
    assert view["total"] == 4  # ... but not out of the counts
    assert view["counts"]["rule"]["sim_mail_out_of_province"] == 2
    assert view["counts"]["rule"]["watchlist_hit"] == 1
    assert view["counts"]["rule"]["gang_batch_open"] == 1
    assert view["counts"]["rule"]["sim_churn"] == 0
    assert view["counts"]["severity"] == {"low": 0, "medium": 1, "high": 1, "critical": 2}
    assert view["counts"]["province"] == {"51": 1, "53": 1, "62": 2}


def test_filters_by_rule_severity_and_region_prefix() -> None:
    console = Console()
    a1 = alert(1, "sim_mail_out_of_province", "high", "620102")
    a2 = alert(2, "sim_mail_out_of_province", "medium", "620502")
    a3 = alert(3, "sim_nonlocal_not_in_person", "medium", "610102")
    a4 = alert(4, "watchlist_hit", "critical", "620102")
    for a in (a1, a2, a3, a4):
        console.add(a)
    assert ids(console, Query(rule="sim_mail_out_of_province")) == [a2.alert_id, a1.alert_id]
    assert ids(console, Query(severity="medium")) == [a3.alert_id, a2.alert_id]
    assert ids(console, Query(region="62")) == [a4.alert_id, a2.alert_id, a1.alert_id]
    assert ids(console, Query(region="6205")) == [a2.alert_id]
    assert ids(console, Query(region="620102")) == [a4.alert_id, a1.alert_id]
    assert ids(console, Query(rule="sim_mail_out_of_province", severity="high")) == [a1.alert_id]
    assert ids(console, Query(severity="medium", region="61")) == [a3.alert_id]
    assert ids(console, Query(rule="sim_churn")) == []
    assert ids(console, Query(rule="sim_mail_out_of_province", after=1)) == [a2.alert_id]
    # filters narrow the list, never the counts
    assert console.query(Query(rule="sim_churn"))["total"] == 4


def test_a_limit_keeps_the_newest_and_says_that_more_matched() -> None:
    console = Console()
    for n in range(1, 6):
        console.add(alert(n))
    view = console.query(Query(limit=2))
    assert [row["seq"] for row in view["alerts"]] == [5, 4]
    assert view["truncated"] is True
    assert console.query(Query(limit=5))["truncated"] is False
    assert console.query(Query(after=3, limit=2))["truncated"] is False


def test_remembered_alert_ids_are_bounded() -> None:
    console = Console(remember=2)
    for n in (1, 2, 3):
        console.add(alert(n))
    assert not console.add(alert(3))  # still remembered
    assert console.add(alert(1))  # the oldest id was forgotten
    assert len(console._seen) == 2


def test_records_that_are_not_alerts_are_skipped_and_counted() -> None:
    console = Console()
    late, early = alert(1, detected=DETECTED + timedelta(seconds=9)), alert(2)
    values: list[bytes | None] = [
        encode_alert(late),
        b"not json",
        None,
        orjson.dumps({**orjson.loads(encode_alert(alert(3))), "severity": "urgent"}),
        encode_alert(early),
        encode_alert(early),
    ]
    errors = console.receive(values)
    assert [e.field for e in errors] == ["record", "record", "severity"]
    view = console.query(Query())
    assert (view["skipped"], view["duplicates"], view["total"]) == (3, 1, 2)
    # within a batch, the order of detection: the newest detected is listed first
    assert [row["alert_id"] for row in view["alerts"]] == [late.alert_id, early.alert_id]


def test_query_from_url_parameters() -> None:
    assert Query.from_params({}) == Query()
    assert Query.from_params(
        {"after": "7", "rule": "sim_churn", "severity": "high", "region": "62", "limit": "50"}
    ) == Query(after=7, rule="sim_churn", severity="high", region="62", limit=50)
    assert Query.from_params({"after": "", "region": ""}) == Query()
    assert Query.from_params({"limit": "999999"}).limit == ALERTS_KEPT


@pytest.mark.parametrize(
    ("params", "phrase"),
    [
        ({"after": "-1"}, "after"),
        ({"after": "x"}, "after"),
        ({"limit": "1.5"}, "limit"),
        ({"region": "62a"}, "region"),
        ({"region": "6201021"}, "region"),
    ],
)
def test_bad_url_parameters_are_refused(params: dict[str, str], phrase: str) -> None:
    with pytest.raises(ValueError, match=phrase):
        Query.from_params(params)


def test_province_names_come_with_the_first_answer_only() -> None:
    console = Console()
    console.add(alert(1))
    assert console.query(Query())["provinces"]["62"] == {"zh": "甘肃", "en": "Gansu"}
    assert console.query(Query(after=1))["provinces"] == {}


# ---------------------------------------------------------------- the checks' decisions


def decision(
    n: int,
    outcome: str = "allow",
    blocked: tuple[str, ...] = (),
    reviewed: tuple[str, ...] = (),
    repeat: bool = False,
    source: str = "CMCC-GS",
) -> bytes:
    """The audit record of check `chk-n`, as the worker writes it to the decisions topic."""
    reasons = [
        {
            "rule_id": rule_id,
            "action": action,
            "severity": "high",
            "summary_zh": "摘要",
            "summary_en": "summary",
            "facts": {},
        }
        for rule_id, action in [(r, "block") for r in blocked] + [(r, "review") for r in reviewed]
    ]
    return orjson.dumps(
        {
            "schema": "duanka.decision/1",
            "check_id": f"chk-{n}",
            "decision": outcome,
            "reasons": reasons,
            "reservation": None,
            "decided_at": f"2026-12-01T10:{n:02d}:00.004+08:00",
            "subject": {"key": f"k:{n:04x}", "id_masked": "6201**********1234"},
            "stale": False,
            "source": source,
            "event_type": "sim.activate",
            "region_code": "620102",
            "outlet_id": "GS-LZ-0012",
            "agent_id": "A-77812",
            "requested_at": f"2026-12-01T10:{n:02d}:00+08:00",
            "repeat": repeat,
        }
    )


def test_the_console_lists_the_rules_that_block_before_any_refusal() -> None:
    view = Console().query(Query())["decisions"]
    assert view["counts"]["decision"] == {"allow": 0, "review": 0, "refuse": 0}
    assert view["counts"]["refusals"] == {
        "sim_nonlocal_monthly_limit": 0,
        "watchlist_hit": 0,
        "sim_carrier_limit": 0,
        "bank_type1_limit": 0,
    }
    assert (view["total"], view["skipped"], view["repeats"]) == (0, 0, 0)
    # a rule configured to block is listed; one configured to review is not
    rules = RuleSettings(watchlist_hit=WatchlistSettings(action="review"))
    assert "watchlist_hit" not in blocking_rules(rules)


def test_checks_are_counted_by_outcome_and_refusals_under_each_blocking_rule() -> None:
    checks = Checks(topic="screening.decisions")
    console = Console(checks=checks)
    errors = checks.receive(
        [
            decision(1, "allow"),
            decision(2, "review", reviewed=("sim_nonlocal_not_in_person",)),
            decision(3, "refuse", blocked=("sim_carrier_limit",)),
            # refused by two rules, with a rule that only asks for review besides
            decision(
                4,
                "refuse",
                blocked=("watchlist_hit", "sim_carrier_limit"),
                reviewed=("sim_mail_out_of_province",),
            ),
            decision(5, "refuse", blocked=("a_rule_added_later",)),
        ]
    )
    assert errors == []
    view = console.query(Query())["decisions"]
    assert view["counts"]["decision"] == {"allow": 1, "review": 1, "refuse": 3}
    assert view["counts"]["refusals"] == {
        "sim_nonlocal_monthly_limit": 0,
        "watchlist_hit": 1,
        "sim_carrier_limit": 2,
        "bank_type1_limit": 0,
        "a_rule_added_later": 1,
    }
    assert view["total"] == 5
    assert view["topic"] == "screening.decisions" and view["status"] == "starting"


def test_a_check_answered_again_or_read_twice_counts_once() -> None:
    checks = Checks()
    first = decision(3, "refuse", blocked=("sim_carrier_limit",))
    checks.receive([first, first, decision(3, "refuse", ("sim_carrier_limit",), repeat=True)])
    # the same check_id at another source is another check
    checks.receive([decision(3, "refuse", ("sim_carrier_limit",), source="CUCC-GS")])
    view = checks.view()
    assert (view["total"], view["repeats"]) == (2, 2)
    assert view["counts"]["decision"]["refuse"] == 2
    assert view["counts"]["refusals"]["sim_carrier_limit"] == 2


def test_records_that_are_not_decisions_are_skipped_and_counted() -> None:
    checks = Checks()
    good = orjson.loads(decision(1, "refuse", blocked=("watchlist_hit",)))
    values: list[bytes | None] = [
        b"not json",
        None,
        encode_alert(alert(1)),  # an alert on the wrong topic
        orjson.dumps({**good, "decision": "maybe"}),
        orjson.dumps({**good, "reasons": [{"rule_id": "watchlist_hit"}]}),
        orjson.dumps({"line": 3, "error": "missing", "field": "check_id"}),  # replay's rejection
        orjson.dumps(good),
    ]
    errors = checks.receive(values)
    assert [e.field for e in errors] == [
        "record",
        "record",
        "schema",
        "decision",
        "reasons[0].action",
        "schema",
    ]
    view = checks.view()
    assert (view["skipped"], view["total"]) == (6, 1)
    assert view["counts"]["refusals"]["watchlist_hit"] == 1


def test_the_console_keeps_no_subject_of_a_decision() -> None:
    checks = Checks(remember=2)
    for n in range(1, 5):
        checks.receive([decision(n, "refuse", blocked=("watchlist_hit",))])
    assert len(checks.counts._seen) == 2  # bounded, like the alert ids
    kept = orjson.dumps(checks.view()) + "".join(checks.counts._seen).encode()
    assert b"k:" not in kept and b"*" not in kept  # neither the pseudonym nor the masked id


# ---------------------------------------------------------------- the page


def test_the_page_loads_nothing_from_outside_the_worker() -> None:
    body, policy = console_page()
    html = body.decode()
    assert not re.search(r"https?:|//[\w.-]+\.\w|@import|url\(|<link[^>]+href=\"(?!data:)", html)
    assert "<script src" not in html and "<iframe" not in html
    assert re.search(r"(^|; )default-src 'none'", policy)
    assert "connect-src 'self'" in policy
    assert "http" not in policy and "*" not in policy


def test_the_page_puts_data_into_the_dom_as_text_only() -> None:
    html = console_page()[0].decode()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in html


def test_the_policy_allows_exactly_the_inline_script_and_style() -> None:
    body, policy = console_page()
    html = body.decode()
    for tag, directive in (("script", "script-src"), ("style", "style-src")):
        (inline,) = re.findall(rf"<{tag}>(.*?)</{tag}>", html, flags=re.DOTALL)
        digest = base64.b64encode(hashlib.sha256(inline.encode()).digest()).decode()
        assert f"{directive} 'sha256-{digest}';" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy

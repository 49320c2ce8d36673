"""The police console in headless Chromium, against a real worker and a real broker.

Events go in through Kafka one at a time; the test waits for each alert to
appear on the page, then checks what the page shows: the rule ids, masked ids
and never a raw id number, newest first, the counts per rule and severity,
that each filter hides the other alerts, and that a repeated alert and a
record that is not an alert, put straight on the alert topic, change the list
not at all but are counted. Decision records put on the decisions topic (as
the worker audits its checks) show as checks per outcome and refusals per
rule, each check once, without their subject.

Every page needs a signed-in user: the test adds one with `duanka users add`
to the worker's users file and signs in through the form first, as an
analyst would; a wrong password gets the form again, and no console.

The case pages are driven with a simulated world holding a planted ring
(test_police_loop's `ring_world`): a viewer finds the ring's case by its
outlet, sees its link graph and no verdict form, and is refused a verdict
even with the session's CSRF token; an analyst sends one through the form,
which lands on the dispositions topic and then shows on the case page.
With DUANKA_SCREENSHOTS=1 the pictures taken go to docs/ too.
"""

from __future__ import annotations

import os
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from integration.test_police_loop import final_cases, produce, ring_world
from kafka import KafkaProducer
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select, WebDriverWait
from workerkit import KEY, WorkerRun, console_opener

from rules.alert import make_alert_id
from rules.idnumber import check_digit
from rules.pseudonym import Pseudonymizer, mask_id
from stream.console import RULE_IDS

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# Headless, and nothing that reaches for the network on its own.
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--no-proxy-server",
    "--window-size=1400,900",
)
WAIT_S = 60.0
WORKER_START_S = 120.0
STALE_RETRIES = 3  # the page replaces a counter's node when it re-renders
ANALYST = "ana"
VIEWER = "vic"
PASSWORD = "correct horse battery"
DOCS = Path(__file__).resolve().parents[2] / "docs"


def valid_id(first17: str) -> str:
    return first17 + check_digit(first17)


LOCAL = valid_id("62010219900101123")  # Gansu, local at the Gansu outlet
NONLOCAL = valid_id("51010419851231456")  # Sichuan
CHECKED = valid_id("11010519491231002")  # Beijing: only in the decisions
SUBJECTS = Pseudonymizer(KEY.encode())


def event(event_id: str, minute: int, **fields: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "schema": "duanka.event/1",
        "event_id": event_id,
        "event_type": "sim.activate",
        "occurred_at": f"2026-11-20T10:{minute:02d}:00+08:00",
        "source": "CMCC-GS",
        "id_type": "resident_id",
        "id_number": LOCAL,
        "region_code": "620102",
        "outlet_id": "GS-LZ-0012",
        "agent_id": "A-77812",
        "channel": "online",
        "verification": "remote_face",
        "msisdn": "13912345678",
        "sim_kind": "personal",
    }
    return record | fields


def mailed(event_id: str, minute: int, destination: str) -> dict[str, Any]:
    delivery = {"method": "mail", "region_code": destination, "address_key": "a1f3c9"}
    return event(event_id, minute, delivery=delivery)


# (event, the alert's rule, severity, id number): each gives exactly one alert
TO_YUNNAN = (mailed("C-1", 10, "530102"), "sim_mail_out_of_province", "high", LOCAL)
NOT_IN_PERSON = (
    event("C-2", 20, id_number=NONLOCAL, region_code="610102", outlet_id="SN-XA-0001"),
    "sim_nonlocal_not_in_person",
    "medium",
    NONLOCAL,
)
TO_SICHUAN = (mailed("C-3", 30, "510104"), "sim_mail_out_of_province", "medium", LOCAL)
CASES = (TO_YUNNAN, NOT_IN_PERSON, TO_SICHUAN)


def decision(n: int, outcome: str, *reasons: tuple[str, str], repeat: bool = False) -> bytes:
    """The audit record of check `chk-n` with these (rule_id, action) reasons, as the worker's."""
    return orjson.dumps(
        {
            "schema": "duanka.decision/1",
            "check_id": f"CMCC-GS-chk-{n}",
            "decision": outcome,
            "reasons": [
                {
                    "rule_id": rule_id,
                    "action": action,
                    "severity": "high",
                    "summary_zh": "摘要",
                    "summary_en": "summary",
                    "facts": {},
                }
                for rule_id, action in reasons
            ],
            "reservation": None,
            "decided_at": f"2026-12-01T10:{n:02d}:00.004+08:00",
            "subject": {
                "key": SUBJECTS.subject_key("resident_id", CHECKED),
                "id_masked": mask_id(CHECKED),
            },
            "stale": False,
            "source": "CMCC-GS",
            "event_type": "sim.activate",
            "region_code": "620102",
            "outlet_id": "GS-LZ-0012",
            "agent_id": "A-77812",
            "requested_at": f"2026-12-01T10:{n:02d}:00+08:00",
            "repeat": repeat,
        }
    )


CARRIER_LIMIT = ("sim_carrier_limit", "block")
DECISIONS = (
    decision(1, "allow"),
    decision(2, "review", ("sim_nonlocal_not_in_person", "review")),
    decision(3, "refuse", CARRIER_LIMIT),
    decision(4, "refuse", ("watchlist_hit", "block"), CARRIER_LIMIT),
    decision(3, "refuse", CARRIER_LIMIT, repeat=True),  # the same check asked again
    decision(1, "allow"),  # the same record sent twice
    b"not a decision",
)


def alert_id(case: tuple[dict[str, Any], str, str, str]) -> str:
    record, rule_id, _, id_number = case
    key = SUBJECTS.subject_key("resident_id", id_number)
    return make_alert_id(rule_id, key, record["source"], record["event_id"])


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    """Headless Chromium with a profile of its own; Selenium uses Debian's driver, fetches none."""
    options = Options()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def producer(worker_run: WorkerRun) -> Iterator[KafkaProducer]:
    producer = KafkaProducer(bootstrap_servers=worker_run.bootstrap)
    try:
        yield producer
    finally:
        producer.close()


def get(
    url: str, opener: urllib.request.OpenerDirector | None = None
) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body; with `opener`, as the user it signed in."""
    try:
        with (opener or urllib.request.build_opener()).open(url, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def add_analyst(run: WorkerRun) -> None:
    """The analyst the test signs in as, in the worker's users file, as an operator adds one."""
    add_user(run, ANALYST, "analyst")


def add_user(run: WorkerRun, name: str, role: str) -> None:
    stdin = f"{PASSWORD}\n".encode()
    run.duanka("users", "add", name, "--role", role, "--password-stdin", stdin=stdin)


def wait_until_reading(run: WorkerRun) -> urllib.request.OpenerDirector:
    """Until the worker serves the console and its readers are on the alert and decision topics.

    What it returns is signed in as the analyst.
    """
    url = f"http://127.0.0.1:{run.web_port}/console/alerts.json"
    deadline = time.monotonic() + WORKER_START_S
    opener = None
    while time.monotonic() < deadline:
        run.check_alive()
        try:
            opener = opener or console_opener(run, ANALYST, PASSWORD)
            status, _, body = get(url, opener)
            view = orjson.loads(body) if status == 200 else {}
            if view.get("status") == view.get("decisions", {}).get("status") == "reading":
                return opener
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(
        f"the console did not start: {run.log.read_text(errors='replace')[-4000:]}"
    )


def sign_in(
    driver: WebDriver, run: WorkerRun, password: str = PASSWORD, user: str = ANALYST
) -> None:
    """Open the console, which sends to the sign-in form, and fill it in."""
    driver.get(f"http://127.0.0.1:{run.web_port}/console/")
    WebDriverWait(driver, WAIT_S).until(lambda d: "/console/login" in d.current_url)
    driver.find_element(By.ID, "user").send_keys(user)
    driver.find_element(By.ID, "password").send_keys(password)
    driver.find_element(By.ID, "sign-in").click()


def cards(driver: WebDriver) -> list[Any]:
    return list(driver.find_elements(By.CSS_SELECTOR, "#alerts .alert"))


def shown_ids(driver: WebDriver) -> list[str]:
    return [card.get_attribute("data-alert-id") for card in cards(driver)]


def wait_for(driver: WebDriver, expected: list[str], run: WorkerRun) -> None:
    """Until the page lists exactly these alert ids, in this order."""

    def listed(d: WebDriver) -> bool:
        run.check_alive()
        return shown_ids(d) == expected

    WebDriverWait(driver, WAIT_S, poll_frequency=0.2).until(
        listed, message=f"expected {expected}, the page shows {shown_ids(driver)}"
    )


def chip_count(driver: WebDriver, attribute: str, value: str) -> str:
    selector = f"[data-{attribute}='{value}'].chip .n"
    return str(driver.find_element(By.CSS_SELECTOR, selector).text)


def text_of(driver: WebDriver, element_id: str) -> str:
    """The element's text; found again if the page re-rendered it between finding and reading."""
    for _ in range(STALE_RETRIES):
        try:
            return str(driver.find_element(By.ID, element_id).text)
        except StaleElementReferenceException:
            continue
    return str(driver.find_element(By.ID, element_id).text)


def test_console_shows_alerts_as_they_arrive(
    worker_run: WorkerRun, browser: WebDriver, producer: KafkaProducer, tmp_path: Path
) -> None:
    add_analyst(worker_run)
    worker_run.start()
    wait_until_reading(worker_run)
    sign_in(browser, worker_run)
    WebDriverWait(browser, WAIT_S).until(lambda d: text_of(d, "total") == "0")
    assert text_of(browser, "me") == f"signed in as {ANALYST} (analyst) · sign out"

    expected: list[str] = []
    for case in CASES:
        record = case[0]
        producer.send(
            worker_run.topics["sim_events"],
            key=record["event_id"].encode(),
            value=orjson.dumps(record),
        )
        producer.flush()
        expected.insert(0, alert_id(case))  # newest first
        wait_for(browser, expected, worker_run)

    assert_cards(browser)
    assert_counts(browser)
    assert_evidence(browser)
    assert_filters(browser, worker_run)
    assert_checks(browser, producer, worker_run)

    # An alert delivered twice (as after a worker crash) and a record that is not an alert
    records = worker_run.read("alerts", lambda rs: len(rs) >= len(CASES), settle=0.5)
    (first_alert,) = [r for r in records if b'"event_id":"C-1"' in r.value]
    producer.send(worker_run.topics["alerts"], key=first_alert.key, value=first_alert.value)
    producer.send(worker_run.topics["alerts"], key=b"x", value=b"not an alert")
    producer.flush()
    WebDriverWait(browser, WAIT_S).until(
        lambda d: (text_of(d, "duplicates"), text_of(d, "skipped")) == ("1", "1")
    )
    assert shown_ids(browser) == expected
    assert text_of(browser, "total") == "3"

    source = browser.page_source
    for number in (LOCAL, NONLOCAL, CHECKED):
        assert number not in source
    # the decisions' subject is not shown at all: neither its pseudonym nor its masked id
    assert SUBJECTS.subject_key("resident_id", CHECKED) not in source
    assert mask_id(CHECKED) not in source
    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert severe == []  # no script error, no request the page's policy refused

    browser.set_window_size(1400, 900)
    keep_screenshot(browser, tmp_path / "console.png")


def keep_screenshot(driver: WebDriver, shot: Path) -> None:
    """The window as a PNG at `shot`; with DUANKA_SCREENSHOTS=1, copied to docs/ for the docs."""
    assert driver.save_screenshot(str(shot))
    assert shot.read_bytes().startswith(b"\x89PNG")
    if os.environ.get("DUANKA_SCREENSHOTS") == "1":
        shutil.copyfile(shot, DOCS / shot.name)


def assert_cards(driver: WebDriver) -> None:
    by_id = {card.get_attribute("data-alert-id"): card for card in cards(driver)}
    for case in CASES:
        record, rule_id, severity, id_number = case
        card = by_id[alert_id(case)]
        assert card.get_attribute("data-rule-id") == rule_id
        assert card.get_attribute("data-severity") == severity
        assert card.find_element(By.CSS_SELECTOR, ".rule").text == rule_id
        assert card.find_element(By.CSS_SELECTOR, ".badge").text.lower() == severity
        assert card.find_element(By.CSS_SELECTOR, ".who").text.startswith(mask_id(id_number))
        assert record["occurred_at"][11:19] in card.find_element(By.CSS_SELECTOR, ".when").text
    yunnan = by_id[alert_id(TO_YUNNAN)]
    assert yunnan.find_element(By.CSS_SELECTOR, ".zh").text == (
        "号卡在甘肃(62)办理后邮寄至外省云南(53)，寄往涉诈高发地区"
    )
    assert yunnan.find_element(By.CSS_SELECTOR, ".en").text == (
        "SIM opened in Gansu (62) mailed out of province to Yunnan (53), a fraud hotspot"
    )
    assert "CMCC-GS @ 620102" in yunnan.find_element(By.CSS_SELECTOR, ".source").text
    assert yunnan.find_element(By.CSS_SELECTOR, ".action").text.lower() == "review"


def assert_counts(driver: WebDriver) -> None:
    rule_counts = {
        chip.get_attribute("data-rule-id"): chip.find_element(By.CSS_SELECTOR, ".n").text
        for chip in driver.find_elements(By.CSS_SELECTOR, "#rule-counts .chip")
    }
    assert len(rule_counts) == len(RULE_IDS)
    assert rule_counts.pop("sim_mail_out_of_province") == "2"
    assert rule_counts.pop("sim_nonlocal_not_in_person") == "1"
    assert set(rule_counts.values()) == {"0"}
    assert chip_count(driver, "severity", "high") == "1"
    assert chip_count(driver, "severity", "medium") == "2"
    assert chip_count(driver, "severity", "critical") == "0"
    assert text_of(driver, "total") == "3"


def assert_evidence(driver: WebDriver) -> None:
    card = driver.find_element(By.CSS_SELECTOR, f"[data-alert-id='{alert_id(TO_YUNNAN)}']")
    evidence = card.find_element(By.CSS_SELECTOR, ".evidence")
    assert not evidence.is_displayed()  # folded until asked for
    card.find_element(By.CSS_SELECTOR, "details summary").click()
    WebDriverWait(driver, 5).until(lambda d: evidence.is_displayed())
    rows = [
        [cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
        for row in evidence.find_elements(By.CSS_SELECTOR, "tbody tr")
    ]
    assert rows == [["CMCC-GS", "C-1", "sim.activate", "2026-11-20 10:10:00 +08:00"]]
    facts = card.find_element(By.CSS_SELECTOR, ".facts").text
    assert "delivery_province 53" in facts and "hotspot true" in facts


def assert_filters(driver: WebDriver, run: WorkerRun) -> None:
    everything = [alert_id(case) for case in reversed(CASES)]
    choices = [
        ("filter-rule", "sim_nonlocal_not_in_person", [NOT_IN_PERSON]),
        ("filter-rule", "sim_mail_out_of_province", [TO_SICHUAN, TO_YUNNAN]),
        ("filter-severity", "medium", [TO_SICHUAN, NOT_IN_PERSON]),
        ("filter-region", "61", [NOT_IN_PERSON]),
        ("filter-region", "62", [TO_SICHUAN, TO_YUNNAN]),
    ]
    for select_id, value, shown in choices:
        driver.find_element(By.ID, "clear").click()
        wait_for(driver, everything, run)
        Select(driver.find_element(By.ID, select_id)).select_by_value(value)
        wait_for(driver, [alert_id(case) for case in shown], run)
    # a rule's count is also a filter
    driver.find_element(By.ID, "clear").click()
    wait_for(driver, everything, run)
    driver.find_element(By.CSS_SELECTOR, "[data-rule-id='sim_nonlocal_not_in_person'].chip").click()
    wait_for(driver, [alert_id(NOT_IN_PERSON)], run)
    driver.find_element(By.ID, "clear").click()
    wait_for(driver, everything, run)


def assert_checks(driver: WebDriver, producer: KafkaProducer, run: WorkerRun) -> None:
    """Decision records on the decisions topic: checks per outcome, refusals per blocking rule."""
    assert text_of(driver, "checks-total") == "0"
    key = SUBJECTS.subject_key("resident_id", CHECKED).encode()
    for value in DECISIONS:
        producer.send(run.topics["decisions"], key=key, value=value)
    producer.flush()
    WebDriverWait(driver, WAIT_S).until(
        lambda d: (
            (text_of(d, "checks-total"), text_of(d, "checks-repeats"), text_of(d, "checks-skipped"))
            == ("4", "2", "1")
        ),
        message="the page did not count the checks",
    )
    outcomes = {}
    for chip in driver.find_elements(By.CSS_SELECTOR, "#decision-counts .chip"):
        count = chip.find_element(By.CSS_SELECTOR, ".n").text
        label = chip.text.removesuffix(count).strip()
        outcomes[chip.get_attribute("data-decision")] = (label, count)
    # each outcome named in both languages, as the page's headings are
    assert outcomes == {
        "allow": ("allow 通过", "1"),
        "review": ("review 复核", "1"),
        "refuse": ("refuse 拒绝", "2"),
    }
    refused = {
        chip.get_attribute("data-refused"): chip.find_element(By.CSS_SELECTOR, ".n").text
        for chip in driver.find_elements(By.CSS_SELECTOR, "#refusal-counts .chip")
    }
    # the rules configured to block, each refused check counted under every rule that blocked it
    assert refused == {
        "sim_nonlocal_monthly_limit": "0",
        "watchlist_hit": "1",
        "sim_carrier_limit": "2",
        "bank_type1_limit": "0",
    }
    assert run.topics["decisions"] in text_of(driver, "checks-status")
    # the alerts are as they were
    assert text_of(driver, "total") == "3"


def assert_a_wrong_password_shows_the_form_again(worker_run: WorkerRun, browser: WebDriver) -> None:
    """A wrong password: the form again and no console; then the right one; then signing out."""
    sign_in(browser, worker_run, password=PASSWORD + "?")
    WebDriverWait(browser, WAIT_S).until(lambda d: d.find_elements(By.ID, "message"))
    assert text_of(browser, "message") == "unknown user or wrong password"
    assert "/console/login" in browser.current_url
    assert not browser.find_elements(By.ID, "alerts")
    # then the right one, in the same form: the console
    browser.find_element(By.ID, "user").send_keys(ANALYST)
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    browser.find_element(By.ID, "sign-in").click()
    WebDriverWait(browser, WAIT_S).until(lambda d: text_of(d, "total") == "0")
    # signing out ends the session: the console sends to the form again
    browser.find_element(By.CSS_SELECTOR, "#logout button").click()
    WebDriverWait(browser, WAIT_S).until(lambda d: "/console/login" in d.current_url)
    browser.get(f"http://127.0.0.1:{worker_run.web_port}/console/")
    WebDriverWait(browser, WAIT_S).until(lambda d: "/console/login" in d.current_url)
    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    # the one the page's policy could refuse or a script could raise: none; 401s are expected
    assert [e for e in severe if " 401 " not in e["message"]] == []


def assert_pages_answer_with_their_policy(
    worker_run: WorkerRun, opener: urllib.request.OpenerDirector
) -> None:
    """Before any alert: headers, the page, alerts.json's errors and its empty view."""
    base = f"http://127.0.0.1:{worker_run.web_port}/console/"
    status, headers, _ = get(base + "alerts.json")
    assert status == 401  # no session
    status, headers, body = get(base, opener)
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["Content-Security-Policy"].startswith("default-src 'none'; script-src 'sha256-")
    assert headers["X-Frame-Options"] == "DENY"
    assert "断卡预警台" in body.decode()
    status, headers, body = get(base + "alerts.json?after=x", opener)
    assert status == 400
    assert orjson.loads(body) == {"error": "after must be a whole number"}
    status, _, body = get(base + "alerts.json?rule=sim_churn", opener)
    view = orjson.loads(body)
    assert status == 200 and view["topic"] == worker_run.topics["alerts"]
    assert view["alerts"] == [] and view["total"] == 0
    checks = view["decisions"]
    assert (checks["topic"], checks["status"]) == (worker_run.topics["decisions"], "reading")
    assert checks["counts"]["decision"] == {"allow": 0, "review": 0, "refuse": 0}
    assert checks["total"] == 0


def post(
    url: str, fields: dict[str, str], opener: urllib.request.OpenerDirector
) -> tuple[int, bytes]:
    """Status and body of a form POST, as the user `opener` signed in."""
    data = urllib.parse.urlencode(fields).encode()
    try:
        with opener.open(url, data=data, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def ring_case(run: WorkerRun, outlets: set[str]) -> dict[str, Any]:
    """The ring's case from police.cases, once it holds all ten alerts."""

    def of_ring(doc: dict[str, Any]) -> bool:
        named = {e["token"] for e in doc["entities"] if e["kind"] == "outlet"}
        return doc["alert_count"] == 10 and named == outlets

    def complete(records: list[Any]) -> bool:
        return any(of_ring(doc) for doc in final_cases(records).values())

    records = run.read("cases", until=complete, timeout=WAIT_S * 2, settle=0.5)
    [ring] = [doc for doc in final_cases(records).values() if of_ring(doc)]
    return ring


def wait_listed(run: WorkerRun, opener: urllib.request.OpenerDirector, case_id: str) -> None:
    """Until the console has read the case's document with all its alerts."""
    url = f"http://127.0.0.1:{run.web_port}/console/case.json?id={case_id}"

    def complete() -> bool:
        run.check_alive()
        status, _, body = get(url, opener)
        return status == 200 and orjson.loads(body)["alert_count"] == 10

    deadline = time.monotonic() + WAIT_S
    while not complete():
        assert time.monotonic() < deadline, f"the console does not show {case_id}"
        time.sleep(0.5)


def linked_to(driver: WebDriver, kind: str) -> tuple[str, list[tuple[str, str]]]:
    """The one node of `kind` in the case's graph, and (id, kind) of each node a link reaches."""
    nodes = {
        node.get_attribute("data-id"): node.get_attribute("data-kind")
        for node in driver.find_elements(By.CSS_SELECTOR, ".graph svg g.node")
    }
    [node_id] = [n for n, k in nodes.items() if k == kind]
    reached = []
    for line in driver.find_elements(By.CSS_SELECTOR, ".graph svg line.link"):
        ends = [line.get_attribute("data-source"), line.get_attribute("data-target")]
        if node_id in ends:
            ends.remove(node_id)
            reached.append((str(ends[0]), str(nodes[ends[0]])))
    return str(node_id), reached


def sign_out(driver: WebDriver) -> None:
    driver.find_element(By.CSS_SELECTOR, "form[action='/console/logout'] button").click()
    WebDriverWait(driver, WAIT_S).until(lambda d: "/console/login" in d.current_url)


def signed_in(driver: WebDriver, run: WorkerRun, user: str, role: str) -> None:
    sign_in(driver, run, user=user)
    WebDriverWait(driver, WAIT_S).until(
        lambda d: text_of(d, "me").startswith(f"signed in as {user} ({role})")
    )


def test_case_pages_show_a_ring_and_take_an_analysts_verdict(
    worker_run: WorkerRun, browser: WebDriver, tmp_path: Path
) -> None:
    add_analyst(worker_run)
    add_user(worker_run, VIEWER, "viewer")
    worker_run.start()
    # one worker for the sign-in and the pages' policy too: each start costs seconds
    assert_pages_answer_with_their_policy(worker_run, wait_until_reading(worker_run))
    assert_a_wrong_password_shows_the_form_again(worker_run, browser)
    sim = ring_world()
    produce(worker_run, sim.world.events, tmp_path / "events.jsonl")
    planted = [e for e in sim.world.events if str(e.get("device_id", "")).startswith("ring-")]
    ring = ring_case(worker_run, {e["outlet_id"] for e in planted})
    viewer = console_opener(worker_run, VIEWER, PASSWORD)
    wait_listed(worker_run, viewer, ring["case_id"])
    [identity_alert, *_] = [a for a in ring["alerts"] if a["subject"]["kind"] == "identity"]
    alert = identity_alert["alert_id"]

    signed_in(browser, worker_run, VIEWER, "viewer")
    view_as_viewer(browser, worker_run, ring, planted)
    base = f"http://127.0.0.1:{worker_run.web_port}/console/"
    _, _, me = get(base + "me.json", viewer)
    refused = {"csrf": orjson.loads(me)["csrf"], "alert_id": alert, "status": "dismissed"}
    status, body = post(base + "dispose", refused, viewer)
    assert (status, orjson.loads(body)) == (403, {"error": "this needs the analyst role"})

    sign_out(browser)
    signed_in(browser, worker_run, ANALYST, "analyst")
    case_url = base + f"cases/{ring['case_id']}"
    browser.get(case_url)
    until = send_verdict(browser, alert)
    WebDriverWait(browser, WAIT_S).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".flash"))
    flash = browser.find_element(By.CSS_SELECTOR, ".flash").text
    assert flash.startswith(f"Verdict on alert {alert} sent.")
    # the one record on the topic: the analyst's, not the viewer's refused one
    [record] = worker_run.read("dispositions", until=lambda rs: len(rs) >= 1, settle=1.0)
    assert record.key == alert.encode()
    verdict = orjson.loads(record.value)
    assert verdict["status"] == "confirmed" and verdict["by"] == f"console:{ANALYST}"
    assert verdict["punish"]["scope"] == "telecom"
    assert verdict["punish"]["until"] == until.isoformat()
    assert verdict["note"] == "sold the SIM to a collector"

    wait_verdict_shown(browser, worker_run, case_url, alert)
    browser.set_window_size(1280, 1400)
    browser.get(case_url)
    graph = browser.find_element(By.CSS_SELECTOR, ".graph svg")
    WebDriverWait(browser, WAIT_S).until(lambda d: graph.is_displayed())
    keep_screenshot(browser, tmp_path / "case.png")
    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert [e for e in severe if " 401 " not in e["message"]] == []


def view_as_viewer(
    driver: WebDriver, run: WorkerRun, ring: dict[str, Any], planted: list[dict[str, Any]]
) -> None:
    """Find the ring's case by an outlet, open it: its graph, its alerts, and no verdict form."""
    outlets = sorted({e["outlet_id"] for e in planted})
    driver.get(f"http://127.0.0.1:{run.web_port}/console/cases")
    driver.find_element(By.CSS_SELECTOR, "form.search input[name='q']").send_keys(outlets[0])
    driver.find_element(By.CSS_SELECTOR, "form.search button").click()
    WebDriverWait(driver, WAIT_S).until(lambda d: "q=" in d.current_url)
    [row] = driver.find_elements(By.CSS_SELECTOR, "table tr:has(a[href^='/console/cases/'])")
    assert ", ".join(outlets) in row.text  # both of the ring's outlets listed
    row.find_element(By.LINK_TEXT, ring["case_id"]).click()
    WebDriverWait(driver, WAIT_S).until(
        lambda d: d.current_url.endswith(f"/cases/{ring['case_id']}")
    )
    assert_ring_graph(driver, ring)
    assert len(driver.find_elements(By.CSS_SELECTOR, ".alert")) == 10
    assert not driver.find_elements(By.CSS_SELECTOR, "form.verdict")
    source = driver.page_source
    for event in planted:  # masked ids and keyed tokens only
        assert event["id_number"] not in source and event["device_id"] not in source


def wait_verdict_shown(driver: WebDriver, run: WorkerRun, case_url: str, alert: str) -> None:
    """Until the case page, reloaded, shows the verdict: once the engine has taken it."""

    def shows_verdict(d: WebDriver) -> bool:
        run.check_alive()
        d.get(case_url)
        head = d.find_element(By.CSS_SELECTOR, f"[id='a-{alert}'] .head").text
        return bool(head.endswith("verdict: confirmed"))

    WebDriverWait(driver, WAIT_S, poll_frequency=0.5).until(
        shows_verdict, message="the case page does not show the verdict"
    )
    assert "verdicts: 1 confirmed" in driver.find_element(By.CSS_SELECTOR, "main h2 + p").text
    assert "sold the SIM" not in driver.page_source  # the note stays on the police's topic


def assert_ring_graph(driver: WebDriver, ring: dict[str, Any]) -> None:
    """One device and one address, each linked to the eight people of the ring."""
    tokens = {e["kind"]: e["token"] for e in ring["entities"]}
    for kind in ("device", "address"):
        node_id, reached = linked_to(driver, kind)
        assert node_id == f"{kind}:{tokens[kind]}"
        assert len(reached) == len(set(reached)) == 8  # a line each, to eight people
        assert {other_kind for _, other_kind in reached} == {"identity"}
    people = driver.find_elements(By.CSS_SELECTOR, ".graph svg g.node[data-kind='identity']")
    assert len(people) == 8


def send_verdict(driver: WebDriver, alert: str) -> date:
    """Confirm `alert` with a telecom punishment until a year after it starts; that day."""
    form = driver.find_element(By.CSS_SELECTOR, f"[id='a-{alert}'] form.verdict")
    Select(form.find_element(By.NAME, "status")).select_by_value("confirmed")
    Select(form.find_element(By.NAME, "punish_scope")).select_by_value("telecom")
    since = date.fromisoformat(str(form.find_element(By.NAME, "since").get_attribute("value")))
    until = since + timedelta(days=365)
    field = form.find_element(By.NAME, "until")
    driver.execute_script("arguments[0].value = arguments[1]", field, until.isoformat())
    assert field.get_attribute("value") == until.isoformat()
    form.find_element(By.NAME, "note").send_keys("sold the SIM to a collector")
    form.find_element(By.TAG_NAME, "button").click()
    return until

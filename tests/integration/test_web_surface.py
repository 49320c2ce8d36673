"""A running worker's web port, over HTTP: its own pages answer, faust's are 404.

One `duanka worker` on the test broker, started with every `APP_WEB_*`
variable by which faust's environment could switch its own pages on. faust's
pages (the table values under `/table/`, the cluster under `/router/`, its
index and statistics, its service graph, its performance figures) must all
be 404, and `/health` and `/metrics` 200.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request

import orjson
import pytest
from workerkit import WorkerRun

pytestmark = pytest.mark.integration

# every page faust-streaming 0.15.3 can serve, and a table's key under each of its two apps
FAUST_PAGES = (
    "/",
    "/assignment/",
    "/stats/",
    "/graph/",
    "/performance/",
    "/router/",
    "/router/topics",
    "/router/identity-state/",
    "/router/identity-state/x/",
    "/table/",
    "/table/identity-state/",
    "/table/identity-state/x/",
)
FAUST_PAGE_FLAGS = (
    "APP_WEB_ROUTER_ENABLED",
    "APP_WEB_TABLES_ENABLED",
    "APP_WEB_STATS_ENABLED",
    "APP_WEB_GRAPH_ENABLED",
    "APP_WEB_METRICS_ENABLED",
)
HEALTHY_WITHIN_S = 60.0


def get(run: WorkerRun, path: str) -> tuple[int, bytes]:
    url = f"http://127.0.0.1:{run.web_port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def wait_healthy(run: WorkerRun) -> tuple[int, bytes]:
    """/health's answer once it is 200 (a rebalance may hold it at 503 for a moment)."""
    deadline = time.monotonic() + HEALTHY_WITHIN_S
    while (answer := get(run, "/health"))[0] == 503 and time.monotonic() < deadline:
        run.check_alive()
        time.sleep(0.5)
    return answer


def test_only_the_workers_own_pages_answer(worker_run: WorkerRun) -> None:
    worker_run.env.update({name: "true" for name in FAUST_PAGE_FLAGS})
    worker_run.start()
    worker_run.wait_ready()
    status, body = wait_healthy(worker_run)
    assert (status, orjson.loads(body)) == (200, {"status": "ok"})
    assert get(worker_run, "/metrics")[0] == 200
    answered = {path: get(worker_run, path)[0] for path in FAUST_PAGES}
    assert answered == {path: 404 for path in FAUST_PAGES}

"""What the worker's web port serves, without a broker: its own pages and none of faust's.

The app is built with `create_app`, as `duanka worker` builds it, and its web
server set up as a worker's start does (`init_server` mounts the blueprints);
then every route on faust's aiohttp application is listed. faust's own pages
(`/table/...` reads a table's values, `/router/...` lists the cluster) must
stay off even when the environment asks for them: faust lets `APP_WEB_*`
variables override an app's settings.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import make_mocked_request

from rules.config import Settings
from rules.pseudonym import DEV_KEY, Pseudonymizer
from stream.app import create_app

ALLOWED = ("/console/", "/v1/check", "/metrics", "/health")
# every setting faust 0.15.3 has to switch one of its pages on
FAUST_PAGE_FLAGS = (
    "APP_WEB_ROUTER_ENABLED",
    "APP_WEB_TABLES_ENABLED",
    "APP_WEB_STATS_ENABLED",
    "APP_WEB_GRAPH_ENABLED",
    "APP_WEB_METRICS_ENABLED",
)


def started_app(tmp_path: Path) -> Any:
    """The worker's faust app, with its web server set up as at the worker's start."""
    settings = Settings()
    worker = dataclasses.replace(settings.worker, data_dir=str(tmp_path / "data"))
    settings = dataclasses.replace(settings, worker=worker)
    origins = frozenset({f"{settings.topics.sim_events}/0"})
    app, _ = create_app(settings, Pseudonymizer(DEV_KEY), origins)
    app.web.init_server()
    return app


def routes(app: Any) -> set[tuple[str, str]]:
    """(method, path) of every route on the aiohttp application faust serves."""
    return {(r.method, r.resource.canonical) for r in app.web.web_app.router.routes()}


@pytest.mark.parametrize("asked", [False, True], ids=["default", "environment-asks-for-all"])
def test_the_port_serves_only_the_workers_own_pages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, asked: bool
) -> None:
    if asked:
        for name in FAUST_PAGE_FLAGS:
            monkeypatch.setenv(name, "true")
    app = started_app(tmp_path)
    assert app.conf.web_tables_enabled is asked  # the environment did reach faust
    served = routes(app)
    assert not {(m, p) for m, p in served if not p.startswith(ALLOWED)}
    assert not {p for _, p in served if p.startswith(("/table", "/router"))}
    paths = {p for _, p in served}
    assert {"/health", "/metrics", "/v1/check", "/v1/check/owner", "/console/"} <= paths


def test_health_says_recovering_until_the_tables_are_recovered(tmp_path: Path) -> None:
    app = started_app(tmp_path)
    view = app.web.views["/health"]

    async def ask() -> tuple[int, Any]:
        response = await view(make_mocked_request("GET", "/health"))
        return response.status, orjson.loads(response.body)

    assert asyncio.run(ask()) == (503, {"status": "recovering"})
    app.tables.recovery.completed.set()
    assert asyncio.run(ask()) == (200, {"status": "ok"})
    app.rebalancing = True
    assert asyncio.run(ask()) == (503, {"status": "recovering"})


def test_the_router_the_check_asks_still_answers(tmp_path: Path) -> None:
    app = started_app(tmp_path)
    assert app.router.table_metadata("identity-state") == {}  # no assignment yet

"""Signing in to the console in tests without a broker: settings, a client, the form."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from argon2 import PasswordHasher

import stream.auth
from rules.config import Settings

PASSWORD = "correct horse battery"


def cheap_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """argon2id with the least work: the tests verify many passwords, not argon2's cost."""
    cheap = lambda: PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)  # noqa: E731
    monkeypatch.setattr(stream.auth, "password_hasher", cheap)


def settings_for(tmp_path: Path) -> Settings:
    settings = Settings()
    console = dataclasses.replace(settings.console, users_file=str(tmp_path / "users.json"))
    worker = dataclasses.replace(settings.worker, data_dir=str(tmp_path / "data"))
    return dataclasses.replace(settings, console=console, worker=worker)


@asynccontextmanager
async def client_of(app: Any) -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(app.web.web_app, host="127.0.0.1")) as client:
        yield client


async def form_token(client: TestClient[Any, Any], next_page: str = "") -> str:
    """Open the sign-in form (which sets its cookie); the token in it."""
    query = f"?next={next_page}" if next_page else ""
    response = await client.get(f"/console/login{query}")
    assert response.status == 200
    found = re.search(r'name="csrf" value="([^"]+)"', await response.text())
    assert found is not None
    return found.group(1)


async def sign_in(
    client: TestClient[Any, Any], user: str, password: str = PASSWORD, next_page: str = ""
) -> Any:
    token = await form_token(client)
    fields = {"user": user, "password": password, "csrf": token, "next": next_page}
    return await client.post("/console/login", data=fields, allow_redirects=False)

"""`duanka users`: the console's users, managed from the command line (stream/cli.py)."""

from __future__ import annotations

import getpass
import io
import stat
from pathlib import Path

import orjson
import pytest
import yaml
from argon2 import PasswordHasher

import stream.auth
from stream.auth import Users
from stream.cli import build_parser, main

PASSWORD = "correct horse battery"


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cheap = lambda: PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)  # noqa: E731
    monkeypatch.setattr(stream.auth, "password_hasher", cheap)
    monkeypatch.setenv("DUANKA_CONFIG", "unset")  # main() sets it: put back after the test
    path = tmp_path / "config.yaml"
    users_file = tmp_path / "console" / "users.json"
    path.write_text(yaml.safe_dump({"console": {"users_file": str(users_file)}}))
    return path


def users_file(config: Path) -> Path:
    return config.parent / "console" / "users.json"


def duanka(config: Path, monkeypatch: pytest.MonkeyPatch, *args: str, stdin: str = "") -> int:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    return main(["--config", str(config), *args])


def test_add_list_passwd_remove(
    config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert duanka(config, monkeypatch, "users", "list") == 0
    assert "no console users" in capsys.readouterr().err

    add = ("users", "add", "ana", "--role", "analyst", "--password-stdin")
    assert duanka(config, monkeypatch, *add, stdin=PASSWORD + "\n") == 0
    assert "added ana (analyst)" in capsys.readouterr().out
    viewer = ("users", "add", "vic", "--role", "viewer", "--password-stdin")
    assert duanka(config, monkeypatch, *viewer, stdin=PASSWORD + "\r\n") == 0
    path = users_file(config)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    users = Users(path)
    assert users.verify("ana", PASSWORD) is not None and users.verify("vic", PASSWORD) is not None

    capsys.readouterr()
    assert duanka(config, monkeypatch, "users", "list") == 0
    listed = capsys.readouterr().out
    assert [line.split()[:2] for line in listed.splitlines()] == [
        ["ana", "analyst"],
        ["vic", "viewer"],
    ]
    assert "$argon2" not in listed and PASSWORD not in listed

    passwd = ("users", "passwd", "ana", "--password-stdin")
    assert duanka(config, monkeypatch, *passwd, stdin="another long password\n") == 0
    assert users.verify("ana", PASSWORD) is None
    assert users.verify("ana", "another long password") is not None

    assert duanka(config, monkeypatch, "users", "remove", "vic") == 0
    assert users.find("vic") is None
    assert set(orjson.loads(path.read_bytes())["users"]) == {"ana"}


def test_a_short_password_is_refused_and_nothing_is_written(
    config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    add = ("users", "add", "ana", "--role", "analyst", "--password-stdin")
    assert duanka(config, monkeypatch, *add, stdin="elevenchars\n") == 1
    err = capsys.readouterr().err
    assert err == "duanka: error: the password is too short: at least 12 characters\n"
    assert not users_file(config).exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("users", "remove", "nobody"), "no console user nobody"),
        (("users", "passwd", "nobody", "--password-stdin"), "no console user nobody"),
        (("users", "add", "ana", "--role", "viewer", "--password-stdin"), "user ana exists"),
        (("users", "add", "a b", "--role", "viewer", "--password-stdin"), "a user name is"),
    ],
)
def test_errors_exit_1_with_the_reason(
    config: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: tuple[str, ...],
    message: str,
) -> None:
    Users(users_file(config)).add("ana", PASSWORD, "analyst")
    assert duanka(config, monkeypatch, *args, stdin=PASSWORD + "\n") == 1
    err = capsys.readouterr().err
    assert err.startswith("duanka: error: ") and message in err


def test_without_stdin_it_asks_twice(
    config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    asked: list[str] = []

    def typing(*typed: str) -> None:
        answers = iter(typed)

        def fake(prompt: str = "") -> str:
            asked.append(prompt)
            return next(answers)

        monkeypatch.setattr(getpass, "getpass", fake)

    typing(PASSWORD, PASSWORD + "x")
    assert duanka(config, monkeypatch, "users", "add", "ana", "--role", "viewer") == 1
    assert "the two passwords differ" in capsys.readouterr().err
    typing("too short")
    assert duanka(config, monkeypatch, "users", "add", "ana", "--role", "viewer") == 1
    assert "too short" in capsys.readouterr().err  # said before asking again
    typing(PASSWORD, PASSWORD)
    assert duanka(config, monkeypatch, "users", "add", "ana", "--role", "viewer") == 0
    first, again = "password for ana: ", "again: "
    assert asked == [first, again, first, first, again]
    assert Users(users_file(config)).verify("ana", PASSWORD) is not None


def test_a_role_is_required_and_one_of_two(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    for args in (["users", "add", "ana"], ["users", "add", "ana", "--role", "admin"]):
        with pytest.raises(SystemExit):
            parser.parse_args(args)
    assert "--role" in capsys.readouterr().err


def test_the_kafka_logins_are_kafka_users() -> None:
    args = build_parser().parse_args(["kafka-users", "add", "carrier", "--password-stdin"])
    assert (args.command, args.action, args.name, args.password_stdin) == (
        "kafka-users",
        "add",
        "carrier",
        True,
    )

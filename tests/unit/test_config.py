"""Settings: the shipped config.yaml, errors that name the key, environment overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rules.config import KafkaSecurity, Settings, load_settings, settings_from_mapping
from rules.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_shipped_config_equals_the_built_in_defaults() -> None:
    # The defaults serve commands run outside the repository; they must not drift.
    assert load_settings(REPO / "config.yaml", environ={}) == Settings()


def test_missing_named_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml", environ={})


def test_config_env_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("kafka: {bootstrap: 'h1:1,h2:2'}\n")
    assert load_settings(environ={"DUANKA_CONFIG": str(path)}).bootstrap == "h1:1,h2:2"


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"kafak": {}}, "unknown key"),
        ({"topics": {"alert": "x"}}, r"topics: unknown key\(s\) alert"),
        ({"topics": {"partitions": "4"}}, "topics.partitions must be an integer"),
        ({"topics": {"partitions": True}}, "topics.partitions must be an integer"),
        ({"worker": {"web_port": 1.5}}, "worker.web_port must be an integer"),
        ({"rules": {"sim_churn2": {}}}, "rules: unknown key"),
        (
            {"rules": {"sim_mail_out_of_province": {"severity": "urgent"}}},
            "severity: 'urgent' is not one of",
        ),
        (
            {"rules": {"sim_mail_out_of_province": {"hotspot_provinces": ["530"]}}},
            "not a 2-digit province code",
        ),
        (
            {"rules": {"sim_mail_out_of_province": {"hotspot_provinces": "53"}}},
            "must be a list of strings",
        ),
        ({"rules": {"sim_mail_out_of_province": {"enabled": "yes"}}}, "must be true or false"),
        ({"kafka": []}, "kafka must be a mapping"),
        ({"kafka": {"security": {"user": "x"}}}, r"kafka.security: unknown key\(s\) user"),
        (
            {"kafka": {"security": {"protocol": "TLS"}}},
            "kafka.security.protocol: 'TLS' is not one of",
        ),
        (
            {"kafka": {"security": {"sasl_mechanism": "GSSAPI"}}},
            "kafka.security.sasl_mechanism: 'GSSAPI' is not one of",
        ),
    ],
)
def test_bad_settings_name_the_key(document: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        settings_from_mapping(document)


def test_yaml_that_is_not_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_settings(path, environ={})


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"kafka": {"bootstrap": "file:1"}}))
    settings = load_settings(
        path,
        environ={
            "DUANKA_BOOTSTRAP": "env:2",
            "DUANKA_TOPIC_ALERTS": "province.alerts",
            "DUANKA_WEB_HOST": "0.0.0.0",
            "DUANKA_WEB_PORT": "7000",
            "DUANKA_DATA_DIR": "/var/lib/duanka",
        },
    )
    assert settings.bootstrap == "env:2"
    assert settings.topics.alerts == "province.alerts"
    assert settings.topics.sim_events == "carrier.sim-events"
    assert (settings.worker.web_host, settings.worker.web_port) == ("0.0.0.0", 7000)
    assert settings.worker.data_dir == "/var/lib/duanka"


def test_bad_port_in_environment() -> None:
    with pytest.raises(ConfigError, match="DUANKA_WEB_PORT must be an integer"):
        load_settings(REPO / "config.yaml", environ={"DUANKA_WEB_PORT": "http"})


def test_topic_names_cover_every_topic() -> None:
    assert Settings().topics.names() == {
        "sim_events": "carrier.sim-events",
        "bank_events": "bank.account-events",
        "watchlist": "screening.watchlist",
        "alerts": "police.alerts",
        "deadletter": "screening.deadletter",
        "holdings": "screening.holdings",
        "decisions": "screening.decisions",
        "dispositions": "police.dispositions",
        "cases": "police.cases",
        "identity_events": "duanka.identity-events",
        "outlet_events": "duanka.outlet-events",
        "agent_signals": "duanka.agent-signals",
        "case_links": "duanka.case-links",
        "implicated": "police.implicated",
        "number_events": "duanka.number-events",
        "place_events": "duanka.place-events",
        "traces": "duanka.traces",
    }


def test_case_and_console_settings_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("cases: {window: 7d, link_by: [identity, device]}\nconsole: {idle: 5m}\n")
    settings = load_settings(path, environ={})
    assert (settings.cases.window_s, settings.cases.link_by) == (7 * 86400, ("identity", "device"))
    assert settings.console.idle_s == 300
    path.write_text("cases: {link_by: [identity, shoe_size]}\n")
    with pytest.raises(ConfigError, match=r"cases.link_by: 'shoe_size' is not one of"):
        load_settings(path, environ={})
    path.write_text("console: {session: 0s}\n")
    with pytest.raises(ConfigError, match=r"console.session must be at least 1s"):
        load_settings(path, environ={})


def test_check_settings_from_the_file(tmp_path: Path) -> None:
    assert Settings().check.reservation_ttl_s == 900
    path = tmp_path / "c.yaml"
    path.write_text("check: {max_wait_ms: 20, reservation_ttl: 5m, remember: 2h}\n")
    check = load_settings(path, environ={}).check
    assert (check.max_wait_ms, check.reservation_ttl_s, check.remember_s) == (20, 300, 7200)
    path.write_text("check: {reservation_ttl: soon}\n")
    with pytest.raises(ConfigError, match=r"check\.reservation_ttl: 'soon' is not a duration"):
        load_settings(path, environ={})
    path.write_text("check: {max_wait_ms: -1}\n")
    with pytest.raises(ConfigError, match=r"check\.max_wait_ms must not be negative"):
        load_settings(path, environ={})
    path.write_text("check: {deadline: 1}\n")
    with pytest.raises(ConfigError, match="unknown key"):
        load_settings(path, environ={})


def test_kafka_security_from_the_file_and_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    security = {"protocol": "SASL_SSL", "username": "file-user", "ssl_cafile": "/etc/ca.pem"}
    path.write_text(yaml.safe_dump({"kafka": {"security": security}}))
    assert load_settings(path, environ={}).security == KafkaSecurity(
        protocol="SASL_SSL", username="file-user", ssl_cafile="/etc/ca.pem"
    )
    environ = {
        "DUANKA_KAFKA_PROTOCOL": "SASL_PLAINTEXT",
        "DUANKA_KAFKA_USERNAME": "duanka",
        "DUANKA_KAFKA_PASSWORD": "s3cret",
    }
    settings = load_settings(path, environ=environ)
    assert settings.security == KafkaSecurity(
        protocol="SASL_PLAINTEXT", username="duanka", password="s3cret", ssl_cafile="/etc/ca.pem"
    )
    # the password must not show up wherever the settings are printed or logged
    assert "s3cret" not in repr(settings)


def test_bad_protocol_in_environment() -> None:
    with pytest.raises(ConfigError, match="DUANKA_KAFKA_PROTOCOL: 'SASL' is not one of"):
        load_settings(REPO / "config.yaml", environ={"DUANKA_KAFKA_PROTOCOL": "SASL"})

"""docker-compose.yml is wired consistently with config.yaml, the pinned Kafka
version, the Prometheus config and the Grafana provisioning, docker-compose
itself accepts it, and the dashboard asks only for metrics the worker exports."""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml

from stream.metrics import WorkerMetrics

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
CONFIG = ROOT / "config.yaml"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
POM = ROOT / "stream" / "kafka" / "pom.xml"
GRAFANA = ROOT / "deploy" / "grafana"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "duanka.yml"
DASHBOARD = GRAFANA / "dashboards" / "duanka.json"

GRAFANA_IMAGE = re.compile(r"^grafana/grafana-oss:\d+\.\d+\.\d+$")
METRIC_NAME = re.compile(r"\bduanka_[a-z_]+")
# the sample names each kind of metric family shows Prometheus
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
}

KAFKA_IMAGE = re.compile(r"^apache/kafka:\$\{KAFKA_VERSION:-(?P<version>[^}]+)\}$")
# `${NAME:-default}` as written in the compose file.
DEFAULTED = re.compile(r"^\$\{(?P<name>\w+):-(?P<default>[^}]*)\}$")


def load_yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{path.name}: not a YAML mapping"
    return data


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE)


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    services: dict[str, Any] = compose["services"]
    return services


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return load_yaml(CONFIG)


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as strings, whether written as a map or a list."""
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def config_topic_names(config: dict[str, Any]) -> set[str]:
    return {name for name in config["topics"].values() if isinstance(name, str)}


def listeners(value: str) -> dict[str, str]:
    """`NAME://host:port,...` as {NAME: "host:port"}."""
    pairs = (item.split("://", 1) for item in value.split(","))
    return {name: address for name, address in pairs}


def pinned_kafka_version() -> str:
    """The Kafka version the project pins: stream.broker.KAFKA_VERSION, else
    the <kafka.version> property of stream/kafka/pom.xml."""
    try:
        broker = importlib.import_module("stream.broker")
    except ModuleNotFoundError as exc:
        if exc.name != "stream.broker":
            raise
    else:
        if hasattr(broker, "KAFKA_VERSION"):
            return str(broker.KAFKA_VERSION)
    if POM.exists():
        for element in ET.parse(POM).getroot().iter():
            if element.tag.rsplit("}", 1)[-1] == "kafka.version" and element.text:
                return element.text.strip()
    pytest.fail(
        "no pinned Kafka version: expected stream.broker.KAFKA_VERSION or a "
        "<kafka.version> property in stream/kafka/pom.xml"
    )


def topic_commands(services: dict[str, Any]) -> list[str]:
    """The kafka-topics.sh invocations of the `topics` service's script."""
    command = services["topics"]["command"]
    script = "\n".join(command) if isinstance(command, list) else command
    return [line.strip() for line in script.splitlines() if "kafka-topics.sh" in line]


def created_topics(services: dict[str, Any]) -> dict[str, str]:
    """{topic: its create command} for every `--create` in the topics script."""
    created = {}
    for line in topic_commands(services):
        if "--create" in line:
            match = re.search(r"--topic\s+(\S+)", line)
            assert match, f"create without --topic: {line}"
            assert match.group(1) not in created, f"{match.group(1)} created twice"
            created[match.group(1)] = line
    return created


def run_compose_config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.fail(
            "docker-compose is not installed; `make tools` installs it "
            "(Debian package docker-compose)"
        )
    return subprocess.run(
        [exe, "-f", str(COMPOSE), "config", "-q"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_five_services_exist_and_no_more(services: dict[str, Any]) -> None:
    assert set(services) == {"kafka", "topics", "worker", "prometheus", "grafana"}


def test_kafka_image_default_is_the_pinned_version(services: dict[str, Any]) -> None:
    version = pinned_kafka_version()
    for name in ("kafka", "topics"):
        match = KAFKA_IMAGE.match(services[name]["image"])
        assert match, f"{name}: image must be apache/kafka:${{KAFKA_VERSION:-<version>}}"
        assert match.group("version") == version, name


def test_kafka_runs_kraft_combined_with_topic_auto_creation_off(
    services: dict[str, Any],
) -> None:
    kafka = services["kafka"]
    env = environment(kafka)
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    # The single voter is this node, on its controller listener's port.
    controller = listeners(env["KAFKA_LISTENERS"])[env["KAFKA_CONTROLLER_LISTENER_NAMES"]]
    controller_port = controller.rsplit(":", 1)[1]
    assert (
        env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:{controller_port}"
    )
    # The image needs a cluster id to format its storage: 16 bytes, base64url.
    cluster_id = DEFAULTED.match(env["CLUSTER_ID"])
    assert cluster_id, "CLUSTER_ID must be ${VAR:-default}"
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", cluster_id.group("default"))
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    for key in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
    ):
        assert env[key] == "1", key
    # Every listener, advertised or not, has a security protocol.
    protocol_map = env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    mapped = {item.split(":", 1)[0] for item in protocol_map}
    assert set(listeners(env["KAFKA_LISTENERS"])) <= mapped
    assert set(listeners(env["KAFKA_ADVERTISED_LISTENERS"])) <= set(
        listeners(env["KAFKA_LISTENERS"])
    )


def test_kafka_data_lives_on_a_named_volume(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]
    log_dir = environment(kafka)["KAFKA_LOG_DIRS"]
    sources = {target: source for source, target, *_ in (v.split(":") for v in kafka["volumes"])}
    assert sources[log_dir] in compose["volumes"]


def test_kafka_healthcheck_asks_the_broker(services: dict[str, Any]) -> None:
    test = services["kafka"]["healthcheck"]["test"]
    assert test[0] == "CMD"
    assert test[1:] == [
        "/opt/kafka/bin/kafka-broker-api-versions.sh",
        "--bootstrap-server",
        "localhost:9092",
    ]


def test_worker_bootstrap_is_kafkas_advertised_inter_broker_listener(
    services: dict[str, Any],
) -> None:
    kafka = environment(services["kafka"])
    advertised = listeners(kafka["KAFKA_ADVERTISED_LISTENERS"])
    internal = advertised[kafka["KAFKA_INTER_BROKER_LISTENER_NAME"]]
    assert internal == "kafka:9092"
    assert environment(services["worker"])["DUANKA_BOOTSTRAP"] == internal
    # The healthcheck's port is that listener's port.
    assert services["kafka"]["healthcheck"]["test"][-1] == "localhost:" + internal.split(":")[1]


def test_topics_creates_exactly_the_configured_topics(
    services: dict[str, Any], config: dict[str, Any]
) -> None:
    created = created_topics(services)
    assert set(created) == config_topic_names(config)
    kafka = environment(services["kafka"])
    internal = listeners(kafka["KAFKA_ADVERTISED_LISTENERS"])[
        kafka["KAFKA_INTER_BROKER_LISTENER_NAME"]
    ]
    for topic, line in created.items():
        assert "--if-not-exists" in line, topic
        assert f"--bootstrap-server {internal}" in line, topic
        # the cases are one partition: an alert may link to any other (stream/topics.py)
        partitions = "1" if topic == config["topics"]["case_links"] else '"$$PARTITIONS"'
        assert f"--partitions {partitions}" in line, topic
        assert '--replication-factor "$$REPLICATION_FACTOR"' in line, topic


def test_topics_compacts_the_lists_snapshots_verdicts_cases_and_traces_and_nothing_else(
    services: dict[str, Any], config: dict[str, Any]
) -> None:
    created = created_topics(services)
    compacted = {topic for topic, line in created.items() if "cleanup.policy=compact" in line}
    names = ("watchlist", "holdings", "dispositions", "cases", "traces")
    assert compacted == {config["topics"][name] for name in names}


def test_topic_partitions_default_to_the_config(
    services: dict[str, Any], config: dict[str, Any]
) -> None:
    env = environment(services["topics"])
    partitions = DEFAULTED.match(env["PARTITIONS"])
    replication = DEFAULTED.match(env["REPLICATION_FACTOR"])
    assert partitions and partitions.group("name") == "DUANKA_PARTITIONS"
    assert int(partitions.group("default")) == config["topics"]["partitions"]
    assert replication and replication.group("name") == "DUANKA_REPLICATION_FACTOR"
    assert int(replication.group("default")) == config["topics"]["replication_factor"]


def test_topics_waits_for_a_healthy_broker(services: dict[str, Any]) -> None:
    assert services["topics"]["depends_on"] == {"kafka": {"condition": "service_healthy"}}


def test_worker_starts_after_the_topics_exist(services: dict[str, Any]) -> None:
    depends = services["worker"]["depends_on"]
    assert depends["topics"] == {"condition": "service_completed_successfully"}


def test_worker_environment_state_and_config(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    env = environment(worker)
    assert env["DUANKA_PSEUDONYM_KEY"] == (
        "${DUANKA_PSEUDONYM_KEY:?set DUANKA_PSEUDONYM_KEY to a secret}"
    )
    assert env["DUANKA_WEB_HOST"] == "0.0.0.0"
    mounts = {volume.split(":")[1]: volume for volume in worker["volumes"]}
    state = mounts[env["DUANKA_DATA_DIR"]]
    assert state.split(":")[0] in compose["volumes"]
    assert mounts[env["DUANKA_CONFIG"]] == f"./config.yaml:{env['DUANKA_CONFIG']}:ro"
    assert worker["build"]["context"] == "."
    assert (ROOT / worker["build"].get("dockerfile", "Dockerfile")).is_file()


def test_worker_publishes_only_its_web_port_on_loopback(services: dict[str, Any]) -> None:
    port = environment(services["worker"])["DUANKA_WEB_PORT"]
    assert services["worker"]["ports"] == [f"127.0.0.1:{port}:{port}"]


def test_prometheus_scrapes_the_worker_metrics(services: dict[str, Any]) -> None:
    prometheus = services["prometheus"]
    assert prometheus["image"].startswith("prom/prometheus:v")
    assert any(
        volume.startswith("./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml")
        for volume in prometheus["volumes"]
    )
    port = environment(services["worker"])["DUANKA_WEB_PORT"]
    scrape = load_yaml(PROMETHEUS)["scrape_configs"]
    targets = {
        (job.get("metrics_path", "/metrics"), target)
        for job in scrape
        for group in job["static_configs"]
        for target in group["targets"]
    }
    assert ("/metrics", f"worker:{port}") in targets


def test_every_published_port_is_bound_to_loopback(services: dict[str, Any]) -> None:
    published = 0
    for name, service in services.items():
        for port in service.get("ports", []):
            published += 1
            if isinstance(port, dict):
                assert port.get("host_ip") == "127.0.0.1", (name, port)
            else:
                assert str(port).startswith("127.0.0.1:"), (name, port)
    assert published >= 3  # the worker's web port, Prometheus and Grafana at least


def test_docker_compose_accepts_the_file() -> None:
    env = {**os.environ, "DUANKA_PSEUDONYM_KEY": "test-only-not-a-secret"}
    result = run_compose_config(env)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("value", [None, ""], ids=["unset", "empty"])
def test_docker_compose_rejects_a_missing_pseudonym_key(value: str | None) -> None:
    env = {key: val for key, val in os.environ.items() if key != "DUANKA_PSEUDONYM_KEY"}
    if value is not None:
        env["DUANKA_PSEUDONYM_KEY"] = value
    result = run_compose_config(env)
    assert result.returncode != 0
    assert "set DUANKA_PSEUDONYM_KEY to a secret" in result.stderr


# ---------------------------------------------------------------- Grafana


def mounts(service: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """{container path: (host path, mode)} of a service's volumes."""
    found = {}
    for volume in service["volumes"]:
        source, target, *mode = volume.split(":")
        found[target] = (source, mode[0] if mode else "rw")
    return found


def datasource() -> dict[str, Any]:
    sources = load_yaml(DATASOURCES)["datasources"]
    assert len(sources) == 1
    source: dict[str, Any] = sources[0]
    return source


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, including those inside collapsed rows."""
    found = []
    for panel in board["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def exported_samples() -> set[str]:
    """Every sample name a worker's /metrics can show."""
    return {
        family.name + suffix
        for family in WorkerMetrics().registry.collect()
        for suffix in SUFFIXES[family.type]
    }


def test_grafana_is_pinned_and_published_on_loopback(services: dict[str, Any]) -> None:
    grafana = services["grafana"]
    assert GRAFANA_IMAGE.match(grafana["image"]), grafana["image"]
    assert grafana["ports"] == ["127.0.0.1:3000:3000"]
    assert "prometheus" in grafana["depends_on"]


def test_grafana_mounts_its_provisioning_read_only(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    found = mounts(grafana)
    assert found["/etc/grafana/provisioning"] == ("./deploy/grafana/provisioning", "ro")
    providers = load_yaml(DASHBOARD_PROVIDERS)["providers"]
    assert [p["type"] for p in providers] == ["file"]
    path = providers[0]["options"]["path"]
    assert found[path] == ("./deploy/grafana/dashboards", "ro")
    assert (ROOT / found[path][0] / DASHBOARD.name).is_file()
    home = environment(grafana)["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{path}/{DASHBOARD.name}"
    assert found["/var/lib/grafana"][0] in compose["volumes"]


def test_grafana_lets_viewers_in_and_takes_the_admin_password_from_the_environment(
    services: dict[str, Any],
) -> None:
    env = environment(services["grafana"])
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"  # never Editor or Admin
    password = DEFAULTED.match(env["GF_SECURITY_ADMIN_PASSWORD"])
    assert password and password.group("name") == "GRAFANA_ADMIN_PASSWORD"
    assert env["GF_USERS_ALLOW_SIGN_UP"] == "false"
    assert env["GF_ANALYTICS_REPORTING_ENABLED"] == "false"


def test_grafana_reads_the_stacks_prometheus(services: dict[str, Any]) -> None:
    source = datasource()
    assert source["type"] == "prometheus"
    assert source["access"] == "proxy"  # Grafana's server asks, on the compose network
    container_ports = {port.rsplit(":", 1)[1] for port in services["prometheus"]["ports"]}
    assert source["url"] in {f"http://prometheus:{port}" for port in container_ports}
    scrape = load_yaml(PROMETHEUS)["global"]["scrape_interval"]
    assert source["jsonData"]["timeInterval"] == scrape


def test_the_dashboard_is_a_grafana_dashboard() -> None:
    board = dashboard()
    assert 36 <= board["schemaVersion"] <= 41
    assert board["uid"] and board["title"]
    ids = [panel["id"] for panel in panels(board)]
    assert len(ids) == len(set(ids)) >= 7
    for panel in panels(board):
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        for target in panel.get("targets", []):
            expr = target["expr"]
            assert expr.count("(") == expr.count(")"), expr
            assert expr.count("{") == expr.count("}"), expr


def test_the_dashboard_uses_the_provisioned_datasource() -> None:
    uid = datasource()["uid"]
    board = dashboard()
    for panel in panels(board):
        assert panel["datasource"] == {"type": "prometheus", "uid": uid}, panel["title"]
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == uid, panel["title"]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            assert variable["datasource"]["uid"] == uid


def test_the_dashboard_asks_only_for_metrics_the_worker_exports() -> None:
    board = dashboard()
    exprs = [t["expr"] for p in panels(board) for t in p.get("targets", [])]
    exprs += [v["definition"] for v in board["templating"]["list"] if v["type"] == "query"]
    used = {name for expr in exprs for name in METRIC_NAME.findall(expr)}
    assert used <= exported_samples(), used - exported_samples()
    # the panels an operator needs first
    for name in (
        "duanka_events_total",
        "duanka_rejected_total",
        "duanka_alerts_total",
        "duanka_alert_latency_seconds_bucket",
        "duanka_consumer_lag",
        "duanka_state_keys",
        "duanka_events_held",
    ):
        assert name in used, name
    quantiles = [e for e in exprs if "histogram_quantile" in e]
    assert any(e.startswith("histogram_quantile(0.5,") for e in quantiles)
    assert any(e.startswith("histogram_quantile(0.99,") for e in quantiles)

"""docker-compose.yml, docker/Dockerfile and docker/nginx.conf agree with each other and with
the service (no Docker engine runs here). tests/data/compose-spec.json is the Compose
Specification's schema (github.com/compose-spec/compose-spec, schema/compose-spec.json at
commit 170098ba, Apache-2.0)."""

import json
import re
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from service.settings import Settings
from tests.nginx import (
    GRPC_UPSTREAM,
    NGINX_CONF,
    directive_values,
    size_in_bytes,
    upstream_servers,
)

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
API_PORT = 8000
GRPC_PORT = Settings.model_fields["grpc_port"].default


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


@pytest.fixture(scope="module")
def api_services(compose) -> dict[str, dict[str, Any]]:
    """The services built from docker/Dockerfile: the API replicas."""
    return {
        name: service
        for name, service in compose["services"].items()
        if service.get("build", {}).get("dockerfile") == "docker/Dockerfile"
    }


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [tuple(line.split(None, 1)) for line in lines if line and line[0] != "#"]  # type: ignore[misc]


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    """The final stage: what the running image is."""
    instructions = dockerfile_instructions()
    last_from = max(i for i, (op, _) in enumerate(instructions) if op == "FROM")
    return instructions[last_from:]


def exec_form(arguments: str) -> list[str]:
    value: list[str] = json.loads(arguments)
    return value


def test_compose_file_follows_the_compose_specification(compose):
    schema = json.loads((ROOT / "tests" / "data" / "compose-spec.json").read_text())
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in jsonschema.Draft7Validator(schema).iter_errors(compose)
    ]
    assert not errors, errors


def test_redis_keeps_an_append_only_file_on_a_named_volume(compose):
    redis = compose["services"]["redis"]
    assert redis["image"].split(":")[0] == "redis" and redis["image"].split(":")[1][0] == "7"
    command = redis["command"]
    args = command if isinstance(command, list) else shlex.split(command)
    flags = dict(zip(args[1::2], args[2::2], strict=False))
    assert flags["--appendonly"] == "yes"
    assert flags["--appendfsync"] == "everysec"
    volume, target = redis["volumes"][0].split(":")[:2]
    assert target == "/data"  # the redis image's working directory, where the AOF goes
    assert volume in compose["volumes"], "a named volume, declared at the top level"
    assert redis["healthcheck"]["test"][1:] == ["redis-cli", "ping"]


def test_redis_memory_is_bounded_and_never_evicts_a_session(compose):
    # Eviction would drop live sessions silently; noeviction refuses writes instead (503,
    # nothing lost: tests/integration/test_redis_failures.py).
    command = compose["services"]["redis"]["command"]
    args = command if isinstance(command, list) else shlex.split(command)
    flags = dict(zip(args[1::2], args[2::2], strict=False))
    assert with_defaults(flags["--maxmemory"]) == "1gb"
    assert flags["--maxmemory-policy"] == "noeviction"


def test_api_replicas_wait_for_redis_and_report_readiness(compose, api_services):
    assert len(api_services) >= 2
    for name, api in api_services.items():
        assert api["depends_on"]["redis"]["condition"] == "service_healthy", name
        check = " ".join(api["healthcheck"]["test"])
        assert f"127.0.0.1:{API_PORT}/readyz" in check, name
        assert "ports" not in api, f"{name}: only the load balancer publishes a port"
        assert api["environment"]["LSTM_REDIS_URL"].startswith("redis://redis:6379/"), name


def test_api_environment_names_only_real_settings(api_services):
    settings = {f"LSTM_{field.upper()}" for field in Settings.model_fields}
    for name, api in api_services.items():
        unknown = set(api["environment"]) - settings
        assert not unknown, f"{name}: not settings (typo?): {unknown}"


def with_defaults(value: str) -> str:
    """`value` as compose interpolates it with no variable set: `${NAME:-default}` -> default."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def test_load_balancer_publishes_8000_after_every_replica_is_healthy(compose, api_services):
    lb = compose["services"]["lb"]
    assert [with_defaults(port).split(":", 1)[1] for port in lb["ports"]] == [
        f"{API_PORT}:{API_PORT}",
        f"{GRPC_PORT}:{GRPC_PORT}",
    ]
    assert {name: dep["condition"] for name, dep in lb["depends_on"].items()} == {
        name: "service_healthy" for name in api_services
    }
    mounts = [volume.split(":") for volume in lb["volumes"]]
    assert ["./docker/nginx.conf", "/etc/nginx/nginx.conf", "ro"] in mounts


def test_by_default_only_this_machine_reaches_the_service(compose, api_services):
    # API keys are off unless LSTM_API_KEYS is set: an open service must not face the network.
    assert all(
        api["environment"]["LSTM_API_KEYS"] == "${LSTM_API_KEYS:-}" for api in api_services.values()
    )
    published = [with_defaults(port) for port in compose["services"]["lb"]["ports"]]
    assert published == ["127.0.0.1:8000:8000", "127.0.0.1:8001:8001"]


def test_nginx_upstreams_are_the_compose_api_services(api_services):
    servers = upstream_servers(NGINX_CONF.read_text())
    assert sorted(host for host, _ in servers) == sorted(api_services)
    assert {port for _, port in servers} == {API_PORT}


def test_nginx_grpc_upstreams_are_the_compose_api_services_grpc_ports(api_services):
    servers = upstream_servers(NGINX_CONF.read_text(), GRPC_UPSTREAM)
    assert sorted(host for host, _ in servers) == sorted(api_services)
    assert {port for _, port in servers} == {GRPC_PORT}
    assert all(str(GRPC_PORT) in api["expose"] for api in api_services.values())


def test_nginx_listens_where_compose_publishes():
    listens = directive_values(NGINX_CONF.read_text(), "listen")
    assert listens == [str(API_PORT), f"{GRPC_PORT} http2"]


def test_nginx_body_limit_is_the_service_limit(api_services):
    text = NGINX_CONF.read_text()
    default = Settings().max_body_bytes
    # The HTTP server's; the gRPC server's (0) leaves each message to the service.
    nginx_limit, grpc_limit = directive_values(text, "client_max_body_size")
    assert grpc_limit == "0"
    assert size_in_bytes(nginx_limit) == default
    assert f'"max_bytes": {default}' in text  # nginx's own 413 body
    for api in api_services.values():
        assert int(api["environment"].get("LSTM_MAX_BODY_BYTES", default)) == default


def test_nginx_never_resends_a_post_and_passes_request_ids():
    text = NGINX_CONF.read_text()
    (retry_on,) = directive_values(text, "proxy_next_upstream")
    assert "non_idempotent" not in retry_on.split()
    assert "X-Request-ID $lstm_request_id" in directive_values(text, "proxy_set_header")
    assert "X-Request-ID $lstm_request_id always" in directive_values(text, "add_header")


def test_image_runs_lstm_serve_as_a_non_root_user(dockerfile):
    ops = [op for op, _ in dockerfile]
    # Users get the official image; only scripts/test-containers passes another.
    (base_arg,) = [args for op, args in dockerfile_instructions() if op == "ARG"]
    name, _, default = base_arg.partition("=")
    assert dockerfile[0][1] == f"${{{name}}}"
    assert default.startswith("python:3.11") and "slim" in default
    users = [args for op, args in dockerfile if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert ops.index("USER") < ops.index("ENTRYPOINT")
    (entrypoint,) = [exec_form(args) for op, args in dockerfile if op == "ENTRYPOINT"]
    (cmd,) = [exec_form(args) for op, args in dockerfile if op == "CMD"]
    assert entrypoint + cmd == ["lstm-serve", "--host", "0.0.0.0", "--port", str(API_PORT)]


def test_image_health_check_asks_healthz_with_python(dockerfile):
    (check,) = [args for op, args in dockerfile if op == "HEALTHCHECK"]
    assert "--start-period=" in check  # model loading happens before the first answer
    command = exec_form(check[check.index("CMD") + 3 :].strip())
    assert command[:2] == ["python", "-c"]
    assert f"http://127.0.0.1:{API_PORT}/healthz" in command[2]


def test_image_installs_the_package_and_serves_models_from_a_mountable_dir(dockerfile):
    runs = [args for op, args in dockerfile_instructions() if op == "RUN"]
    assert any(re.search(r"pip install (--no-deps )?\.(\s|$)", run) for run in runs)
    env = " ".join(args for op, args in dockerfile if op == "ENV")
    assert "LSTM_MODEL_DIR=/models" in env
    assert ("COPY", "service/demo_models/ /models/") in dockerfile


def dockerignored(path: str, rules: list[str]) -> bool:
    """Docker's .dockerignore rules: last match wins, a rule also matches a path's parents."""
    ignored = False
    parts = path.split("/")
    for rule in rules:
        negate = rule.startswith("!")
        pattern = rule.lstrip("!").strip("/")
        regex = re.escape(pattern).replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(re.fullmatch(regex, prefix) for prefix in prefixes):
            ignored = not negate
    return ignored


def test_dockerignore_sends_the_package_and_nothing_else():
    rules = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    needed = [
        "pyproject.toml",
        "README.md",
        "service/main.py",
        "service/demo_models/seed-lstm.keras",
    ]
    assert not [path for path in needed if dockerignored(path, rules)]
    left_out = [".git/HEAD", "tests/conftest.py", "bench/run.py", "service/__pycache__/main.pyc"]
    assert all(dockerignored(path, rules) for path in left_out)

"""deploy/kubernetes: every manifest is valid against the Kubernetes API schemas
(kubernetes-validate, which ships them; strict: no unknown fields), and the objects agree
with each other, with docker/Dockerfile and with the service's settings."""

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "deploy" / "kubernetes"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
# The oldest Kubernetes docs/deployment.md names, and the newest the validator knows.
VERSIONS = ["1.27.0", kubernetes_validate.latest_version()]
LABELS = {"app.kubernetes.io/name": "lstm-stream", "app.kubernetes.io/part-of": "lstm-stream"}


def kustomization() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    return loaded


def resources() -> list[dict[str, Any]]:
    return [
        document
        for name in kustomization()["resources"]
        for document in yaml.safe_load_all((MANIFESTS / name).read_text())
        if document
    ]


def one(kind: str, name: str) -> dict[str, Any]:
    (found,) = [r for r in resources() if r["kind"] == kind and r["metadata"]["name"] == name]
    return found


def container(workload: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [c for c in workload["spec"]["template"]["spec"]["containers"] if c["name"] == name]
    return found


def test_kustomization_lists_every_manifest():
    files = {path.name for path in MANIFESTS.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization()["resources"]) == sorted(files)


@pytest.mark.parametrize("version", VERSIONS)
def test_manifests_follow_the_kubernetes_api_schemas(version):
    errors = []
    for resource in resources():
        try:
            kubernetes_validate.validate(resource, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            errors.append(f"{resource['kind']}/{resource['metadata']['name']}: {error.message}")
    assert not errors, errors


def test_the_deployment_probes_readiness_and_liveness_on_the_served_port():
    api = container(one("Deployment", "lstm-stream"), "api")
    ports = {port["name"]: port["containerPort"] for port in api["ports"]}
    expose = re.search(r"^EXPOSE (\d+)$", DOCKERFILE.read_text(), re.MULTILINE)
    assert expose and ports["http"] == int(expose.group(1))
    assert ports["grpc"] == Settings.model_fields["grpc_port"].default
    service_ports = {
        p["name"]: p["targetPort"] for p in one("Service", "lstm-stream")["spec"]["ports"]
    }
    assert service_ports == {"http": "http", "grpc": "grpc"}
    assert api["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert api["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    # Liveness must not depend on Redis: an outage would restart every pod at once.
    assert api["startupProbe"]["httpGet"]["path"] == "/healthz"


def test_the_pods_run_as_the_images_non_root_user():
    pod = one("Deployment", "lstm-stream")["spec"]["template"]["spec"]
    user = re.search(r"^USER (\d+):(\d+)$", DOCKERFILE.read_text(), re.MULTILINE)
    assert user
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert str(pod["securityContext"]["runAsUser"]) == user.group(1)
    assert container(one("Deployment", "lstm-stream"), "api")["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


def test_the_environment_names_only_real_settings_and_points_at_the_redis_service():
    api = container(one("Deployment", "lstm-stream"), "api")
    env = {variable["name"]: variable.get("value") for variable in api["env"]}
    settings = {f"LSTM_{field.upper()}" for field in Settings.model_fields}
    assert set(env) <= settings
    redis = one("Service", "redis")
    (port,) = redis["spec"]["ports"]
    assert env["LSTM_REDIS_URL"].startswith(f"redis://{redis['metadata']['name']}:{port['port']}/")


def test_service_budget_and_autoscaler_select_the_deployments_pods():
    deployment = one("Deployment", "lstm-stream")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"] == LABELS
    assert LABELS.items() <= pod_labels.items()
    assert one("Service", "lstm-stream")["spec"]["selector"] == LABELS
    budget = one("PodDisruptionBudget", "lstm-stream")["spec"]
    assert budget["selector"]["matchLabels"] == LABELS
    autoscaler = one("HorizontalPodAutoscaler", "lstm-stream")["spec"]
    assert autoscaler["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "lstm-stream",
    }
    # A drain must always be possible: the budget lets at least one pod go at the minimum.
    assert budget["maxUnavailable"] >= 1 and autoscaler["minReplicas"] >= 2
    # The autoscaler owns the count; a `replicas` here would reset it on every apply.
    assert "replicas" not in deployment["spec"]


def test_redis_keeps_an_append_only_file_on_a_persistent_volume():
    redis = one("StatefulSet", "redis")
    server = container(redis, "redis")
    args = server["args"]
    flags = dict(zip(args[1::2], args[2::2], strict=False))
    assert args[0] == "redis-server"
    assert flags["--appendonly"] == "yes" and flags["--appendfsync"] == "everysec"
    (mount,) = server["volumeMounts"]
    assert mount["mountPath"] == "/data"  # the redis image's working directory
    claims = {claim["metadata"]["name"] for claim in redis["spec"]["volumeClaimTemplates"]}
    assert mount["name"] in claims
    service = one("Service", "redis")
    assert redis["spec"]["serviceName"] == service["metadata"]["name"]
    assert service["spec"]["selector"] == redis["spec"]["selector"]["matchLabels"]

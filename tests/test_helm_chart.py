"""The Helm chart (charts/tradebot), rendered by real helm and validated against Kubernetes' schemas.

No cluster runs here: these tests check what helm renders, not what a cluster does with it.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.helm import CHART, helm_or_skip, render_chart, run_helm
from tradebot import healthcheck
from tradebot.common.config import Settings
from tradebot.roles import DEFAULT_UP, ROLES

ROOT = Path(__file__).resolve().parent.parent
SCALED_VALUES = CHART / "ci" / "scaled-values.yaml"
# A default install runs what `tradebot up` runs.
DEPLOYED_ROLES = set(DEFAULT_UP)
SECRET_NAMES = {
    "ALPACA_KEY",
    "ALPACA_SECRET",
    "POLYGON_API_KEY",
    "API_TOKEN",
    "WEBHOOK_SECRET",
    "ALERT_TELEGRAM_TOKEN",
    "ALERT_DISCORD_WEBHOOK_URL",
    "ALERT_SLACK_WEBHOOK_URL",
    "ALERT_SMTP_PASSWORD",
    "REDIS_URL",
    "DATABASE_URL",
    "DATABASE_READ_URL",
}
TOKEN = "test-token-never-inlined"
REQUIRED = ["--set", "redis.url=redis://redis:6379/0", "--set", "database.url=postgresql://tsdb:5432/tradebot"]
DEFAULT_INSTALL = [*REQUIRED, "--set-string", f"secrets.values.API_TOKEN={TOKEN}"]
SCENARIOS = {
    "default": DEFAULT_INSTALL,
    "scaled": ["-f", str(SCALED_VALUES)],
    "existing-secret": ["--set", "secrets.existingSecret=tradebot-keys"],
}
# The schema helm's Kubernetes client speaks, and the newest kubernetes-validate knows.
KUBERNETES_VERSIONS = ["1.35.0", kubernetes_validate.latest_version()]
HEALTHCHECK = ["python", "-m", "tradebot.healthcheck"]

Manifests = list[dict[str, Any]]


@pytest.fixture(scope="session")
def helm() -> Path:
    return helm_or_skip()


@pytest.fixture(scope="session")
def render(helm: Path) -> Callable[..., Manifests]:
    cache: dict[tuple[str, ...], Manifests] = {}

    def rendered(*args: str) -> Manifests:
        if args not in cache:
            cache[args] = render_chart(helm, *args)
        return cache[args]

    return rendered


def of_kind(manifests: Manifests, kind: str) -> Manifests:
    return [m for m in manifests if m["kind"] == kind]


def deployments(manifests: Manifests) -> dict[str, dict[str, Any]]:
    """Deployments by the role they run (their component label, with '-' back to '_')."""
    return {
        m["metadata"]["labels"]["app.kubernetes.io/component"].replace("-", "_"): m
        for m in of_kind(manifests, "Deployment")
    }


def container(manifest: dict[str, Any]) -> dict[str, Any]:
    (only,) = manifest["spec"]["template"]["spec"]["containers"]
    return only


def pod_specs(manifests: Manifests) -> list[dict[str, Any]]:
    return [m["spec"]["template"]["spec"] for m in manifests if m["kind"] in ("Deployment", "Job")]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_rendered_manifest_is_valid_kubernetes(
    render: Callable[..., Manifests], scenario: str, version: str
) -> None:
    manifests = render(*SCENARIOS[scenario])
    assert manifests
    for manifest in manifests:
        kubernetes_validate.validate(manifest, version, strict=True)  # raises, naming the bad field


def test_helm_lint_passes_with_default_and_scaled_values(helm: Path) -> None:
    for args in (DEFAULT_INSTALL, SCENARIOS["scaled"]):
        result = run_helm(helm, "lint", "--strict", str(CHART), *args)
        assert result.returncode == 0, result.stdout + result.stderr


def test_every_role_has_a_deployment_running_it(render: Callable[..., Manifests]) -> None:
    found = deployments(render(*DEFAULT_INSTALL))
    assert set(found) == DEPLOYED_ROLES
    for role, manifest in found.items():
        assert container(manifest)["command"] == ["tradebot", "worker", role]
        assert role in ROLES


def test_replicas_and_resources_come_from_values(render: Callable[..., Manifests]) -> None:
    scaled = deployments(render(*SCENARIOS["scaled"]))
    assert {role: m["spec"]["replicas"] for role, m in scaled.items()} == {
        "market_data": 1,
        "strategy": 4,
        "execution": 2,
        "storage": 3,
        "api": 2,
        "alerts": 1,
    }
    assert container(scaled["strategy"])["resources"] == {
        "requests": {"cpu": "500m", "memory": "256Mi"},
        "limits": {"memory": "1Gi"},
    }
    assert container(scaled["storage"])["resources"]["requests"] == {"cpu": "100m", "memory": "192Mi"}


def test_probes_run_the_image_health_check(render: Callable[..., Manifests]) -> None:
    assert importlib.util.find_spec("tradebot.healthcheck") is not None
    for manifest in deployments(render(*DEFAULT_INSTALL)).values():
        spec = container(manifest)
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert spec[probe]["exec"]["command"] == HEALTHCHECK, (manifest["metadata"]["name"], probe)


def test_the_health_check_finds_the_api_on_the_port_it_listens_on(render: Callable[..., Manifests]) -> None:
    api = container(deployments(render(*DEFAULT_INSTALL))["api"])
    env = {item["name"]: item["value"] for item in api["env"]}
    assert env["API_HOST"] in healthcheck.WILDCARD_HOSTS  # so the check asks 127.0.0.1 ...
    assert int(env["API_PORT"]) == api["ports"][0]["containerPort"]  # ... on the port the API binds
    (service,) = of_kind(render(*DEFAULT_INSTALL), "Service")
    assert service["spec"]["ports"][0]["targetPort"] == api["ports"][0]["name"]
    assert (
        service["spec"]["selector"] == deployments(render(*DEFAULT_INSTALL))["api"]["spec"]["selector"]["matchLabels"]
    )


def test_scaled_roles_have_a_disruption_budget_and_single_ones_none(render: Callable[..., Manifests]) -> None:
    manifests = render(*SCENARIOS["scaled"])
    budgets = {
        tuple(sorted(p["spec"]["selector"]["matchLabels"].items())): p
        for p in of_kind(manifests, "PodDisruptionBudget")
    }
    for role, manifest in deployments(manifests).items():
        selector = tuple(sorted(manifest["spec"]["selector"]["matchLabels"].items()))
        assert (selector in budgets) == (manifest["spec"]["replicas"] > 1), role
    assert {p["spec"]["maxUnavailable"] for p in budgets.values()} == {1}
    assert of_kind(render(*DEFAULT_INSTALL), "PodDisruptionBudget") == []


def test_secrets_are_only_referenced_never_inlined(render: Callable[..., Manifests]) -> None:
    for scenario in SCENARIOS.values():
        manifests = render(*scenario)
        secret_name = "tradebot-keys" if "secrets.existingSecret=tradebot-keys" in scenario else "prod-tradebot-secrets"
        for spec in pod_specs(manifests):
            for item in container({"spec": {"template": {"spec": spec}}}).get("env", []):
                assert item["name"] not in SECRET_NAMES, item
            refs = container({"spec": {"template": {"spec": spec}}})["envFrom"]
            assert {"secretRef": {"name": secret_name}} in refs
        for config in of_kind(manifests, "ConfigMap"):
            assert not SECRET_NAMES & set(config["data"])
        outside_secrets = yaml.safe_dump_all([m for m in manifests if m["kind"] != "Secret"])
        assert TOKEN not in outside_secrets
        assert "placeholder" not in outside_secrets  # the scaled file's URLs and tokens


def test_the_chart_gives_no_secret_a_default() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["secrets"] == {"existingSecret": "", "values": {}}
    assert (values["redis"]["url"], values["database"]["url"], values["database"]["readUrl"]) == ("", "", "")


def test_missing_keys_fail_the_render_naming_what_to_set(helm: Path) -> None:
    for args, named in (
        (["--set-string", f"secrets.values.API_TOKEN={TOKEN}"], "redis.url is required"),
        (REQUIRED, "secrets.values.API_TOKEN"),
        ([*DEFAULT_INSTALL, "--set", "config.API_TOKEN=oops"], "config.API_TOKEN is a secret"),
    ):
        result = run_helm(helm, "template", "prod", str(CHART), *args)
        assert result.returncode != 0
        assert named in result.stderr, result.stderr


def test_an_existing_secret_replaces_the_charts_own(render: Callable[..., Manifests]) -> None:
    assert of_kind(render(*SCENARIOS["existing-secret"]), "Secret") == []
    (secret,) = of_kind(render(*DEFAULT_INSTALL), "Secret")
    assert set(secret["stringData"]) == {"REDIS_URL", "DATABASE_URL", "API_TOKEN"}


def test_the_migration_job_runs_before_the_workers(render: Callable[..., Manifests]) -> None:
    manifests = render(*DEFAULT_INSTALL)
    (job,) = of_kind(manifests, "Job")

    def hook(manifest: dict[str, Any]) -> tuple[set[str], int] | None:
        notes = manifest["metadata"].get("annotations", {})
        if "helm.sh/hook" not in notes:
            return None
        return set(notes["helm.sh/hook"].split(",")), int(notes.get("helm.sh/hook-weight", "0"))

    job_hook = hook(job)
    assert job_hook is not None
    assert job_hook[0] == {"pre-install", "pre-upgrade"}  # helm creates the release's resources after it succeeded
    assert container(job)["command"] == ["tradebot", "migrate"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    for manifest in of_kind(manifests, "Deployment"):
        assert hook(manifest) is None  # ordinary release resources: created after the pre-install hooks
    for needed in [*of_kind(manifests, "ConfigMap"), *of_kind(manifests, "Secret")]:
        needed_hook = hook(needed)
        assert needed_hook is not None  # the Job reads them, so they exist before it
        assert needed_hook[0] == job_hook[0]
        assert needed_hook[1] < job_hook[1]


def test_pods_run_as_the_images_non_root_user(render: Callable[..., Manifests]) -> None:
    user = re.search(r"^USER (\d+):(\d+)$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert user is not None
    for spec in pod_specs(render(*SCENARIOS["scaled"])):
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert (spec["securityContext"]["runAsUser"], spec["securityContext"]["runAsGroup"]) == tuple(
            map(int, user.groups())
        )
        security = spec["containers"][0]["securityContext"]
        assert security["allowPrivilegeEscalation"] is False
        assert security["readOnlyRootFilesystem"] is True
        assert security["capabilities"] == {"drop": ["ALL"]}


def test_singleton_roles_refuse_a_second_replica(helm: Path, render: Callable[..., Manifests]) -> None:
    result = run_helm(helm, "template", "prod", str(CHART), *DEFAULT_INSTALL, "--set", "roles.market_data.replicas=2")
    assert result.returncode != 0
    assert "roles.market_data.replicas must be 1" in result.stderr
    assert deployments(render(*DEFAULT_INSTALL))["market_data"]["spec"]["strategy"] == {"type": "Recreate"}


def test_cluster_redis_and_read_replica_reach_the_settings(render: Callable[..., Manifests]) -> None:
    manifests = render(*SCENARIOS["scaled"])
    (config,) = of_kind(manifests, "ConfigMap")
    (secret,) = of_kind(manifests, "Secret")
    assert config["data"]["REDIS_CLUSTER"] == "true"
    assert config["data"]["REDIS_MIN_REPLICAS"] == "1"
    assert secret["stringData"]["DATABASE_READ_URL"].startswith("postgresql://")
    assert not {"REDIS_CLUSTER", "REDIS_MIN_REPLICAS"} & set(of_kind(render(*DEFAULT_INSTALL), "ConfigMap")[0]["data"])
    # REDIS_CLUSTER belongs to issue 15's cluster slice; every other name is a setting of Settings.
    names = (set(config["data"]) | set(secret["stringData"])) - {"REDIS_CLUSTER"}
    assert names <= {field.upper() for field in Settings.model_fields}

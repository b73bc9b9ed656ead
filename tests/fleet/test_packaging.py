"""Packaging checked offline: the Helm chart renders into valid Kubernetes manifests, compose's
commands exist in the CLI, the Dockerfile builds a non-root image with ffmpeg from the wheel.

No image is built and no cluster is used here (see docs/deploy.md for what stays unchecked).
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from typer.testing import CliRunner

from mediamill.cli.main import app
from tests.fleet.helmlite import TemplateError, render_chart

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "mediamill"
COMPOSE = ROOT / "deploy" / "compose.yaml"
SECRETS = {"secret": {"secretKey": "k" * 32, "databaseUrl": "postgresql://mm:pw@db:5432/mm"}}


# ------------------------------------------------------------------ rendering
def render(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """``helm template`` when a helm binary is installed, else the small renderer (same chart, same values)."""
    values = {**SECRETS, **(values or {})}
    helm = shutil.which("helm")
    if helm is None:
        return render_chart(CHART, release="mm", values=values)
    sets = [arg for k, v in _flatten(values).items() for arg in ("--set-json", f"{k}={json.dumps(v)}")]
    out = subprocess.run([helm, "template", "mm", str(CHART), *sets], capture_output=True, text=True, check=True)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for k, v in values.items():
        if isinstance(v, dict):
            flat.update(_flatten(v, f"{prefix}{k}."))
        else:
            flat[f"{prefix}{k}"] = v
    return flat


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


@functools.cache
def cli_options(*words: str) -> str:
    """The help text of ``mediamill <words>`` (fails the test when the command does not exist)."""
    result = CliRunner().invoke(app, [*words, "--help"], env={"COLUMNS": "300", "NO_COLOR": "1"})
    assert result.exit_code == 0, f"`mediamill {' '.join(words)} --help` failed:\n{result.output}"
    return result.output


def assert_cli_accepts(args: list[str]) -> None:
    """Every subcommand word and every --flag of ``args`` exists in the `mediamill` entry point."""
    words: list[str] = []
    for arg in args:
        if arg.startswith("-"):
            break
        words.append(arg)
    help_text = cli_options(*words)
    for flag in (a.split("=", 1)[0] for a in args if a.startswith("--")):
        assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_text), f"mediamill {' '.join(words)}: no {flag}"


# ------------------------------------------------------------------ Helm chart
def test_chart_renders_valid_kubernetes_manifests() -> None:
    docs = render()
    version = kubernetes_validate.latest_version()
    builtin = [d for d in docs if d["kind"] not in ("ScaledObject", "ServiceMonitor")]
    assert {d["kind"] for d in builtin} == {"Deployment", "Service", "PodDisruptionBudget", "Job", "Secret"}
    for doc in builtin:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{doc['kind']} {doc['metadata']['name']}: {exc.message}")
    for doc in docs:
        if doc["kind"] in CRD_SCHEMAS:
            jsonschema.validate(doc, CRD_SCHEMAS[doc["kind"]])


def test_one_worker_deployment_per_group_scaled_by_keda_on_queue_depth() -> None:
    groups = {"default": {"pools": ["*=2"], "queueRegex": ".*", "maxStepSeconds": 600, "minReplicas": 1,
                          "maxReplicas": 4, "jobsPerReplica": 4, "resources": {}},
              "video": {"pools": ["video=1", "thumbs=2"], "queueRegex": "video|thumbs", "maxStepSeconds": 7200,
                        "minReplicas": 0, "maxReplicas": 30, "jobsPerReplica": 3, "resources": {}}}
    docs = render({"workers": groups})
    deployments = by_kind(docs, "Deployment")
    scaled = by_kind(docs, "ScaledObject")
    pdbs = by_kind(docs, "PodDisruptionBudget")
    for group, spec in groups.items():
        name = f"mm-worker-{group}"
        pod = deployments[name]["spec"]["template"]["spec"]
        assert "replicas" not in deployments[name]["spec"]  # KEDA owns the replica count
        # the pod may drain its longest step before it is killed
        assert pod["terminationGracePeriodSeconds"] == spec["maxStepSeconds"] + 30
        container = pod["containers"][0]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["MEDIAMILL_SHUTDOWN_GRACE_SECONDS"] == str(spec["maxStepSeconds"])
        args = container["args"]
        assert args[:2] == ["worker", "--no-migrate"]
        assert [args[i + 1] for i, a in enumerate(args) if a == "--pool"] == spec["pools"]
        assert_cli_accepts(args)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
        assert args[args.index("--metrics-port") + 1] == str(ports["metrics"])
        assert pdbs[name]["spec"]["selector"]["matchLabels"] == deployments[name]["spec"]["selector"]["matchLabels"]
        so = scaled[name]["spec"]
        assert so["scaleTargetRef"]["name"] == name
        assert so["minReplicaCount"] == spec["minReplicas"] and so["maxReplicaCount"] == spec["maxReplicas"]
        trigger = so["triggers"][0]
        assert trigger["type"] == "prometheus" and trigger["metadata"]["threshold"] == str(spec["jobsPerReplica"])
        query = trigger["metadata"]["query"]
        assert "mediamill_queue_depth" in query and f'queue=~"{spec["queueRegex"]}"' in query
        _promql_parses(query)
    assert scaled["mm-worker-video"]["spec"]["minReplicaCount"] == 0  # scale to zero


def _promql_parses(query: str) -> None:
    rule = {"groups": [{"name": "g", "rules": [{"record": "mm:keda", "expr": query}]}]}
    path = Path(subprocess.run(["mktemp", "--suffix=.yml"], capture_output=True, text=True).stdout.strip())
    try:
        path.write_text(yaml.safe_dump(rule))
        done = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stdout + done.stderr
    finally:
        path.unlink()


def test_api_notifier_migrate_secret_and_monitoring() -> None:
    docs = render()
    deployments = by_kind(docs, "Deployment")
    api = deployments["mm-api"]["spec"]["template"]["spec"]["containers"][0]
    assert api["args"][:2] == ["api", "--no-migrate"]
    assert_cli_accepts(api["args"])
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    services = by_kind(docs, "Service")
    assert services["mm-api"]["spec"]["selector"].items() <= \
        deployments["mm-api"]["spec"]["template"]["metadata"]["labels"].items()
    assert by_kind(docs, "PodDisruptionBudget")["mm-api"]["spec"]["minAvailable"] == 1
    notifier = deployments["mm-notifier"]["spec"]["template"]["spec"]["containers"][0]
    assert_cli_accepts(notifier["args"])

    job = by_kind(docs, "Job")["mm-migrate"]
    hooks = job["metadata"]["annotations"]["helm.sh/hook"].split(",")
    assert set(hooks) == {"pre-install", "pre-upgrade"}
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["db", "upgrade"]
    assert_cli_accepts(["db", "upgrade"])

    secret = by_kind(docs, "Secret")["mm-mediamill"]
    assert "MEDIAMILL_SECRET_KEY" in secret["data"]
    # the Secret exists before the migrate hook runs, and every pod reads it
    assert int(secret["metadata"]["annotations"]["helm.sh/hook-weight"]) < \
        int(job["metadata"]["annotations"]["helm.sh/hook-weight"])
    for doc in [*deployments.values(), job]:
        pod = doc["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        refs = [e["secretRef"]["name"] for c in pod["containers"] for e in c.get("envFrom", [])]
        assert refs == ["mm-mediamill"], doc["metadata"]["name"]

    # every process is scraped: the metrics Service selects the pods of api, workers and notifier
    metrics_svc = services["mm-metrics"]
    monitor = by_kind(docs, "ServiceMonitor")["mm-mediamill"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= metrics_svc["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in metrics_svc["spec"]["ports"]}
    scraped = [n for n, d in deployments.items()
               if metrics_svc["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()]
    assert sorted(scraped) == sorted(deployments)


def test_an_existing_secret_and_a_missing_key() -> None:
    docs = render({"existingSecret": "prod-mediamill", "secret": {"secretKey": "", "databaseUrl": ""}})
    assert not by_kind(docs, "Secret")
    for d in by_kind(docs, "Deployment").values():
        assert d["spec"]["template"]["spec"]["containers"][0]["envFrom"][0]["secretRef"]["name"] == "prod-mediamill"
    with pytest.raises((TemplateError, subprocess.CalledProcessError), match=r"secretKey|exit status"):
        render({"secret": {"secretKey": "", "databaseUrl": "postgresql://x"}})


CRD_SCHEMAS: dict[str, dict[str, Any]] = {
    # the fields of KEDA's ScaledObject (keda.sh/v1alpha1) and the Prometheus operator's ServiceMonitor
    # (monitoring.coreos.com/v1) this chart uses, with their types; unknown fields are refused
    "ScaledObject": {
        "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "keda.sh/v1alpha1"}, "kind": {"const": "ScaledObject"},
            "metadata": {"type": "object", "required": ["name"]},
            "spec": {"type": "object", "additionalProperties": False, "required": ["scaleTargetRef", "triggers"],
                     "properties": {
                         "scaleTargetRef": {"type": "object", "required": ["name"], "additionalProperties": False,
                                            "properties": {"name": {"type": "string"},
                                                           "kind": {"type": "string"},
                                                           "apiVersion": {"type": "string"}}},
                         "minReplicaCount": {"type": "integer", "minimum": 0},
                         "maxReplicaCount": {"type": "integer", "minimum": 1},
                         "pollingInterval": {"type": "integer", "minimum": 1},
                         "cooldownPeriod": {"type": "integer", "minimum": 0},
                         "triggers": {"type": "array", "minItems": 1, "items": {
                             "type": "object", "required": ["type", "metadata"], "additionalProperties": False,
                             "properties": {"type": {"enum": ["prometheus", "postgresql"]},
                                            "metadata": {"type": "object",
                                                         "additionalProperties": {"type": "string"}}}}}}}}},
    "ServiceMonitor": {
        "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"}, "kind": {"const": "ServiceMonitor"},
            "spec": {"type": "object", "required": ["selector", "endpoints"], "additionalProperties": False,
                     "properties": {
                         "selector": {"type": "object", "properties": {"matchLabels": {
                             "type": "object", "additionalProperties": {"type": "string"}}}},
                         "endpoints": {"type": "array", "minItems": 1, "items": {
                             "type": "object", "additionalProperties": False,
                             "properties": {"port": {"type": "string"}, "path": {"type": "string"},
                                            "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                                            "relabelings": {"type": "array", "items": {"type": "object"}}}}}}}}},
}


# ------------------------------------------------------------------ compose
def test_compose_services_and_their_commands() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    assert {"postgres", "minio", "migrate", "api", "worker", "notifier", "prometheus", "grafana"} <= set(services)
    mediamill = {n: s for n, s in services.items() if "mediamill" in str(s.get("image", ""))}
    assert set(mediamill) == {"migrate", "api", "worker", "notifier"}
    for name, service in mediamill.items():
        assert service["build"]["dockerfile"] == "Dockerfile" and (COMPOSE.parent / service["build"]["context"]
                                                                   / "Dockerfile").is_file()
        assert_cli_accepts(service["command"])
        assert "MEDIAMILL_SECRET_KEY" in service["environment"]
        if name != "migrate":
            assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
            assert "--no-migrate" in service["command"] or name == "notifier"
    assert services["migrate"]["command"] == ["db", "upgrade"]
    assert services["api"]["deploy"]["replicas"] == 2
    # Prometheus scrapes every replica of every mediamill service on its metrics port
    prom = yaml.safe_load((COMPOSE.parent / "prometheus" / "prometheus.yml").read_text())
    targets = {c["dns_sd_configs"][0]["names"][0]: c["dns_sd_configs"][0]["port"] for c in prom["scrape_configs"]}
    assert targets == {"api": 9100, "worker": 9100, "notifier": 9100}
    for name in ("api", "worker", "notifier"):
        assert mediamill[name]["environment"]["MEDIAMILL_METRICS_PORT"] == "9100"
    done = subprocess.run(["promtool", "check", "config", "--syntax-only",
                           str(COMPOSE.parent / "prometheus" / "prometheus.yml")],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
    # Grafana gets the dashboard file the repository ships, and a Prometheus data source
    mounts = services["grafana"]["volumes"]
    assert any(m.startswith("./grafana/mediamill.json:") for m in mounts)
    provisioned = COMPOSE.parent / "grafana" / "provisioning"
    assert yaml.safe_load((provisioned / "datasources" / "prometheus.yaml").read_text())["datasources"][0]["url"] \
        == "http://prometheus:9090"
    assert (provisioned / "dashboards" / "mediamill.yaml").is_file()


# ------------------------------------------------------------------ Dockerfile
def _instructions(text: str) -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", text)
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
            for line in (raw.strip() for raw in joined.splitlines()) if line and not line.startswith("#")]


def test_dockerfile_structure() -> None:
    steps = _instructions((ROOT / "Dockerfile").read_text())
    stages = [i for i, (op, _) in enumerate(steps) if op == "FROM"]
    final = steps[stages[-1]:]
    assert re.match(r"python:3\.11-slim\b", final[0][1])
    users = [arg for op, arg in final if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert [arg for op, arg in final if op == "ENTRYPOINT"] == ['["mediamill"]']
    runs = " ".join(arg for op, arg in steps if op == "RUN")
    assert not re.search(r"\bapt(-get)?\b.*\bffmpeg\b", runs), "ffmpeg comes from the imageio-ffmpeg wheel"
    assert "apt" not in " ".join(arg for op, arg in final if op == "RUN")
    for _, arg in (s for s in steps if s[0] == "COPY" and "--from" not in s[1]):
        for src in arg.split()[:-1]:
            assert (ROOT / src).exists(), f"COPY {src}: not in the repository"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".git" in ignored and "tests" in ignored
    assert not any(src.rstrip("/") in ignored for _, arg in steps if _ == "COPY" for src in arg.split()[:-1])
    assert "imageio-ffmpeg" in (ROOT / "pyproject.toml").read_text()

"""The deploy files, checked by real tools: hadolint on the Dockerfile, kubernetes-validate
(strict) on every manifest; and cross-checks that alerts, the dashboard and the scrape
configs name metrics and services that exist."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from notifi.metrics import REGISTRY

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
BIN = Path(sys.executable).parent
METRIC = re.compile(r"notifi_[a-z_]+")


def known_metrics() -> set[str]:
    names = {c.name for c in REGISTRY.get_all()}
    suffixes = ("_bucket", "_sum", "_count")
    return names | {n + s for n in names for s in suffixes}


def test_dockerfile_passes_hadolint() -> None:
    result = subprocess.run(
        [BIN / "hadolint", DEPLOY / "Dockerfile"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^USER 10001", text, re.MULTILINE)  # never root


def manifests() -> list[Path]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return [K8S / name for name in kustomization["resources"]]


def test_kustomization_names_files_that_exist() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    for path in manifests():
        assert path.exists(), path
    for generator in kustomization["configMapGenerator"]:
        for entry in generator["files"]:
            assert (K8S / entry.split("=", 1)[1]).exists(), entry


@pytest.mark.parametrize("path", manifests(), ids=lambda p: p.name)
def test_manifest_is_valid_kubernetes(path: Path) -> None:
    result = subprocess.run(
        [BIN / "kubernetes-validate", "--strict", "--quiet", path], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def workloads() -> list[dict]:
    docs = [d for p in manifests() for d in yaml.safe_load_all(p.read_text()) if d]
    return [d for d in docs if d["kind"] in ("Deployment", "StatefulSet", "Job")]


def test_workloads_run_as_non_root_with_probes_and_resources() -> None:
    found = {w["metadata"]["name"]: w for w in workloads()}
    assert set(found) == {
        "notifi-api",
        "notifi-delivery",
        "notifi-router",
        "notifi-poller",
        "notifi-migrate",
    }
    assert found["notifi-poller"]["kind"] == "StatefulSet"
    for name, w in found.items():
        pod = w["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        for c in pod["containers"]:
            assert c["resources"]["requests"], name
            if w["kind"] != "Job":
                assert c["readinessProbe"]["httpGet"]["path"] == "/readyz", name
                assert c["livenessProbe"]["httpGet"]["path"] == "/healthz", name
    poller = found["notifi-poller"]["spec"]["template"]["spec"]["containers"][0]
    assert "$(POD_INDEX)" in poller["args"] and "--replica-index" in poller["args"]
    kinds = {d["kind"] for p in manifests() for d in yaml.safe_load_all(p.read_text()) if d}
    assert {"HorizontalPodAutoscaler", "PodDisruptionBudget", "Secret", "Job"} <= kinds


def test_alerts_and_dashboard_use_real_metrics() -> None:
    known = known_metrics()
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    alerts = {r["alert"]: r for g in rules["groups"] for r in g["rules"]}
    assert {
        "NotifiDeliveryFailures",
        "NotifiPollerLag",
        "NotifiActorRestarts",
        "NotifiConsumerLag",
    } <= set(alerts)
    exprs = [r["expr"] for r in alerts.values()]
    dashboard = json.loads((DEPLOY / "grafana" / "notifi.json").read_text())
    exprs += [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    for expr in exprs:
        for name in METRIC.findall(expr):
            assert name in known, (name, expr)
    readme = (ROOT / "README.md").read_text()
    for name in alerts:
        assert name in readme, f"README does not say what {name} means"


def test_compose_runs_every_role_and_prometheus_scrapes_them() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = set(compose["services"])
    assert {
        "postgres",
        "redis",
        "kafka",
        "migrate",
        "api",
        "router",
        "poller-0",
        "poller-1",
        "delivery",
        "prometheus",
    } <= services
    kafka = compose["services"]["kafka"]["environment"]
    assert kafka["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = {
        t.split(":")[0]
        for sc in scrape["scrape_configs"]
        for static in sc["static_configs"]
        for t in static["targets"]
    }
    assert targets == {"api", "router", "poller-0", "poller-1", "delivery"}

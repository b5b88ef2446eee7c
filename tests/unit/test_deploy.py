"""The operations files under deploy/: the Kubernetes manifests against the Kubernetes schemas
(kubernetes-validate, strict), what every service's pod must carry (probes on /livez and /readyz,
resources, settings from the ConfigMap and Secrets, a disruption budget), every setting the
ConfigMap names exists, the alert rules pass `promtool check rules`, and every metric the rules and
the Grafana dashboard use is one fcl exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from prometheus_client import REGISTRY, generate_latest

from fcl.contract.settings import Settings
from fcl.storage.entities import ModelFigure, OutboxFigure, QueueFigure, TrainingFigure
from fcl.web.metrics import Metrics
from tests.conftest import ROOT

DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
KUBERNETES_VERSION = "1.31.0"  # the oldest release still supported upstream when this was written
SERVICES = ("streams", "trainer", "web")


def _documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _manifests() -> list[Path]:
    return sorted(p for p in KUBERNETES.glob("*.yaml") if p.name != "kustomization.yaml")


def _all() -> list[dict[str, Any]]:
    return [d for p in _manifests() for d in _documents(p)]


@pytest.mark.parametrize("path", _manifests(), ids=lambda p: p.name)
def test_every_manifest_is_valid_against_the_kubernetes_schemas(path: Path) -> None:
    for document in _documents(path):
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_the_kustomization_lists_every_manifest_but_the_example_secret() -> None:
    [kustomization] = _documents(KUBERNETES / "kustomization.yaml")
    listed = set(kustomization["resources"])
    assert listed == {p.name for p in _manifests()} - {"secret.example.yaml"}


def _deployment(name: str) -> dict[str, Any]:
    [found] = [d for d in _all() if d["kind"] == "Deployment" and d["metadata"]["name"] == f"fcl-{name}"]
    return found


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_has_probes_resources_settings_and_a_disruption_budget(service: str) -> None:
    deployment = _deployment(service)
    pod = deployment["spec"]["template"]
    [container] = pod["spec"]["containers"]
    assert container["command"] == ["fcl", service]
    port = container["ports"][0]["name"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": port}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port}
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(container["ports"][0]["containerPort"])
    assert {"cpu", "memory"} <= set(container["resources"]["requests"]) and "memory" in container["resources"]["limits"]
    sources = {next(iter(s.values()))["name"] for s in container["envFrom"]}
    assert sources == {"fcl-settings", "fcl-secrets"}
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    settings = _documents(KUBERNETES / "configmap.yaml")[0]["data"]
    assert str(Path(settings["FCL_DATABASE_PASSWORD_FILE"]).parent) in mounts
    assert str(Path(settings["FCL_KAFKA_SSL_CAFILE"]).parent) in mounts
    labels = pod["metadata"]["labels"]
    budgets = [
        d
        for d in _all()
        if d["kind"] == "PodDisruptionBudget" and d["spec"]["selector"]["matchLabels"].items() <= labels.items()
    ]
    assert len(budgets) == 1, budgets
    if service == "web":
        [svc] = [d for d in _all() if d["kind"] == "Service"]
        assert svc["spec"]["selector"].items() <= labels.items() and svc["spec"]["ports"][0]["targetPort"] == port


def test_every_setting_the_configmap_names_exists() -> None:
    settings = _documents(KUBERNETES / "configmap.yaml")[0]["data"]
    fields = {f"FCL_{name.upper()}" for name in Settings.model_fields}
    unknown = [k for k in settings if k.startswith("FCL_") and k not in fields]
    assert unknown == []
    assert all(k.startswith(("FCL_", "AWS_")) for k in settings)
    assert "PASSWORD" not in " ".join(k for k in settings if k != "FCL_DATABASE_PASSWORD_FILE")
    assert "@" in settings["FCL_DATABASE_URL"] and ":" not in settings["FCL_DATABASE_URL"].split("//")[1].split("@")[0]


def test_the_alert_rules_pass_promtool() -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool not found: apt-get install -y prometheus (make bootstrap does, as root)"
    out = subprocess.run(
        [promtool, "check", "rules", str(DEPLOY / "prometheus" / "alerts.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 6 rules found" in out.stdout


def _exported() -> set[str]:
    """Every sample name fcl's three processes can export (Prometheus text of their collectors)."""
    import fcl.streams.metrics
    import fcl.worker.metrics  # noqa: F401 - registers the trainer's metrics

    web = Metrics()
    web.observe("GET", "/metrics", 200, 0.01)
    text = (
        generate_latest(REGISTRY).decode()
        + web.render(
            [QueueFigure(model_type="goal", status="queued", jobs=1, oldest_age_seconds=1.0)],
            [TrainingFigure(model_type="goal", outcome="failed", attempts=1, seconds_total=1.0)],
            OutboxFigure(pending=0, parked=0),
            [ModelFigure(model_type="goal", champion_version=1, champion_age_seconds=1.0, drift_psi_max=0.1)],
            scrape_seconds=0.0,
        ).decode()
    )
    names = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M):
        names.add(name)
        if kind == "counter":
            names.add(f"{name}_total")
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names


def _expressions() -> dict[str, str]:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    exprs = {r["alert"]: r["expr"] for g in rules["groups"] for r in g["rules"]}
    dashboard = json.loads((DEPLOY / "grafana" / "fcl-dashboard.json").read_text())
    exprs |= {p["title"]: t["expr"] for p in dashboard["panels"] for t in p["targets"]}
    return exprs


def test_every_metric_the_rules_and_the_dashboard_use_is_one_fcl_exports() -> None:
    exported = _exported()
    assert {"fcl_consumer_lag", "fcl_champion_age_seconds", "fcl_training_child_peak_rss_bytes"} <= exported
    used = {name for expr in _expressions().values() for name in re.findall(r"\bfcl_[a-z_]+", expr)}
    assert used and used <= exported, sorted(used - exported)

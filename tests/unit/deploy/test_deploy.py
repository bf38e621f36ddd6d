"""Deployment files: Kubernetes manifests validate against the API schemas (kubernetes-validate), the
Strimzi topics match `hindsight topics`, docker-compose.yml validates, Prometheus scrapes what runs."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from pipeline.kafka import topic_specs
from pipeline.settings import Settings
from tests.conftest import unavailable

ROOT = Path(__file__).resolve().parents[3]
K8S = ROOT / "deploy" / "k8s"
K8S_VERSION = "1.33.0"


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _kustomize_sources(directory: Path) -> list[dict[str, Any]]:
    """The resources a kustomization lists, recursively (what `kubectl kustomize` starts from)."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    docs: list[dict[str, Any]] = []
    for resource in kustomization["resources"]:
        target = directory / resource
        docs.extend(_kustomize_sources(target) if target.is_dir() else _docs(target))
    return docs


def test_every_manifest_validates_against_the_kubernetes_schemas() -> None:
    docs = [
        d for d in _kustomize_sources(K8S / "strimzi") if not d["apiVersion"].startswith("kafka.strimzi.io")
    ]
    docs.append(_docs(K8S / "base" / "secret.example.yaml")[0])
    kinds = sorted(d["kind"] for d in docs)
    deployments = ["Deployment"] * 5  # ingest, worker, ClickHouse sink, API, OTLP receiver
    assert kinds == sorted(["Namespace", "ConfigMap", "Job", *deployments, "Service", "Service", "Secret"])
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)  # raises on any schema error


def test_invalid_manifest_is_caught() -> None:
    worker = next(d for d in _docs(K8S / "base" / "worker.yaml") if d["kind"] == "Deployment")
    worker["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(worker, K8S_VERSION, strict=True)


def test_workloads_share_settings_and_run_real_commands() -> None:
    from pipeline.ops.cli import build_parser

    config = _docs(K8S / "base" / "configmap.yaml")[0]["data"]
    Settings.model_validate({})  # the defaults load
    names = {f"HINDSIGHT_{n.upper()}" for n in Settings.model_fields} | {"KAFKA_BOOTSTRAP_SERVERS"}
    assert set(config) <= names, set(config) - names
    parser = build_parser()
    for doc in _kustomize_sources(K8S / "base"):
        if doc["kind"] not in ("Deployment", "Job"):
            continue
        [container] = doc["spec"]["template"]["spec"]["containers"]
        parser.parse_args(container["args"])  # a typo in a subcommand fails here
        refs = {next(iter(r.values()))["name"] for r in container["envFrom"]}
        if container["args"] == ["otlp"]:  # the receiver holds only the token that may send logs
            assert refs == {"hindsight-config"}
            secrets = {e["name"]: e["valueFrom"]["secretKeyRef"]["key"] for e in container["env"]}
            assert secrets == {"HINDSIGHT_INGEST_TOKEN": "HINDSIGHT_INGEST_TOKEN"}
        else:
            assert refs == {"hindsight-config", "hindsight-secrets"}
    partitions = int(config["HINDSIGHT_PARTITIONS"])
    worker = next(d for d in _docs(K8S / "base" / "worker.yaml") if d["kind"] == "Deployment")
    assert worker["spec"]["replicas"] <= partitions


def test_strimzi_topics_match_what_hindsight_creates() -> None:
    config = _docs(K8S / "base" / "configmap.yaml")[0]["data"]
    settings = Settings(partitions=int(config["HINDSIGHT_PARTITIONS"]))
    topics = {d["metadata"]["name"]: d["spec"] for d in _docs(K8S / "strimzi" / "topics.yaml")}
    specs = {s.name: s for s in topic_specs(settings)}
    assert set(topics) == set(specs)
    for name, spec in specs.items():
        assert topics[name]["partitions"] == spec.partitions, name
        assert {k: str(v) for k, v in topics[name]["config"].items()} == spec.config, name


def kustomize(overlay: str) -> list[dict[str, Any]]:
    """What `kubectl kustomize deploy/k8s/<overlay>` builds."""
    if shutil.which("kubectl") is None:
        unavailable("kubectl not installed")
    out = subprocess.run(
        ["kubectl", "kustomize", str(K8S / overlay)], capture_output=True, check=True, timeout=60
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def test_kustomize_builds_and_the_output_validates() -> None:
    docs = kustomize("strimzi")
    assert len(docs) == 17  # with the logs.sessions and hindsight.shared topics and the ingest Deployment
    for doc in docs:
        if doc["kind"] == "KafkaTopic":
            continue
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "hindsight"
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_monitoring_overlay_scrapes_every_metrics_port_as_its_job() -> None:
    """Prometheus Operator users: the ServiceMonitor selects the headless Service, whose selector
    matches every pod (the base labels pod templates) and whose port names the pods' metrics port;
    the job relabel names each pod's job after its component, as deploy/prometheus/prometheus.yml does."""
    docs = kustomize("monitoring")
    [monitor] = [d for d in docs if d["kind"] == "ServiceMonitor"]
    [service] = [d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "hindsight-metrics"]
    assert monitor["metadata"]["namespace"] == service["metadata"]["namespace"] == "hindsight"
    labels = service["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in monitor["spec"]["selector"]["matchLabels"].items())
    [endpoint] = monitor["spec"]["endpoints"]
    [port] = service["spec"]["ports"]
    assert endpoint["port"] == port["name"] and port["targetPort"] == "metrics"
    scraped = set()
    for doc in docs:
        if doc["kind"] != "Deployment":
            continue
        pod = doc["spec"]["template"]
        ports = {p["name"]: p["containerPort"] for c in pod["spec"]["containers"] for p in c.get("ports", [])}
        if "metrics" in ports:
            assert all(pod["metadata"]["labels"].get(k) == v for k, v in service["spec"]["selector"].items())
            assert ports["metrics"] == port["port"]
            scraped.add(pod["metadata"]["labels"]["app.kubernetes.io/name"])
    jobs = {
        j["job_name"]
        for j in yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())["scrape_configs"]
    }
    assert scraped == {"hindsight-ingest", "hindsight-worker", "hindsight-sink-clickhouse", "hindsight-otlp"}
    [relabel] = endpoint["relabelings"]
    assert relabel["sourceLabels"] == ["__meta_kubernetes_pod_label_app_kubernetes_io_name"]
    assert relabel["targetLabel"] == "job" and {"hindsight-ingest", "hindsight-worker"} <= jobs
    for doc in docs:
        if doc["kind"] != "ServiceMonitor":
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)

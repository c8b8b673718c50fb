"""The deployment recipes in deploy/: the Kubernetes manifest is valid against the Kubernetes API's
own schema (``kubernetes-validate``, offline), and its numbers agree with the bridge's settings."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import yaml

from bridge.config import Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def documents() -> list[dict[str, object]]:
    return [d for d in yaml.safe_load_all((DEPLOY / "k8s" / "bridge.yaml").read_text(encoding="utf-8")) if d]


def test_the_manifest_is_valid_kubernetes() -> None:
    docs = documents()
    assert [d["kind"] for d in docs] == ["Deployment", "Service"]
    for doc in docs:
        kubernetes_validate.validate(doc, "1.30.0", strict=True)  # raises on any error


def test_the_grace_period_covers_the_drain_and_readiness_is_healthz() -> None:
    deployment = documents()[0]
    pod = deployment["spec"]["template"]["spec"]  # type: ignore[index]
    [container] = pod["containers"]
    drain = next(float(e["value"]) for e in container["env"] if e["name"] == "BRIDGE_DRAIN_TIMEOUT_S")
    assert drain == Settings().server.drain_timeout_s, "the manifest says what the bridge does by default"
    assert pod["terminationGracePeriodSeconds"] >= drain + 10, "Kubernetes must not kill a pod mid-drain"
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["failureThreshold"] == 1, "the first 503 takes a draining pod out"
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0  # type: ignore[index]

"""Rendering the Helm chart offline with the Helm SDK (helm-python-sdk bundles Helm's Go library).

The kube version and extra API versions (the Prometheus Operator CRDs) can only be passed through the SDK's
native options, a private API: that is why pyproject pins helm-python-sdk exactly.
"""

from __future__ import annotations

import json
from typing import Any

import helm_python as helm
import yaml
from helm_python import _native

from tests.support import REPO

CHART = REPO / "deploy" / "helm" / "eigenloop"
LARGE_VALUES = CHART / "examples" / "large-cluster.yaml"
OPERATOR_APIS = [
    "monitoring.coreos.com/v1",
    "monitoring.coreos.com/v1/PodMonitor",
    "monitoring.coreos.com/v1/PrometheusRule",
]
KUBE_VERSION = "v1.31.2"
NAMESPACE = "prod"
RELEASE = "demo"


def large_values() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load(LARGE_VALUES.read_text())
    return values


def render_files(
    values: dict[str, Any] | None = None, *, operator: bool = True, kube_version: str = KUBE_VERSION
) -> dict[str, str]:
    """{template path: rendered text} with empty (disabled) templates left out; strict: a missing value fails."""
    options = {
        "name": RELEASE,
        "namespace": NAMESPACE,
        "kube_version": kube_version,
        "api_versions": OPERATOR_APIS if operator else [],
        "strict": True,
    }
    with helm.Chart.load(str(CHART)) as chart:
        raw = _native.call_string("helm_render", chart._raw(), json.dumps(values or {}), json.dumps(options))
    return {path: text for path, text in json.loads(raw).items() if text.strip()}


def render(values: dict[str, Any] | None = None, **kw: Any) -> list[dict[str, Any]]:
    """Every rendered Kubernetes object (the helm test pod included, NOTES.txt not)."""
    return [
        doc
        for path, text in render_files(values, **kw).items()
        if not path.endswith("NOTES.txt")
        for doc in yaml.safe_load_all(text)
        if doc
    ]


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    """Objects of `kind` (and, when given, named `<release>-eigenloop-<name>`)."""
    full = f"{RELEASE}-eigenloop-{name}" if name else None
    return [d for d in docs if d["kind"] == kind and (full is None or d["metadata"]["name"] == full)]


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"] if workload["kind"] == "Pod" else workload["spec"]["template"]["spec"]
    return spec


def env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def schema_error(values: dict[str, Any]) -> str:
    """The chart's schema message for `values` ('' when they are accepted)."""
    with helm.Chart.load(str(CHART)) as chart:
        try:
            chart.validate_schema(values)
        except helm.HelmValuesError as exc:
            return str(exc)
    return ""


def render_error(values: dict[str, Any]) -> str:
    try:
        render_files(values)
    except helm.HelmError as exc:
        return str(exc)
    return ""


def lint(values: dict[str, Any] | None = None) -> dict[str, Any]:
    report: dict[str, Any] = helm.lint(
        str(CHART), values or {}, strict=True, kube_version=KUBE_VERSION, namespace=NAMESPACE
    )
    return report

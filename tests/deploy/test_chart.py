"""The Helm chart rendered by the Helm SDK: lint, Kubernetes schemas, values schema, and the facts it promises."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from eigenloop.training.config import load_config
from tests.deploy.chart import (
    CHART,
    NAMESPACE,
    RELEASE,
    env,
    find,
    large_values,
    lint,
    one,
    pod_spec,
    render,
    render_error,
    render_files,
    schema_error,
)
from tests.support import REPO

# Custom resources of the Prometheus Operator: kubernetes-validate has no schema for them.
CRD_KINDS = {"PodMonitor", "PrometheusRule"}
SERVICES = ["toolenv", "user-sim", "generator", "validator", "inference", "trainer"]
VALUE_SETS = {"default": {}, "large": large_values()}


@pytest.fixture(scope="module")
def default() -> list[dict[str, Any]]:
    return render()


@pytest.fixture(scope="module")
def large() -> list[dict[str, Any]]:
    return render(large_values())


def workloads(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] in {"Deployment", "StatefulSet", "Pod"}]


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_helm_lint_is_clean(values: dict[str, Any]) -> None:
    report = lint(values)
    assert report["errors"] == []
    # Only INFO remains (the chart has no icon).
    assert [m for m in report["messages"] if m["severity"] > 1] == []


@pytest.mark.parametrize(
    ("values", "operator", "kube"),
    [("default", True, "1.28.0"), ("default", False, "1.31.0"), ("large", True, "1.33.0"), ("large", False, "1.37.0")],
)
def test_every_manifest_is_valid_kubernetes(values: str, operator: bool, kube: str) -> None:
    docs = render(VALUE_SETS[values], operator=operator, kube_version=f"v{kube}")
    kinds = set()
    for doc in docs:
        kinds.add(doc["kind"])
        try:
            kubernetes_validate.validate(doc, kube, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            # Anything else without a schema is a removed or misspelt API.
            assert operator and doc["kind"] in CRD_KINDS, f"no Kubernetes {kube} schema for {doc['kind']}"
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{doc['kind']} {doc['metadata']['name']}: {'.'.join(map(str, exc.path))}: {exc.message}")
    assert {"Deployment", "StatefulSet", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"} <= kinds
    assert {"NetworkPolicy", "ServiceAccount", "Role", "RoleBinding", "PersistentVolumeClaim", "Pod"} <= kinds
    assert (kinds >= CRD_KINDS) == operator


def test_install_enforces_the_chart_kube_version() -> None:
    with helm.Config(namespace=NAMESPACE, storage_driver="memory") as cfg:
        release = cfg.install(str(CHART), RELEASE, {}, dry_run="client")
        assert "kind: StatefulSet" in release["manifest"] and "helm test" in release["notes"]
    with helm.Config(namespace=NAMESPACE, storage_driver="memory") as cfg, pytest.raises(helm.HelmError) as info:
        from helm_python import _native

        _native.call_string(
            "helm_install", cfg._raw(), _native.HANDLE(0), _native.HANDLE(0), str(CHART), RELEASE, None,
            json.dumps({"dry_run": "client", "kube_version": "v1.25.0"}),
        )  # fmt: skip
    assert "requires kubeVersion" in str(info.value)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"userSim": {"replicas": "three"}}, "at '/userSim/replicas': got string, want integer"),
        ({"toolenv": {"replcas": 2}}, "invalid propertyName 'replcas'"),
        ({"trainer": {"replicas": 2}}, "invalid propertyName 'replicas'"),
        ({"ports": {"grpc": 70000}}, "at '/ports/grpc': maximum: got 70,000, want 65,535"),
        ({"image": {"pullPolicy": "Sometimes"}}, "value must be one of 'Always', 'IfNotPresent', 'Never'"),
        ({"inference": {"gpus": 0}}, "at '/inference/gpus': minimum: got 0, want 1"),
        ({"inference": {"vllm": {"gpuMemoryUtilization": 1.5}}}, "gpuMemoryUtilization': maximum: got 1.5, want 1"),
        ({"inference": {"backend": "tensorrt"}}, "value must be one of 'transformers', 'vllm'"),
        ({"inference": {"vllm": {"engineArgs": ["--enforce-eager"]}}}, "at '/inference/vllm/engineArgs': got array"),
        ({"toolenv": {"resources": {"requests": {"cpu": "lots"}}}}, "'lots' does not match pattern"),
        ({"toolenv": {"resources": {"requests": None}}}, "missing property 'requests'"),
        ({"podSecurityContext": {"runAsNonRoot": False}}, "at '/podSecurityContext/runAsNonRoot': value must be true"),
        ({"userSim": {"autoscaling": {"maxReplica": 3}}}, "additional properties 'maxReplica' not allowed"),
        ({"trainer": {"run": {"stage": "pretrain"}}}, "value must be one of '', 'sft', 'user-sft', 'grpo'"),
        ({"persistence": {"data": {"accessModes": ["ReadWriteSometimes"]}}}, "value must be one of 'ReadWriteOnce'"),
        ({"monitoring": {"podMonitor": {"interval": "soon"}}}, "'soon' does not match pattern"),
    ],
)
def test_schema_rejects_bad_values_clearly(values: dict[str, Any], message: str) -> None:
    assert message in schema_error(values)


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_schema_accepts_the_shipped_values(values: dict[str, Any]) -> None:
    assert schema_error(values) == ""


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"trainer": {"nodes": 2}}, "trainer.run.stage is empty: the Trainer gRPC service is one process"),
        (
            {"trainer": {"nodes": 2, "run": {"stage": "sft"}}},
            "2 pods mount this claim, so persistence.data.accessModes must include ReadWriteMany",
        ),
        ({"inference": {"replicas": 2}}, "inference.model.accessModes must include ReadOnlyMany or ReadWriteMany"),
        ({"inference": {"vllm": {"tensorParallelSize": 4}}}, "tensorParallelSize (4) needs at least that many GPUs"),
        ({"userSim": {"autoscaling": {"minReplicas": 9, "maxReplicas": 3}}}, "minReplicas (9) is above maxReplicas"),
        ({"tls": {"enabled": True}}, "tls.secretName is required when tls.enabled"),
        ({"auth": {"enabled": True}}, "auth.token (or auth.existingSecret) is required when auth.enabled"),
    ],
)
def test_inconsistent_values_fail_with_a_reason(values: dict[str, Any], message: str) -> None:
    assert message in render_error(values)


def test_one_workload_per_service_with_probes_resources_and_security(default: list[dict[str, Any]]) -> None:
    names = {d["metadata"]["name"] for d in default if d["kind"] in {"Deployment", "StatefulSet"}}
    assert names == {f"{RELEASE}-eigenloop-{s}" for s in SERVICES}
    assert one(default, "StatefulSet", "trainer")
    for workload in workloads(default):
        spec = pod_spec(workload)
        if workload["kind"] != "Pod":
            assert spec["securityContext"]["runAsNonRoot"] is True
            assert spec["serviceAccountName"] == workload["metadata"]["name"]
        for container in spec["containers"]:
            assert {"cpu", "memory"} <= set(container["resources"]["requests"]), workload["metadata"]["name"]
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
            assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
            if workload["kind"] != "Pod":
                for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                    assert container[probe]["grpc"] == {"port": 50051}


def test_tls_mounts_the_secret_and_probes_the_tcp_port() -> None:
    docs = render({"tls": {"enabled": True, "secretName": "certs"}})
    toolenv = pod_spec(one(docs, "Deployment", "toolenv"))
    container = toolenv["containers"][0]
    assert env(container)["EIGENLOOP_TOOLENV_TLS_CLIENT_CA"] == "/etc/eigenloop/tls/ca.crt"
    assert {"name": "tls", "secret": {"secretName": "certs"}} in toolenv["volumes"]
    assert container["readinessProbe"]["tcpSocket"] == {"port": "grpc"}


def test_user_sim_and_toolenv_are_headless_the_rest_are_not(default: list[dict[str, Any]]) -> None:
    for name in SERVICES:
        headless = one(default, "Service", name)["spec"].get("clusterIP") == "None"
        assert headless == (name in {"user-sim", "toolenv"}), name
    rdzv = one(default, "Service", "trainer-rdzv")["spec"]
    assert rdzv["clusterIP"] == "None" and rdzv["publishNotReadyAddresses"] is True
    toolenv = env(pod_spec(one(default, "Deployment", "toolenv"))["containers"][0])
    assert (
        toolenv["EIGENLOOP_ADDRESSES_USER_SIM"]
        == f"dns:///{RELEASE}-eigenloop-user-sim.{NAMESPACE}.svc.cluster.local:50051"
    )


def test_user_sim_scales_by_hpa(default: list[dict[str, Any]], large: list[dict[str, Any]]) -> None:
    assert "replicas" not in one(default, "Deployment", "user-sim")["spec"]
    hpa = one(default, "HorizontalPodAutoscaler", "user-sim")["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": f"{RELEASE}-eigenloop-user-sim",
    }
    assert [m["type"] for m in hpa["metrics"]] == ["Resource"]
    assert hpa["metrics"][0]["resource"]["name"] == "cpu"
    big = one(large, "HorizontalPodAutoscaler", "user-sim")["spec"]
    assert (big["minReplicas"], big["maxReplicas"]) == (8, 64)
    pods = big["metrics"][1]["pods"]
    assert pods["metric"]["name"] == "eigenloop_user_sim_conversations_active"
    fixed = render({"userSim": {"replicas": 5, "autoscaling": {"enabled": False}}})
    assert one(fixed, "Deployment", "user-sim")["spec"]["replicas"] == 5
    assert find(fixed, "HorizontalPodAutoscaler") == []


def test_inference_runs_on_gpu_nodes_with_vllm_settings_and_the_model(large: list[dict[str, Any]]) -> None:
    inference = one(large, "Deployment", "inference")
    spec = pod_spec(inference)
    container = spec["containers"][0]
    assert inference["spec"]["replicas"] == 2
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert container["resources"]["requests"]["nvidia.com/gpu"] == 2
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    settings = env(container)
    assert settings["EIGENLOOP_INFERENCE_MODEL"] == "/models/qwen2.5-7b-instruct"
    assert settings["EIGENLOOP_INFERENCE_TENSOR_PARALLEL_SIZE"] == "2"
    assert settings["EIGENLOOP_INFERENCE_BACKEND"] == "vllm"
    assert settings["EIGENLOOP_INFERENCE_MAX_MODEL_LEN"] == "32768"
    assert settings["EIGENLOOP_INFERENCE_DTYPE"] == "auto"
    assert json.loads(settings["EIGENLOOP_INFERENCE_VLLM_ENGINE_ARGS"]) == {"max_num_seqs": 256}
    assert settings["EIGENLOOP_INFERENCE_WEIGHTS_DIR"] == "/dev/shm"
    assert {"name": "models", "persistentVolumeClaim": {"claimName": "models", "readOnly": True}} in spec["volumes"]
    assert {"name": "models", "mountPath": "/models", "readOnly": True} in container["volumeMounts"]
    assert find(large, "PersistentVolumeClaim", "inference-models") == []  # existingClaim is used


def test_trainer_serves_its_api_by_default(default: list[dict[str, Any]]) -> None:
    trainer = one(default, "StatefulSet", "trainer")
    assert trainer["spec"]["replicas"] == 1
    container = pod_spec(trainer)["containers"][0]
    assert "command" not in container and container["args"] == ["--config", "/etc/eigenloop/config.yaml"]
    assert container["readinessProbe"]["grpc"] == {"port": 50051}
    assert env(container)["EIGENLOOP_TRAINER_RUNS_DIR"] == "/checkpoints/runs"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_trainer_runs_a_stage_as_a_torchrun_job_across_nodes(large: list[dict[str, Any]], tmp_path: Path) -> None:
    trainer = one(large, "StatefulSet", "trainer")
    assert trainer["spec"]["replicas"] == 2
    assert trainer["spec"]["serviceName"] == f"{RELEASE}-eigenloop-trainer-rdzv"
    container = pod_spec(trainer)["containers"][0]
    assert container["command"][:2] == ["sh", "-c"] and "readinessProbe" not in container
    script = container["command"][2]
    pod0 = f"{RELEASE}-eigenloop-trainer-0.{RELEASE}-eigenloop-trainer-rdzv.{NAMESPACE}.svc.cluster.local"
    for arg in ("--nnodes=2", "--nproc-per-node=8", '--node-rank="$POD_INDEX"', f"--master-addr={pod0}"):
        assert arg in script
    assert script.endswith('--no-python eigenloop train grpo --config /etc/eigenloop/run.yaml "$@"')
    assert "ls /checkpoints/runs/grpo-airline/checkpoints/step-*" in script  # resume only when there is one
    assert env(container)["POD_INDEX"]["fieldRef"]["fieldPath"] == "metadata.labels['apps.kubernetes.io/pod-index']"
    run = yaml.safe_load(one(large, "ConfigMap", "trainer-run")["data"]["run.yaml"])
    assert run["run_dir"] == "/checkpoints/runs/grpo-airline" and run["metrics"] == {"prometheus_port": 9090}
    assert run["rollouts"]["user_sim"] == f"dns:///{RELEASE}-eigenloop-user-sim.{NAMESPACE}.svc.cluster.local:50051"
    assert run["rollouts"]["group_size"] == 8
    # What the pods read is a valid config of the stage.
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(run))
    assert load_config("grpo", path).rollouts.toolenv == run["rollouts"]["toolenv"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 8
    claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"]
        for v in pod_spec(trainer)["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert claims == {"data": f"{RELEASE}-eigenloop-data", "checkpoints": f"{RELEASE}-eigenloop-checkpoints"}
    for pvc in find(large, "PersistentVolumeClaim"):
        assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
        assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    # Only global rank 0 (pod 0) serves /metrics: Prometheus skips the other trainer pods.
    (relabel,) = find(large, "PodMonitor")[0]["spec"]["podMetricsEndpoints"][0]["relabelings"]
    assert (relabel["regex"], relabel["action"]) == ("trainer;[1-9][0-9]*", "drop")


def test_network_policies_admit_only_callers_and_prometheus(default: list[dict[str, Any]]) -> None:
    def admitted(name: str, port: str) -> set[str]:
        policy = one(default, "NetworkPolicy", name)["spec"]
        assert policy["policyTypes"] == ["Ingress"]
        # A rule without ports admits its peers on every port.
        peers = [
            p
            for rule in policy["ingress"]
            if {"port": port} in rule.get("ports", [{"port": port}])
            for p in rule["from"]
        ]
        return {
            p["podSelector"]["matchLabels"].get("app.kubernetes.io/component", "prometheus")
            if "namespaceSelector" not in p
            else "prometheus"
            for p in peers
        }

    for name in ("user-sim", "inference"):
        assert admitted(name, "grpc") == {"trainer", "helm-test"}
    assert admitted("toolenv", "grpc") == {"trainer", "generator", "validator", "helm-test"}
    for name in SERVICES:
        # Trainer pods reach each other on every port (rendezvous, NCCL), so also on /metrics.
        assert admitted(name, "metrics") == {"prometheus"} | ({"trainer"} if name == "trainer" else set())
    prometheus = one(default, "NetworkPolicy", "toolenv")["spec"]["ingress"][1]["from"][0]
    assert prometheus["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}


def test_only_the_trainer_talks_to_the_api_and_only_to_watch_endpointslices(default: list[dict[str, Any]]) -> None:
    roles = find(default, "Role") + find(default, "ClusterRole")
    assert [r["metadata"]["name"] for r in roles] == [f"{RELEASE}-eigenloop-trainer"]
    assert roles[0]["rules"] == [
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]}
    ]
    binding = one(default, "RoleBinding", "trainer")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": f"{RELEASE}-eigenloop-trainer", "namespace": NAMESPACE}
    ]
    for account in find(default, "ServiceAccount"):
        assert account["automountServiceAccountToken"] is account["metadata"]["name"].endswith("-trainer")
    for workload in workloads(default):
        automount = pod_spec(workload)["automountServiceAccountToken"]
        assert automount is workload["metadata"]["name"].endswith("-trainer")


def test_disruption_budgets(default: list[dict[str, Any]]) -> None:
    budgets = {
        d["metadata"]["name"].removeprefix(f"{RELEASE}-eigenloop-"): d["spec"]
        for d in find(default, "PodDisruptionBudget")
    }
    assert set(budgets) == set(SERVICES)
    assert budgets["trainer"]["maxUnavailable"] == 0
    assert budgets["user-sim"]["maxUnavailable"] == 1


def test_monitoring_objects_follow_the_operator_crds(default: list[dict[str, Any]]) -> None:
    monitor = find(default, "PodMonitor")[0]["spec"]
    assert monitor["podMetricsEndpoints"][0]["port"] == "metrics"
    rule = find(default, "PrometheusRule")[0]
    assert rule["spec"] == yaml.safe_load((REPO / "deploy" / "prometheus" / "rules.yml").read_text())
    for workload in workloads(default):
        if workload["kind"] != "Pod":
            assert "prometheus.io/scrape" not in workload["spec"]["template"]["metadata"]["annotations"]
    plain = render(operator=False)
    assert find(plain, "PodMonitor") == [] and find(plain, "PrometheusRule") == []
    for workload in workloads(plain):
        if workload["kind"] != "Pod":
            scrape = workload["spec"]["template"]["metadata"]["annotations"]
            assert (scrape["prometheus.io/scrape"], scrape["prometheus.io/port"]) == ("true", "9090")


def test_dashboard_configmap_ships_the_dashboard_file(default: list[dict[str, Any]]) -> None:
    dashboard = one(default, "ConfigMap", "dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads(dashboard["data"]["eigenloop.json"])
    assert shipped == json.loads((REPO / "deploy" / "grafana" / "eigenloop.json").read_text())


def test_helm_test_hook_health_checks_every_service(default: list[dict[str, Any]]) -> None:
    pod = one(default, "Pod", "test-health")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    args = pod_spec(pod)["containers"][0]["args"]
    assert sorted(args) == sorted(
        f"dns:///{RELEASE}-eigenloop-{s}.{NAMESPACE}.svc.cluster.local:50051" for s in SERVICES
    )
    assert pod["metadata"]["labels"]["app.kubernetes.io/component"] == "helm-test"


def test_disabled_services_disappear_everywhere() -> None:
    docs = render({"trainer": {"enabled": False}, "inference": {"enabled": False}})
    assert not [
        d
        for d in docs
        if d["metadata"].get("labels", {}).get("app.kubernetes.io/component") in {"trainer", "inference"}
    ]
    assert find(docs, "Role") == []
    args = pod_spec(one(docs, "Pod", "test-health"))["containers"][0]["args"]
    assert len(args) == 4
    notes = render_files({"trainer": {"enabled": False}})["eigenloop/templates/NOTES.txt"]
    assert "trainer" not in notes and "helm test demo -n prod" in notes

"""Prometheus rules and the Grafana dashboard, checked with Debian's promtool and a real Prometheus on loopback.

The live test starts toolenv, user_sim, generator and validator with `eigenloop up`, points Prometheus at their
/metrics, plays a few episodes and a synthesis round, and evaluates every dashboard query: each must parse and
run, and the ones built only on the running services' metrics must return series. Queries on services not
started here (trainer, inference: they need a model) are checked for syntax and evaluation only.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from eigenloop.launcher import HOST, free_port, read_state
from tests.support import REPO, wait_for

RULES = REPO / "deploy" / "prometheus" / "rules.yml"
RULES_TEST = REPO / "deploy" / "prometheus" / "rules_test.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "eigenloop.json"
# Metric families of the services this test runs; queries built only on these must return data.
LIVE = ("toolenv", "user_sim", "generator", "validator")
LIVE_PREFIXES = ("eigenloop_grpc_", "eigenloop_service_info", *(f"eigenloop_{s}_" for s in LIVE))
# Grafana's built-in interval variables, as fixed windows (1 s scrapes, so 1 m holds enough samples).
GRAFANA_INTERVALS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}

pytestmark = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="needs Debian's prometheus package (make test installs it)"
)


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def queries() -> list[tuple[str, str]]:
    """(panel title/refId, PromQL with Grafana's variables replaced) for every target."""
    defined = {v["name"] for v in dashboard()["templating"]["list"]}
    out = []
    for panel in panels():
        for target in panel["targets"]:
            expr = target["expr"]
            for name, value in GRAFANA_INTERVALS.items():
                expr = expr.replace(name, value)
            used = set(re.findall(r"\$\{?(\w+)\}?", expr))
            assert used <= defined, f"{panel['title']}: undefined variables {used - defined}"
            out.append((f"{panel['title']}/{target['refId']}", re.sub(r"\$\{?\w+\}?", ".*", expr)))
    return out


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b(eigenloop_[a-z_]+?)(?:_bucket|_sum|_count)?\b(?!\s*\()", expr))


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=60)


def test_rules_pass_promtool_check_and_unit_tests() -> None:
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", str(RULES_TEST))
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_rules_cover_the_alerts_the_deployment_promises() -> None:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    alerts = {r["alert"] for g in groups for r in g["rules"] if "alert" in r}
    # A service down, rollout error rate, reward collapse, user_sim saturation, policy staleness.
    assert alerts >= {
        "EigenloopTargetDown",
        "EigenloopRolloutErrorRate",
        "EigenloopRewardCollapse",
        "EigenloopUserSimSaturated",
        "EigenloopPolicyStale",
    }
    for group in groups:
        for rule in group["rules"]:
            if "alert" in rule:
                assert {"summary", "description"} <= set(rule["annotations"]) and rule["labels"]["severity"]


def test_dashboard_is_well_formed() -> None:
    board = dashboard()
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    titles = {p["title"] for p in panels()}
    # The panels the deployment promises.
    for title in (
        "Rollout throughput",
        "Mean reward",
        "Pass rate",
        "Filtered groups by reason",
        "Synthesis yield",
        "user_sim turn latency",
        "user_sim open conversations per pod",
        "Inference tokens/s",
        "Trainer step time split",
        "Policy version lag",
    ):
        assert title in titles
    for panel in panels():
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)) and all(t["expr"].strip() for t in panel["targets"])
        assert panel["datasource"]["uid"] == "${datasource}"
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24


def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    """Offline syntax check: every query as a recording rule through promtool."""
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [{"record": f"dashboard:q{i}", "expr": q} for i, (_, q) in enumerate(queries())],
            }
        ]
    }
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump(rules))
    checked = promtool("check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr


# ---------------------------------------------------------------------------------------------------------------
# Live: Prometheus scraping services started by `eigenloop up`
# ---------------------------------------------------------------------------------------------------------------


def eigenloop(*args: str) -> subprocess.CompletedProcess[str]:
    cli = Path(sys.executable).parent / "eigenloop"
    return subprocess.run([str(cli), *args], capture_output=True, text=True, timeout=120, cwd=REPO)


class Prometheus:
    """Debian's prometheus on a loopback port; `timeout` ends it even if the test process dies."""

    def __init__(self, workdir: Path, targets: list[str]) -> None:
        shutil.copy(RULES, workdir / "rules.yml")
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": ["rules.yml"],
            "scrape_configs": [{"job_name": "eigenloop", "static_configs": [{"targets": targets}]}],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        checked = promtool("check", "config", str(workdir / "prometheus.yml"))
        assert checked.returncode == 0, checked.stdout + checked.stderr
        self.url = f"http://{HOST}:{free_port()}"
        self.log = (workdir / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [
                "timeout", "600", "prometheus",
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address={self.url.removeprefix('http://')}",
            ],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=workdir,
        )  # fmt: skip

    def get(self, path: str, **params: str) -> dict[str, Any]:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as reply:
                body: dict[str, Any] = json.loads(reply.read())
        except urllib.error.HTTPError as exc:  # 400 bad_data: the query does not parse
            body = json.loads(exc.read())
        return body

    def query(self, expr: str) -> dict[str, Any]:
        return self.get("/api/v1/query", query=expr)

    def has(self, expr: str) -> bool:
        reply = self.query(expr)
        return reply["status"] == "success" and bool(reply["data"]["result"])

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as reply:
                return bool(reply.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    workdir = tmp_path_factory.mktemp("prometheus")
    run_dir = workdir / "run"
    started = eigenloop("up", "--run-dir", str(run_dir), *(a for s in LIVE for a in ("--only", s)))
    assert started.returncode == 0, started.stdout + started.stderr
    server = None
    try:
        replicas = {r.service: r for r in read_state(run_dir)}
        server = Prometheus(workdir, [f"{HOST}:{r.metrics_port}" for r in replicas.values()])
        assert wait_for(server.ready, timeout_s=30), (workdir / "prometheus.log").read_text()
        assert wait_for(lambda: server.has(f'count(up{{job="eigenloop"}} == 1) == {len(LIVE)}'), timeout_s=30)
        toolenv, user_sim = replicas["toolenv"].address, replicas["user_sim"].address
        synth = ["synth", "--domain", "airline", "--rounds", "1", "--per-round", "4", "--no-evolve"]
        synth += ["--generator", replicas["generator"].address, "--validator", replicas["validator"].address]
        # Twice: a labelled counter appears with its first increment, so rates need a second round after a scrape.
        for round_ in range(2):
            for command in (
                ["env", "episode", "--domain", "toy", "--address", toolenv],
                ["user-sim", "replay", "--domain", "telecom", "--toolenv", toolenv, "--user-sim", user_sim],
                ["user-sim", "replay", "--domain", "airline", "--toolenv", toolenv, "--user-sim", user_sim],
                [*synth, "--out", str(workdir / f"synth-{round_}")],
            ):
                played = eigenloop(*command)
                assert played.returncode == 0, played.stdout + played.stderr
            assert wait_for(
                lambda: server.has('count(eigenloop_toolenv_reward_count{domain=~"toy|telecom|airline"}) == 3')
            )
        assert wait_for(lambda: server.has("sum(rate(eigenloop_toolenv_evaluations_total[1m])) > 0"), timeout_s=30)
        assert wait_for(lambda: server.has("sum(rate(eigenloop_user_sim_turn_seconds_count[1m])) > 0"), timeout_s=30)
        assert wait_for(lambda: server.has("sum(rate(eigenloop_validator_reports_total[1m])) > 0"), timeout_s=30)
        yield server
    finally:
        if server is not None:
            server.stop()
        eigenloop("down", "--run-dir", str(run_dir))


def test_every_dashboard_query_runs_and_the_live_ones_return_data(prometheus: Prometheus) -> None:
    problems = []
    for name, expr in queries():
        reply = prometheus.query(expr)
        if reply["status"] != "success":
            problems.append(f"{name}: {reply.get('error')}")
        elif all(m.startswith(LIVE_PREFIXES) for m in metric_names(expr)) and not reply["data"]["result"]:
            problems.append(f"{name}: no series for {expr}")
    assert problems == []


def test_dashboard_variables_have_values(prometheus: Prometheus) -> None:
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] != "query":
            continue
        metric, label = re.fullmatch(r"label_values\((\w+), *(\w+)\)", variable["query"]["query"]).groups()  # type: ignore[union-attr]
        values = prometheus.get(f"/api/v1/label/{label}/values", **{"match[]": metric})["data"]
        assert {"toy", "telecom", "airline"} <= set(values)


def test_rules_evaluate_without_errors_on_live_data(prometheus: Prometheus) -> None:
    def evaluated() -> list[dict[str, Any]]:
        groups = prometheus.get("/api/v1/rules")["data"]["groups"]
        return [rule for group in groups for rule in group["rules"]]

    assert wait_for(lambda: all(r.get("lastEvaluation", "").startswith("2") for r in evaluated()), timeout_s=30)
    assert [(r["name"], r.get("lastError")) for r in evaluated() if r["health"] != "ok"] == []
    assert prometheus.has("eigenloop:pass_rate:rate30m")
    assert prometheus.has('eigenloop:grpc_error_ratio:rate5m{grpc_service="eigenloop.v1.ToolEnv"}')
    # Nothing is wrong with this healthy stack: no alert fires.
    assert prometheus.query('ALERTS{alertstate="firing"}')["data"]["result"] == []

"""Domain speed and session memory, measured side by side in one run.

1. Per domain, in-process: tool calls/s over the gold calls of its tasks, and full evaluations/s
   (eval_ms_p50: the first evaluation of each task, gold replay included; eval_ms_p50_cached: repeats).
2. tau2 airline: eigenloop's evaluation vs a full-rebuild evaluator that does what TOOLS.md §3 says tau2's
   does (build fresh environments from db.json for the predicted and the gold run, replay the writes, hash
   the whole DB) — written here for the comparison, not tau2's own code.
3. Memory: 100 concurrent toolenv sessions on tau2's airline DB (7 MB), each having made one write; the RSS
   they add to the toolenv process.

    python benchmarks/domains.py         # needs ../shared/tau2/data for parts 2 and 3 (skipped without)
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write_result
from eigenloop import tau2
from eigenloop.checkers.mutate import gold_trajectory
from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.domains import TAU2_VARIABLE, load_domain, sample_tasks
from eigenloop.domains.airline.db import AirlineDB
from eigenloop.domains.base import Domain, DomainState, ToolKind
from eigenloop.env.remote import ToolEnvClient
from eigenloop.env.session import EnvSession, execute
from tests.support import ServiceProcess

TAU2_DATA = Path(__file__).resolve().parents[2] / "shared" / "tau2" / "data"


def measure(domain: Domain, tasks: list[pb.Task], repeats: int = 3) -> dict[str, float]:
    call_times, first_eval, cached_eval = [], [], []
    for task in tasks:
        trajectory = gold_trajectory(task)
        session = EnvSession(domain, task=task)
        for call in trajectory.calls:
            start = time.perf_counter()
            session.call(call)
            call_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        session.evaluate(trajectory.messages)
        first_eval.append(time.perf_counter() - start)
        for _ in range(repeats):
            start = time.perf_counter()
            session.evaluate(trajectory.messages)
            cached_eval.append(time.perf_counter() - start)
    return {
        "tasks": len(tasks),
        "tool_calls_per_s": round(len(call_times) / sum(call_times)) if call_times else 0,
        "eval_ms_p50": round(statistics.median(first_eval) * 1e3, 3),
        "eval_ms_p50_cached": round(statistics.median(cached_eval) * 1e3, 3),
        "evaluations_per_s": round(len(first_eval) / sum(first_eval), 1),
    }


def full_rebuild_evaluate(db_path: Path, task: pb.Task, calls: list[pb.ToolCall]) -> bool:
    """The DB check the way TOOLS.md describes tau2's: two fresh environments, writes replayed, whole-DB hashes."""
    domain = load_domain("airline")

    def run(replayed: list[pb.ToolCall]) -> str:
        state = DomainState(AirlineDB.model_validate_json(db_path.read_bytes()))
        for call in replayed:
            tool = domain.tool(call.name)
            if tool is not None and tool.kind is ToolKind.WRITE:
                execute(domain, state, call)
        dumped = json.dumps(state.db.model_dump(mode="json"), sort_keys=True, default=str)
        return hashlib.sha256(dumped.encode()).hexdigest()

    return run(calls) == run(list(task.checker.gold_actions))


def tau2_comparison(tasks: list[pb.Task], limit: int = 10) -> dict[str, Any]:
    domain = load_domain("airline@tau2")
    eigen, rebuild, agree = [], [], 0
    for task in tasks[:limit]:
        calls = list(gold_trajectory(task).calls)
        session = EnvSession(domain, task=task)
        for call in calls:
            session.call(call)
        start = time.perf_counter()
        ours = session.evaluate(gold_trajectory(task).messages)
        eigen.append(time.perf_counter() - start)
        start = time.perf_counter()
        theirs = full_rebuild_evaluate(TAU2_DATA / "airline" / "db.json", task, calls)
        rebuild.append(time.perf_counter() - start)
        state_ok = next(b.value for b in ours.breakdown if b.component == pb.REWARD_COMPONENT_STATE) == 1.0
        agree += state_ok == theirs
    return {
        "tasks": len(eigen),
        "eigenloop_eval_ms_p50": round(statistics.median(eigen) * 1e3, 3),
        "full_rebuild_eval_ms_p50": round(statistics.median(rebuild) * 1e3, 1),
        "speedup": round(statistics.median(rebuild) / statistics.median(eigen), 1),
        "same_db_verdicts": f"{agree}/{len(eigen)}",
    }


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def session_memory(task: pb.Task, sessions: int = 100) -> dict[str, float]:
    env = {TAU2_VARIABLE: str(TAU2_DATA)}
    with ServiceProcess("eigenloop_toolenv.server", env=env) as toolenv, ToolEnvClient(toolenv.address) as client:
        write = next(c for c in task.checker.gold_actions if load_domain("airline").tool(c.name).kind is ToolKind.WRITE)  # type: ignore[union-attr]
        with client.session(task=task) as warm:  # loads the DB and its hashes once
            warm.call(write)
            warm.evaluate([])
        before = rss_mb(toolenv.proc.pid)
        opened = [client.session(task=task) for _ in range(sessions)]
        for session in opened:
            assert not session.call(write).error
        after = rss_mb(toolenv.proc.pid)
        for session in opened:
            session.close()
    return {
        "sessions": sessions,
        "rss_mb_before": round(before, 1),
        "rss_mb_after": round(after, 1),
        "rss_mb_per_100_sessions": round((after - before) * 100 / sessions, 1),
    }


def main() -> int:
    result: dict[str, Any] = {"per_domain": {}}
    for name in ["toy", "airline", "retail", "telecom"]:
        result["per_domain"][name] = measure(load_domain(name), sample_tasks(name))
    if TAU2_DATA.is_dir():
        os.environ[TAU2_VARIABLE] = str(TAU2_DATA)
        load_domain.cache_clear()
        for name in ["airline", "retail", "telecom"]:
            tasks = tau2.load_tasks(TAU2_DATA / name / "tasks.json", name, split="train")
            result["per_domain"][f"{name}@tau2"] = measure(load_domain(f"{name}@tau2"), tasks)
        airline = tau2.load_tasks(TAU2_DATA / "airline" / "tasks.json", "airline", split="train")
        result["tau2_airline_eval_vs_full_rebuild"] = tau2_comparison(airline)
        with_write = next(t for t in airline if any(c.name == "cancel_reservation" for c in t.checker.gold_actions))
        result.update(session_memory(with_write))
    else:
        result["skipped"] = f"tau2 data not found at {TAU2_DATA}: parts 2 and 3 not measured"
    result["eval_ms_p50"] = {name: m["eval_ms_p50"] for name, m in result["per_domain"].items()}
    write_result("domains", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Synthesis with the procedural backend: yield per round with evolution and without, from the same seed.

For airline and telecom, 4 rounds x 200 candidates each, embedded (generator and validator in-process, the code
their services run): final-round yield with evolution vs --no-evolve, the accepted tasks' mutation score,
near-duplicates among accepted tasks, and candidates per minute (generation + validation + evolution, wall
clock on this machine). The four runs go two at a time in worker processes.

    .venv/bin/python benchmarks/synthesis.py [--rounds 4] [--per-round 200] [--domains airline telecom]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write_result
from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.data import read_tasks
from eigenloop.llm.procedural import ProceduralBackend
from eigenloop.synthesis.generator import TaskGenerator
from eigenloop.synthesis.pipeline import ValidationCore
from eigenloop.synthesis.prompts import default_prompt_set
from eigenloop.synthesis.run import SynthesisConfig, run_synthesis

SEED = 11


def _run(domain: str, rounds: int, per_round: int, evolve: bool) -> dict[str, Any]:
    backend = ProceduralBackend()
    generator = TaskGenerator(backend)
    validation = ValidationCore(backend, generator)
    config = SynthesisConfig(domain=domain, rounds=rounds, per_round=per_round, seed=SEED, evolve=evolve)
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        summaries = run_synthesis(config, generator, validation, Path(folder), default_prompt_set(domain))
        seconds = time.perf_counter() - started
        accepted = read_tasks(Path(folder) / "accepted.jsonl")
    scores = [(s.mutation_score, s.accepted) for s in summaries if s.mutation_score is not None]
    weight = sum(n for _, n in scores)
    return {
        "yield_per_round": [round(s.yield_, 4) for s in summaries],
        "failures_per_round": [s.failures for s in summaries],
        "final_yield": summaries[-1].yield_,
        "accepted": len(accepted),
        "mutation_score": sum(score * n for score, n in scores) / weight if weight else None,
        "near_duplicate_rate": sum(s.near_duplicate_rate * s.accepted for s in summaries) / max(len(accepted), 1),
        "exact_action_duplicate_rate": _exact_duplicates(accepted),
        "goals_covered": len({t.id.rsplit("-", 1)[-1] for t in accepted}),
        "prompt_set_versions": [s.prompt_set_version for s in summaries],
        "seconds": seconds,
        "tasks_per_min": rounds * per_round / seconds * 60,
    }


def _exact_duplicates(tasks: list[pb.Task]) -> float:
    """Share of accepted tasks whose gold calls (names and arguments) repeat an earlier accepted task's exactly."""
    seen: set[str] = set()
    repeats = 0
    for task in tasks:
        key = json.dumps([(c.name, c.arguments_json) for c in task.checker.gold_actions])
        repeats += key in seen
        seen.add(key)
    return repeats / len(tasks) if tasks else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--per-round", type=int, default=200)
    parser.add_argument("--domains", nargs="+", default=["airline", "telecom"])
    args = parser.parse_args()
    jobs = [(d, evolve) for d in args.domains for evolve in (True, False)]
    with ProcessPoolExecutor(max_workers=2) as pool:
        futures = {job: pool.submit(_run, job[0], args.rounds, args.per_round, job[1]) for job in jobs}
        runs = {job: future.result() for job, future in futures.items()}
    domains = {}
    for domain in args.domains:
        evolved, fixed = runs[(domain, True)], runs[(domain, False)]
        domains[domain] = {
            **evolved,
            "no_evolve_final_yield": fixed["final_yield"],
            "no_evolve_yield_per_round": fixed["yield_per_round"],
            "no_evolve_failures_per_round": fixed["failures_per_round"],
            "evolve_vs_no_evolve": evolved["final_yield"] / fixed["final_yield"] if fixed["final_yield"] else None,
        }
    worst = list(domains.values())
    write_result(
        "synthesis",
        {
            "backend": "procedural",
            "rounds": args.rounds,
            "per_round": args.per_round,
            "seed": SEED,
            # Headline keys: the worst domain for each (lowest yields and score, highest duplicate rate).
            "final_yield": min(d["final_yield"] for d in worst),
            "no_evolve_final_yield": max(d["no_evolve_final_yield"] for d in worst),
            "mutation_score": min(
                (d["mutation_score"] for d in worst if d["mutation_score"] is not None), default=None
            ),
            "near_duplicate_rate": max(d["near_duplicate_rate"] for d in worst),
            "tasks_per_min": min(d["tasks_per_min"] for d in worst),
            "domains": domains,
            "note": "2 shared CPU cores (other work ran on the machine at the same time); two runs in parallel",
        },
    )


if __name__ == "__main__":
    main()

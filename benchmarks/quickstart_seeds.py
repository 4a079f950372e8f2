"""The default quickstart over several seeds: SFT vs GRPO on each seed's held-out tasks, and the means.

Each seed is one `eigenloop quickstart --seed N --out DIR/seed-N`, with `--resume` where the folder holds a run
begun before (a finished one is not run again), so the numbers are exactly what the quickstart reports; this
script collects them into one table.

    python benchmarks/quickstart_seeds.py [--seeds 0 1 2] [--out .eigenloop/quickstart-seeds]

Writes benchmarks/results/quickstart_seeds.json: per seed, held-out pass@1 greedy and sampled (T=1, the mean over
the eval samples per task) and pass^k for the SFT and GRPO models, their failed episodes by kind of mistake
(eigenloop.checkers.diagnose.count_mistakes), the stage times; then the means over seeds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write_result
from eigenloop.checkers.diagnose import count_mistakes
from eigenloop.domains import load_domain
from eigenloop.quickstart.config import read_config

METRICS = ("greedy_pass1", "sampled_pass1", "pass_hat_k")


def run_seed(seed: int, out: Path) -> dict[str, Any]:
    command = [sys.executable, "-m", "eigenloop.cli", "quickstart", "--seed", str(seed), "--out", str(out)]
    if (out / "config.yaml").exists():  # a run begun before: finish it (quickstart refuses --resume of nothing)
        command.append("--resume")
    started = time.perf_counter()
    subprocess.run(command, check=True)
    results = json.loads((out / "eval" / "results.json").read_text())
    stages = json.loads((out / "stages.json").read_text())
    domain = load_domain(read_config(out / "config.yaml").domain)
    return {
        "out": str(out),
        "sft": {m: results["sft"][m] for m in METRICS},
        "grpo": {m: results["grpo"][m] for m in METRICS},
        "grpo_minus_sft": {m: round(results["grpo"][m] - results["sft"][m], 2) for m in METRICS},
        "sft_by_goal": results["sft"]["by_goal"],
        "grpo_by_goal": results["grpo"]["by_goal"],
        "mistakes": {
            model: {mode: count_mistakes(domain, results[model][f"{mode}_failures"]) for mode in ("greedy", "sampled")}
            for model in ("sft", "grpo")
        },
        "stage_seconds": {name: stage["seconds"] for name, stage in stages.items()},
        "seconds_this_call": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path(".eigenloop/quickstart-seeds"))
    args = parser.parse_args()
    per_seed = {str(seed): run_seed(seed, args.out / f"seed-{seed}") for seed in args.seeds}
    means = {
        model: {m: round(statistics.fmean(r[model][m] for r in per_seed.values()), 2) for m in METRICS}
        for model in ("sft", "grpo")
    }
    write_result(
        "quickstart_seeds",
        {
            "seeds": args.seeds,
            "sft_pass1": means["sft"]["greedy_pass1"],
            "grpo_pass1": means["grpo"]["greedy_pass1"],
            "means": means,
            "per_seed": per_seed,
            "note": "held-out pass@1 in percent (tasks of another database world: unseen users and orders), the "
            "quickstart's default configuration; greedy, and sampled at T=1.",
        },
    )


if __name__ == "__main__":
    main()

"""The paper's findings in miniature: one budget, the same seeds, one table.

Rows (each a change of the quickstart configuration, everything else equal):
- data: full synthesis vs --no-evolve vs --no-validate vs --no-diversity -> SFT pass@1 on held-out tasks
  (each variant synthesizes its own data, trains its own tokenizer and SFT model);
- user model: GRPO against the fine-tuned user model vs the base user (the rule-based procedural user, not
  fine-tuned on this data's wording) -> pass@1 after GRPO;
- algorithm: GRPO with vs without dynamic filtering (zero-variance groups), with vs without the SFT loss
  blended in, G=8 vs G=4 (twice the tasks per step: the same episodes per step) -> pass@1 after GRPO.
Every GRPO variant starts from the full-data SFT model and user model of its seed, and every model is
evaluated on that seed's held-out tasks with the fine-tuned user model. Pass@1 values are percent; the
result keeps every seed's numbers next to the means.

    python benchmarks/ablations.py [--seeds 0 1 2] [--out DIR] [--only data|user|algorithm ...]

Writes benchmarks/results/ablations.json. The budget (`bench_config`) is the quickstart default, the same for every
row: one seed of the whole table is four synthesis runs, four agent SFTs, one user SFT, five GRPO runs and nine
evaluations: about 70 minutes on 2 free cores (estimated from the stage times of one default run).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write_result
from eigenloop.data import read_tasks
from eigenloop.quickstart.config import QuickstartConfig
from eigenloop.quickstart.evaluate import goal_of
from eigenloop.quickstart.pipeline import Paths, build_stages, evaluate_models
from eigenloop.quickstart.stages import Stage, run_stages

METRICS = ("greedy_pass1", "sampled_pass1")


def bench_config(seed: int) -> QuickstartConfig:
    # The quickstart's own default budget: a smaller one (4 x 100 candidates, 120 SFT steps) gave SFT models that
    # had learned nothing (0 % on held-out tasks), so every row read 0.
    return QuickstartConfig(seed=seed)


def _with(config: QuickstartConfig, **sections: dict[str, Any]) -> QuickstartConfig:
    updates = {name: getattr(config, name).model_copy(update=values) for name, values in sections.items()}
    return config.model_copy(update=updates)


DATA_VARIANTS: dict[str, dict[str, Any]] = {
    "full": {},
    "no_evolve": {"evolve": False},
    "no_validate": {"validate_tasks": False},
    "no_diversity": {"diversity": False},
}
GRPO_VARIANTS: dict[str, dict[str, Any]] = {
    "grpo (fine-tuned user, filtering, no blend, G=8)": {},
    "user: base (procedural) user model": {"user": "base"},
    "algorithm: no dynamic filtering": {"zero_variance_filter": False},
    "algorithm: SFT blend 0.1": {"sft_weight": 0.1},
    "algorithm: G=4 (16 tasks/step)": {"group_size": 4, "tasks_per_step": 16},
}


def _log(what: str, done: int, total: int, detail: str) -> None:
    if done == total or done % 10 == 0:
        print(f"{time.strftime('%X')} {what} {done}/{total} {detail}", flush=True)


def _select(stages: list[Stage], names: tuple[str, ...]) -> list[Stage]:
    return [s for s in stages if s.name in names]


def data_stats(out: Path) -> dict[str, Any]:
    tasks = read_tasks(Paths(out).train_tasks)
    return {"accepted": len(tasks), "by_type": dict(sorted(Counter(goal_of(t) for t in tasks).items()))}


def data_row(config: QuickstartConfig, base: Path, out: Path, *, train: bool) -> dict[str, Any]:
    """Synthesize with `config`; with `train`, fine-tune on what it accepted and evaluate that SFT model on the
    full run's held-out tasks with the full run's user model (the same yardstick for every data variant)."""
    stages = build_stages(config, out, _log)
    run_stages(_select(stages, ("synth",)), out, resume=True)
    stats = data_stats(out)
    if not train:
        return stats
    if not stats["accepted"]:
        return {**stats, **dict.fromkeys(METRICS), "note": "no accepted task: nothing to fine-tune on"}
    if out != base:
        shutil.copy(Paths(base).heldout_tasks, Paths(out).heldout_tasks)
    run_stages(_select(stages, ("synth", "model", "sft", "user_sft") if out == base else ("synth", "model", "sft")),
               out, resume=True)  # fmt: skip
    results = evaluate_models(
        config, {"sft": Paths(out).sft_model}, out / "eval_sft", _log, heldout=Paths(base).heldout_tasks,
        user_model=Paths(base).user_model,
    )  # fmt: skip
    return {**stats, **{m: results["sft"][m] for m in METRICS}}


def grpo_row(config: QuickstartConfig, base: Path, out: Path) -> dict[str, float]:
    """GRPO from the full-data run's SFT and user models (copied in), then evaluation of the GRPO model."""
    if not (out / "grpo" / "model").is_dir():
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        for stage in ("synth", "model", "sft", "user_sft"):
            shutil.copytree(base / stage, out / stage)
        shutil.copy(base / "stages.json", out / "stages.json")
        run_stages(_select(build_stages(config, out, _log), ("synth", "model", "sft", "user_sft", "grpo")), out,
                   resume=True)  # fmt: skip
    paths = Paths(out)
    results = evaluate_models(
        config, {"grpo": paths.grpo_model}, out / "eval_grpo", _log, heldout=paths.heldout_tasks,
        user_model=paths.user_model,
    )  # fmt: skip
    return {m: results["grpo"][m] for m in METRICS}


def _mean_rows(per_seed: dict[int, dict[str, Any]]) -> dict[str, Any]:
    means = {}
    for m in (*METRICS, "accepted"):
        values = [r[m] for r in per_seed.values() if r.get(m) is not None]
        means[m] = round(statistics.fmean(values), 2) if values else None
    return {**means, "per_seed": {str(s): r for s, r in per_seed.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path(".eigenloop/ablations"))
    groups = ["data", "user", "algorithm"]
    parser.add_argument("--only", nargs="+", choices=groups, default=groups, help="which ablation groups to run")
    parser.add_argument(
        "--synth-only", action="store_true", help="data rows: synthesis statistics only (no training, no GRPO rows)"
    )
    args = parser.parse_args()
    started = time.perf_counter()
    rows: dict[str, dict[int, dict[str, Any]]] = {}

    def announce(name: str, seed: int) -> dict[int, dict[str, Any]]:
        print(f"{time.strftime('%X')} === {name}, seed {seed}", flush=True)
        return rows.setdefault(name, {})

    for seed in args.seeds:
        config = bench_config(seed)
        base = args.out / f"seed-{seed}" / "data-full"
        for name, change in DATA_VARIANTS.items():
            if name != "full" and "data" not in args.only:
                continue
            # Only the full run writes held-out tasks; the variants are evaluated on the same ones.
            variant = _with(config, synth={**change, "heldout": config.synth.heldout if name == "full" else 0})
            out = args.out / f"seed-{seed}" / f"data-{name}"
            announce(f"data: {name}", seed)[seed] = data_row(variant, base, out, train=not args.synth_only)
        if args.synth_only:
            continue
        for name, change in GRPO_VARIANTS.items():
            kind = "user" if name.startswith("user") else "algorithm" if name.startswith("algorithm") else "grpo"
            if kind != "grpo" and kind not in args.only:
                continue
            variant = _with(config, grpo=change)
            out = args.out / f"seed-{seed}" / f"grpo-{list(GRPO_VARIANTS).index(name)}"
            announce(name, seed)[seed] = grpo_row(variant, base, out)

    table = {name: _mean_rows(per_seed) for name, per_seed in rows.items()}
    grpo = table.get(next(iter(GRPO_VARIANTS)), {})
    write_result(
        "ablations",
        {
            "sft_pass1": table["data: full"].get("greedy_pass1"),
            "grpo_pass1": grpo.get("greedy_pass1"),
            "sft_pass1_sampled": table["data: full"].get("sampled_pass1"),
            "grpo_pass1_sampled": grpo.get("sampled_pass1"),
            "ran": "synthesis statistics only (--synth-only)" if args.synth_only else f"groups {args.only}",
            "seeds": args.seeds,
            "rows": table,
            "budget": bench_config(0).model_dump(mode="json"),
            "seconds": round(time.perf_counter() - started, 1),
            "note": "pass@1 in percent on held-out tasks (unseen entities): greedy, and sampled at T=1 "
            f"(mean over {bench_config(0).eval.samples} samples per task); means over the seeds listed.",
        },
    )


if __name__ == "__main__":
    main()

"""The paper's findings in miniature: one budget, the same seeds, one table.

Rows (each a change of the quickstart configuration, everything else equal):
- data: full synthesis vs --no-evolve vs --no-validate vs --no-diversity -> SFT pass@1 on held-out tasks
  (each variant synthesizes its own data, trains its own tokenizer and SFT model);
- user model: GRPO against the fine-tuned user model vs the base user (the rule-based procedural user, not
  fine-tuned on this data's wording) -> pass@1 after GRPO;
- algorithm: GRPO with vs without dynamic filtering (zero-variance groups), with vs without the SFT loss
  blended in, G=8 vs G=4 (twice the tasks per step: the same episodes per step) -> pass@1 after GRPO; and no
  GRPO at all, its wall time spent on SFT instead (more SFT steps from scratch on the same data) -> SFT pass@1.
Every GRPO variant starts from the full-data SFT model and user model of its seed, and every model is
evaluated on that seed's held-out tasks with the fine-tuned user model. Pass@1 values are percent; the
result keeps every seed's numbers next to the means.

    python benchmarks/ablations.py [--seeds 0 1 2] [--out DIR] [--base DIR] [--only data|user|algorithm ...]

Writes benchmarks/results/ablations.json, after every row (a stopped run keeps the rows it finished). The budget
(`bench_config`) is the quickstart default, the same for every row. The full-data row and the default GRPO row are
the default quickstart run of the seed, shared with benchmarks/quickstart_seeds.py (`--base`, run there if missing),
so they are the numbers the quickstart reports. Each other row keeps its result in `<out>/seed-N/<row>/row.json`
and is not run again. The rest of one seed is three synthesis runs with their agent SFTs and four GRPO runs, each
followed by an evaluation.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write_result
from benchmarks.quickstart_seeds import run_seed
from eigenloop.data import read_tasks, write_json_atomic
from eigenloop.quickstart.config import QuickstartConfig
from eigenloop.quickstart.evaluate import goal_of
from eigenloop.quickstart.pipeline import STAGE_NAMES, Paths, build_stages, evaluate_models
from eigenloop.quickstart.stages import finished_stages, run_stages

METRICS = ("greedy_pass1", "sampled_pass1")


def bench_config(seed: int) -> QuickstartConfig:
    # The quickstart's own default budget: a smaller one (4 x 100 candidates, 120 SFT steps) gave SFT models that
    # had learned nothing (0 % on held-out tasks), so every row read 0.
    return QuickstartConfig(seed=seed)


def _with(config: QuickstartConfig, **sections: dict[str, Any]) -> QuickstartConfig:
    updates = {name: getattr(config, name).model_copy(update=values) for name, values in sections.items()}
    return config.model_copy(update=updates)


DATA_VARIANTS: dict[str, dict[str, Any]] = {
    "no_evolve": {"evolve": False},
    "no_validate": {"validate_tasks": False},
    "no_diversity": {"diversity": False},
}
DEFAULT_GRPO = "grpo (fine-tuned user, filtering, no blend, G=8)"
LONGER_SFT = "algorithm: no GRPO, SFT for its time too"
GRPO_VARIANTS: dict[str, dict[str, Any]] = {
    "user: base (procedural) user model": {"user": "base"},
    "algorithm: no dynamic filtering": {"zero_variance_filter": False},
    "algorithm: SFT blend 0.1": {"sft_weight": 0.1},
    "algorithm: G=4 (16 tasks/step)": {"group_size": 4, "tasks_per_step": 16},
}


def _log(what: str, done: int, total: int, detail: str) -> None:
    if done == total or done % 10 == 0:
        print(f"{time.strftime('%X')} {what} {done}/{total} {detail}", flush=True)


def _run_through(config: QuickstartConfig, out: Path, last: str) -> None:
    """Run (or resume) the pipeline's stages up to `last`, or up to the last one already finished in `out`."""
    through = max(STAGE_NAMES.index(name) for name in (last, *finished_stages(out)))
    stages = [s for s in build_stages(config, out, _log) if s.name in STAGE_NAMES[: through + 1]]
    run_stages(stages, out, resume=True)


Row = Callable[[QuickstartConfig, Path, Path], dict[str, Any]]


def _cached(run_row: Row, config: QuickstartConfig, base: Path, out: Path) -> dict[str, Any]:
    """A row's result, computed once: `out/row.json` holds it for every later run."""
    path = out / "row.json"
    if path.exists():
        return dict(json.loads(path.read_text()))
    started = time.perf_counter()
    row = {**run_row(config, base, out), "seconds": round(time.perf_counter() - started, 1)}
    write_json_atomic(path, row)
    return row


def data_stats(out: Path) -> dict[str, Any]:
    tasks = read_tasks(Paths(out).train_tasks)
    return {"accepted": len(tasks), "by_type": dict(sorted(Counter(goal_of(t) for t in tasks).items()))}


def base_rows(base: Path) -> dict[str, dict[str, Any]]:
    """The full-data SFT row and the default GRPO row: the base run's own evaluation."""
    results = json.loads((base / "eval" / "results.json").read_text())
    return {
        "data: full": {**data_stats(base), **{m: results["sft"][m] for m in METRICS}},
        DEFAULT_GRPO: {m: results["grpo"][m] for m in METRICS},
    }


def _sft_scores(config: QuickstartConfig, base: Path, out: Path) -> dict[str, Any]:
    """The SFT model in `out` on the base run's held-out tasks with the base run's user model (the same yardstick
    for every SFT row)."""
    results = evaluate_models(
        config, {"sft": Paths(out).sft_model}, out / "eval_sft", _log, heldout=Paths(base).heldout_tasks,
        user_model=Paths(base).user_model,
    )  # fmt: skip
    return {m: results["sft"][m] for m in METRICS}


def data_row(config: QuickstartConfig, base: Path, out: Path) -> dict[str, Any]:
    """Synthesize with `config`, fine-tune on what it accepted and score that SFT model (`_sft_scores`)."""
    _run_through(config, out, "synth")
    stats = data_stats(out)
    if not stats["accepted"]:
        return {**stats, **dict.fromkeys(METRICS), "note": "no accepted task: nothing to fine-tune on"}
    # The SFT stage's held-out loss, like the evaluation, uses the base run's held-out tasks.
    if not Paths(out).heldout_tasks.exists():
        shutil.copy(Paths(base).heldout_tasks, Paths(out).heldout_tasks)
    _run_through(config, out, "sft")
    return {**stats, **_sft_scores(config, base, out)}


def _start_from(base: Path, out: Path, last: str) -> None:
    """`out` holds the base run's stages up to `last` (copied, records included) unless it got that far."""
    if last in finished_stages(out):
        return
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    kept = STAGE_NAMES[: STAGE_NAMES.index(last) + 1]
    for stage in kept:
        shutil.copytree(base / stage, out / stage)
    records = json.loads((base / "stages.json").read_text())
    write_json_atomic(out / "stages.json", {k: v for k, v in records.items() if k in kept})


def grpo_row(config: QuickstartConfig, base: Path, out: Path) -> dict[str, Any]:
    """GRPO from the base run's SFT and user models (copied in), then evaluation of the GRPO model."""
    _start_from(base, out, "user_sft")
    _run_through(config, out, "grpo")
    paths = Paths(out)
    results = evaluate_models(
        config, {"grpo": paths.grpo_model}, out / "eval_grpo", _log, heldout=paths.heldout_tasks,
        user_model=paths.user_model,
    )  # fmt: skip
    return {m: results["grpo"][m] for m in METRICS}


def matched_sft_steps(config: QuickstartConfig, base: Path) -> int:
    """SFT steps that take as long as the base run's SFT and GRPO stages together (by their measured seconds)."""
    seconds = {name: record.seconds for name, record in finished_stages(base).items()}
    return config.sft.steps + round(seconds["grpo"] * config.sft.steps / seconds["sft"])


def longer_sft_row(config: QuickstartConfig, base: Path, out: Path) -> dict[str, Any]:
    """SFT on the base run's data and tokenizer for `config.sft.steps` (GRPO's time spent on SFT instead), then
    evaluation of that SFT model like every other row."""
    _start_from(base, out, "model")
    _run_through(config, out, "sft")
    return {"sft_steps": config.sft.steps, **_sft_scores(config, base, out)}


def _mean_rows(per_seed: dict[int, dict[str, Any]]) -> dict[str, Any]:
    means = {}
    for m in (*METRICS, "accepted"):
        values = [r[m] for r in per_seed.values() if r.get(m) is not None]
        means[m] = round(statistics.fmean(values), 2) if values else None
    return {**means, "per_seed": {str(s): r for s, r in per_seed.items()}}


# The paper's directions: (claim, the row it favours, the row it is compared with).
DIRECTIONS = (
    ("evolution raises SFT pass@1", "data: full", "data: no_evolve"),
    ("validation raises SFT pass@1", "data: full", "data: no_validate"),
    ("diversity filtering raises SFT pass@1", "data: full", "data: no_diversity"),
    ("GRPO raises pass@1 over SFT", DEFAULT_GRPO, "data: full"),
    ("the fine-tuned user model beats the base user for GRPO", DEFAULT_GRPO, "user: base (procedural) user model"),
    ("dynamic filtering helps GRPO", DEFAULT_GRPO, "algorithm: no dynamic filtering"),
    ("SFT blending helps GRPO", "algorithm: SFT blend 0.1", DEFAULT_GRPO),
    ("G=8 beats G=4 at the same episodes per step", DEFAULT_GRPO, "algorithm: G=4 (16 tasks/step)"),
    ("GRPO beats spending its time on more SFT", DEFAULT_GRPO, LONGER_SFT),
)


def directions(rows: dict[str, dict[int, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Each claim's difference (favoured row minus the other) per metric, over the seeds both rows have; a row
    with no SFT model (nothing accepted) counts as 0 %, what its agent would score."""
    out = {}
    for claim, favoured, other in DIRECTIONS:
        seeds = sorted(set(rows.get(favoured, {})) & set(rows.get(other, {})))
        if not seeds:
            continue
        diffs = {
            m: round(statistics.fmean((rows[favoured][s].get(m) or 0.0) - (rows[other][s].get(m) or 0.0)
                                      for s in seeds), 2)
            for m in METRICS
        }  # fmt: skip
        out[claim] = {"favoured": favoured, "other": other, "seeds": seeds, "difference_points": diffs}
    return out


def write_table(rows: dict[str, dict[int, dict[str, Any]]], args: argparse.Namespace, seconds: float) -> None:
    table = {name: _mean_rows(per_seed) for name, per_seed in rows.items()}
    write_result(
        "ablations",
        {
            "sft_pass1": table.get("data: full", {}).get("greedy_pass1"),
            "grpo_pass1": table.get(DEFAULT_GRPO, {}).get("greedy_pass1"),
            "sft_pass1_sampled": table.get("data: full", {}).get("sampled_pass1"),
            "grpo_pass1_sampled": table.get(DEFAULT_GRPO, {}).get("sampled_pass1"),
            "ran": f"groups {args.only}",
            "seeds": args.seeds,
            "rows": table,
            "directions": directions(rows),
            "budget": bench_config(0).model_dump(mode="json"),
            "seconds_this_call": round(seconds, 1),
            "note": "pass@1 in percent on held-out tasks (unseen entities): greedy, and sampled at T=1 "
            f"(mean over {bench_config(0).eval.samples} samples per task); means over the seeds each row lists "
            "(a row not yet run at a seed has no entry for it).",
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path(".eigenloop/ablations"))
    parser.add_argument(
        "--base", type=Path, default=Path(".eigenloop/quickstart-seeds"),
        help="default quickstart runs, one per seed (seed-N), as benchmarks/quickstart_seeds.py writes them",
    )  # fmt: skip
    groups = ["data", "user", "algorithm"]
    parser.add_argument("--only", nargs="+", choices=groups, default=groups, help="which ablation groups to run")
    args = parser.parse_args()
    started = time.perf_counter()
    rows: dict[str, dict[int, dict[str, Any]]] = {}
    for seed in args.seeds:
        config = bench_config(seed)
        base = args.base / f"seed-{seed}"
        run_seed(seed, base)
        for name, row in base_rows(base).items():
            rows.setdefault(name, {})[seed] = row
        variants = [(f"data: {name}", f"data-{name}", _with(config, synth={**change, "heldout": 0}), data_row)
                    for name, change in DATA_VARIANTS.items() if "data" in args.only]  # fmt: skip
        variants += [(name, f"grpo-{i + 1}", _with(config, grpo=change), grpo_row)
                     for i, (name, change) in enumerate(GRPO_VARIANTS.items())
                     if name.split(":")[0] in args.only]  # fmt: skip
        if "algorithm" in args.only:
            longer = _with(config, sft={"steps": matched_sft_steps(config, base)})
            variants.append((LONGER_SFT, "sft-longer", longer, longer_sft_row))
        for name, folder, variant, run_row in variants:
            print(f"{time.strftime('%X')} === {name}, seed {seed}", flush=True)
            out = args.out / f"seed-{seed}" / folder
            rows.setdefault(name, {})[seed] = _cached(run_row, variant, base, out)
            write_table(rows, args, time.perf_counter() - started)
    write_table(rows, args, time.perf_counter() - started)


if __name__ == "__main__":
    main()

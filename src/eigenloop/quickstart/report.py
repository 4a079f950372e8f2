"""The quickstart report: what was synthesized, how training went, and SFT vs GRPO on held-out tasks.

Every number in it is read from the files the stages wrote (synth/rounds/*/summary.json, */metrics.jsonl,
eval/results.json, stages.json), so the report and the data can be checked against each other.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from eigenloop.checkers.diagnose import MISTAKE_KINDS, WRONG_CHOICE, count_mistakes
from eigenloop.data import read_tasks
from eigenloop.domains import load_domain
from eigenloop.quickstart.config import QuickstartConfig
from eigenloop.quickstart.evaluate import goal_of
from eigenloop.quickstart.pipeline import STAGE_NAMES
from eigenloop.quickstart.stages import finished_stages
from eigenloop.reporting import Cell, line_plot, markdown_table, stacked_bar_plot, write_report
from eigenloop.synthesis.run import complete_rounds, round_dir

METRICS_TABLE = ["greedy_pass1", "sampled_pass1", "pass_hat_k"]


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _series(rows: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    points = [(float(r["step"]), float(r[key])) for r in rows if isinstance(r.get(key), int | float)]
    return [p[0] for p in points], [p[1] for p in points]


def results_table(results: dict[str, Any]) -> str:
    """SFT vs GRPO, in percent, exactly as eval/results.json holds them."""
    k = results["sft"]["k"]
    header = ["model", "pass@1 greedy (%)", f"pass@1 sampled T=1, k={k} (%)", f"pass^{k} (%)", "tasks"]
    rows = [[name, *(results[name][m] for m in METRICS_TABLE), results[name]["tasks"]] for name in ("sft", "grpo")]
    rows.append(["GRPO - SFT", *(round(results["grpo"][m] - results["sft"][m], 2) for m in METRICS_TABLE), None])
    return markdown_table(header, rows, digits=2)


def _plots(config: QuickstartConfig, out: Path, folder: Path) -> list[str]:
    shown = []
    sft, user = read_metrics(out / "sft" / "metrics.jsonl"), read_metrics(out / "user_sft" / "metrics.jsonl")
    series = {"agent SFT train": _series(sft, "train_loss"), "agent SFT held-out": _series(sft, "eval_loss"),
              "user SFT train": _series(user, "train_loss")}  # fmt: skip
    line_plot(folder / "sft_loss.png", {k: v for k, v in series.items() if v[0]}, title="SFT loss", xlabel="step",
              ylabel="NLL per target token")  # fmt: skip
    shown.append("![SFT loss](report/sft_loss.png)")
    grpo = read_metrics(out / "grpo" / "metrics.jsonl")
    if grpo:
        line_plot(folder / "grpo_reward.png", {"reward mean": _series(grpo, "reward_mean"),
                  "pass rate": _series(grpo, "pass_rate")}, title="GRPO rollouts (training tasks, T=1)",
                  xlabel="step", ylabel="share")  # fmt: skip
        steps = [str(int(r["step"])) for r in grpo]
        stacks = {
            "trained": [float(r.get("groups_trained", 0)) for r in grpo],
            "dropped: zero variance": [float(r.get("filtered_zero_variance", 0)) for r in grpo],
            "dropped: too small": [float(r.get("filtered_group_too_small", 0)) for r in grpo],
        }
        stacked_bar_plot(folder / "grpo_groups.png", steps, stacks, title="GRPO groups per step (dynamic filtering)",
                         ylabel="groups")  # fmt: skip
        shown += ["![GRPO reward](report/grpo_reward.png)", "![GRPO groups](report/grpo_groups.png)"]
    return shown


def _filtered(out: Path) -> str:
    """What dynamic filtering dropped over the whole GRPO run (episodes or groups, as the reason says)."""
    totals: Counter[str] = Counter()
    for row in read_metrics(out / "grpo" / "metrics.jsonl"):
        for key, value in row.items():
            if key.startswith("filtered_") and isinstance(value, int | float):
                totals[key.removeprefix("filtered_")] += int(value)
    if not totals:
        return "GRPO dropped nothing."
    rows: list[list[Cell]] = [[reason, count] for reason, count in sorted(totals.items())]
    return "Dropped by GRPO's filters over the run:\n\n" + markdown_table(["reason", "count"], rows)


def _coverage(out: Path) -> str:
    train = Counter(goal_of(t) for t in read_tasks(out / "synth" / "accepted.jsonl"))
    held = Counter(goal_of(t) for t in read_tasks(out / "synth" / "heldout.jsonl"))
    goals = sorted(set(train) | set(held))
    return markdown_table(["task type", "training tasks", "held-out tasks"], [[g, train[g], held[g]] for g in goals])


def _by_goal(results: dict[str, Any]) -> str:
    goals = sorted(set(results["sft"]["by_goal"]) | set(results["grpo"]["by_goal"]))
    rows = [[g, results["sft"]["by_goal"].get(g), results["grpo"]["by_goal"].get(g)] for g in goals]
    return markdown_table(["task type", "SFT greedy pass@1 (%)", "GRPO greedy pass@1 (%)"], rows, digits=1)


FailureCounts = dict[tuple[str, str], dict[str, int]]


def _failure_counts(results: dict[str, Any]) -> FailureCounts | None:
    """Failed held-out episodes by label for (model, mode) SFT and GRPO, greedy and sampled; None for a run
    evaluated before the breakdown existed."""
    columns = [(model, mode) for mode in ("greedy", "sampled") for model in ("sft", "grpo")]
    counts = {c: results[c[0]].get(f"{c[1]}_failures") for c in columns}
    return None if any(v is None for v in counts.values()) else counts


def _header(first: str, counts: FailureCounts) -> list[str]:
    return [first, *(f"{model.upper()} {mode}" for model, mode in counts)]


def _failures(counts: FailureCounts | None) -> str:
    if counts is None:
        return "This run's evaluation recorded no failure breakdown."
    labels = sorted(
        {label for v in counts.values() for label in v}, key=lambda x: (-sum(v.get(x, 0) for v in counts.values()), x)
    )
    rows: list[list[Cell]] = [[label, *(column.get(label, 0) for column in counts.values())] for label in labels]
    return (
        "How the failed held-out episodes failed (episodes; `eigenloop.checkers.diagnose`: the first place each "
        "departs from its task's gold actions, e.g. `cancel_order: wrong reason` is a cancellation with the wrong "
        "reason, `malformed tool call` a call nobody could parse):\n\n"
        + markdown_table(_header("how it failed", counts), rows)
    )


def _mistakes(domain: str, counts: FailureCounts | None, tasks: int, samples: int) -> str:
    """The failures by kind of mistake (`mistake_kind`), which kind the SFT model's greedy failures are most, and
    how far pass@1 could rise if GRPO repaired all of its wrong choices."""
    if counts is None:
        return ""
    known = load_domain(domain)
    kinds = {column: count_mistakes(known, labels) for column, labels in counts.items()}
    rows: list[list[Cell]] = [
        [kind, *(k.get(kind, 0) for k in kinds.values())]
        for kind in MISTAKE_KINDS
        if any(kind in k for k in kinds.values())
    ]
    sft = kinds[("sft", "greedy")]
    most = ""
    if sft:
        kind = max(sft, key=sft.__getitem__)
        greedy_room = 100 * sft.get(WRONG_CHOICE, 0) / tasks
        sampled_room = 100 * kinds[("sft", "sampled")].get(WRONG_CHOICE, 0) / (tasks * samples)
        most = (
            f" The most common among the SFT model's {sum(sft.values())} failed greedy episodes: {kind} ({sft[kind]})."
            " A GRPO that repaired every wrong choice of the SFT model and broke nothing would raise pass@1 by "
            f"{greedy_room:.1f} points greedy and {sampled_room:.1f} sampled."
        )
    return (
        "The same episodes by kind of mistake. A wrong value is a free-form argument (an id, an address) the agent "
        "must carry over from the dialogue: a skill, which it learns by imitating more of it. A wrong choice is an "
        "argument from a fixed set of options, a forbidden call or a call never made: a decision, which GRPO can "
        f"learn from reward where the policy sometimes samples the right option.{most}\n\n"
        + markdown_table(_header("kind of mistake", counts), rows)
    )


def _task_draws(config: QuickstartConfig, summary: dict[str, Any]) -> str:
    """Which task families GRPO rolled out, and their pass rate at T=1 when it stopped (pass_rate sampling)."""
    state = summary.get("tasks", {})
    if config.grpo.task_sampling != "pass_rate" or "draws" not in state:
        return "GRPO drew its tasks uniformly: every training task once per pass, in a seeded order."
    rows = [
        [family, draws, None if state["pass_rate"][family] is None else 100 * state["pass_rate"][family]]
        for family, draws in sorted(state["draws"].items(), key=lambda item: -item[1])
    ]
    return (
        "GRPO drew task families (the agent's gold tool sequence) by how often their recent groups had mixed "
        "rewards, so families the policy always solved were rolled out rarely:\n\n"
        + markdown_table(["task family", "groups drawn", "recent pass rate at T=1 (%)"], rows, digits=1)
    )


def write_quickstart_report(config: QuickstartConfig, out: Path) -> tuple[Path, Path]:
    folder = out / "report"
    stages = finished_stages(out)
    synth_out = out / "synth"
    rounds = [json.loads((round_dir(synth_out, r) / "summary.json").read_text()) for r in complete_rounds(synth_out)]
    results = json.loads((out / "eval" / "results.json").read_text())
    failures = _failure_counts(results)
    sft_summary, grpo_summary = stages["sft"].summary, stages["grpo"].summary
    examples = int(sft_summary["examples"])
    epochs = config.sft.steps * config.sft.batch_size / max(examples, 1)
    order = [name for name in STAGE_NAMES if name in stages]
    timing = markdown_table(["stage", "seconds"], [[name, stages[name].seconds] for name in order], digits=1)
    delta_g = results["grpo"]["greedy_pass1"] - results["sft"]["greedy_pass1"]
    delta_s = results["grpo"]["sampled_pass1"] - results["sft"]["sampled_pass1"]
    verdict = (
        f"GRPO vs SFT on held-out tasks, pass@1: {delta_g:+.1f} points greedy, {delta_s:+.1f} points sampled "
        f"(seed {config.seed})."
    )
    rounds_table = markdown_table(
        ["round", "generated", "accepted", "yield", "failures"],
        [[r["round"], r["generated"], r["accepted"], r["accepted"] / max(r["generated"], 1),
          ", ".join(f"{k} {v}" for k, v in r["failures"].items()) or "-"] for r in rounds],
    )  # fmt: skip
    markdown = "\n\n".join(
        [
            f"# eigenloop quickstart: {config.domain}, seed {config.seed}{' (--fast)' if config.fast else ''}",
            f"**{verdict}**",
            results_table(results),
            "pass@1 greedy: one episode per held-out task at temperature 0. pass@1 sampled: the mean over "
            f"{config.eval.samples} episodes per task at temperature 1. pass^{config.eval.samples}: the share of "
            "tasks where every sampled episode passed. A task passes when its checker gives reward 1. The "
            f"{results['sft']['tasks']} held-out tasks come from another database world; none of their user or "
            "order ids occurs in any training task. The simulated user is the fine-tuned user model at "
            "temperature 0 (served by user_sim), in training and in evaluation; its SFT starts from the agent's "
            "SFT model, which stands in for a pretrained base.",
            "## What leaves the SFT model imperfect",
            f"Nothing in the data was corrupted: every SFT dialogue is an accepted task whose gold replay passes "
            f"its own checker. What limits the SFT model is the demo's budget: {config.sft.steps} SFT steps of "
            f"{config.sft.batch_size} dialogues over {examples} accepted dialogues (about {epochs:.1f} epochs) "
            f"for a {stages['model'].summary['parameters']:,}-parameter model trained from scratch, and what the "
            f"synthesis produced at this budget: round 1's naive prompts got {rounds[0]['accepted']} of "
            f"{rounds[0]['generated']} candidates accepted, so the training set is mostly what the evolved prompts "
            "wrote in the later rounds, and the task types are covered unevenly:",
            _coverage(out),
            "Greedy pass@1 by task type (held-out):",
            _by_goal(results),
            _failures(failures),
            _mistakes(config.domain, failures, results["sft"]["tasks"], config.eval.samples),
            "## Synthesis",
            f"{config.synth.rounds} rounds x {config.synth.per_round} candidates with the offline procedural "
            "backend (labelled `procedural` in every task's provenance). Round 1 uses the naive initial prompts; "
            "each later round uses the prompt set evolution chose from the previous round's failures. Full "
            "synthesis report: [synth/report.md](synth/report.md).",
            rounds_table,
            "![yield per round](synth/yield.png)",
            "![failure categories](synth/failures.png)",
            "## Training",
            f"Agent SFT: {config.sft.steps} steps; user-model SFT: {config.user_sft.steps} steps; GRPO: "
            f"{config.grpo.steps} steps of {config.grpo.tasks_per_step} tasks x G={config.grpo.group_size} at "
            f"temperature 1, lr {config.grpo.lr:g}, dynamic filtering "
            f"{'on' if config.grpo.zero_variance_filter else 'off'}"
            f"{' (refilled to a full batch)' if config.grpo.refill else ''}, "
            f"SFT blend weight {config.grpo.sft_weight:g}; "
            f"{grpo_summary['episodes']} GRPO episodes ({grpo_summary['simulator_invalid']} with an invalid "
            f"simulated user turn, {grpo_summary['infra_dropped']} dropped by infrastructure, "
            f"{grpo_summary['format_errors']} malformed tool calls).",
            _filtered(out),
            _task_draws(config, grpo_summary),
            *_plots(config, out, folder),
            "## Run",
            "Stage wall times (2 CPU cores; the machine may have been shared):",
            timing,
            "Files: `config.yaml` (the exact configuration), `synth/` (tasks, per-round reports), `model/` "
            "(tokenizer and initial models), `sft/`, `user_sft/`, `grpo/` (checkpoints, `metrics.jsonl`, final "
            "`model/`), `eval/` (trajectories and `results.json`).",
        ]
    )
    return write_report(out, markdown, f"eigenloop quickstart: {config.domain}")

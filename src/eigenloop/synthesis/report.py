"""The run report: a markdown/HTML document with a table per round and three plots (yield, failures, diversity)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from eigenloop.reporting import line_plot, markdown_table, stacked_bar_plot, write_report
from eigenloop.synthesis.run import RoundSummary, SynthesisConfig


def write_synthesis_report(out: Path, config: SynthesisConfig, summaries: Sequence[RoundSummary]) -> Path:
    rounds = [float(s.round) for s in summaries]
    line_plot(
        out / "yield.png",
        {"yield": (rounds, [s.yield_ for s in summaries])},
        title=f"{config.domain}: yield per round",
        xlabel="round",
        ylabel="accepted / generated",
    )
    categories = sorted({c for s in summaries for c in s.failures})
    stacked_bar_plot(
        out / "failures.png",
        [str(s.round) for s in summaries],
        {c: [float(s.failures.get(c, 0)) for s in summaries] for c in categories},
        title=f"{config.domain}: rejected candidates by failure category",
        ylabel="candidates",
    )
    line_plot(
        out / "diversity.png",
        {
            "mean similarity to nearest earlier accepted task": (
                rounds,
                [s.mean_nearest_similarity for s in summaries],
            ),
            "near-duplicate rate": (rounds, [s.near_duplicate_rate for s in summaries]),
        },
        title=f"{config.domain}: diversity of accepted tasks",
        xlabel="round",
        ylabel="share / similarity",
    )
    switches = [name for name, on in (("evolve", config.evolve), ("validate", config.validate_tasks),
                                      ("diversity", config.diversity)) if not on]  # fmt: skip
    table = markdown_table(
        ["round", "prompt set", "generated", "accepted", "yield", "mutation score", "near-dup rate", "goals",
         "failures"],
        [
            [s.round, s.prompt_set_version, s.generated, s.accepted, s.yield_, s.mutation_score,
             s.near_duplicate_rate, s.goals, ", ".join(f"{k} {v}" for k, v in s.failures.items()) or "-"]
            for s in summaries
        ],
    )  # fmt: skip
    markdown = "\n\n".join(
        [
            f"# Synthesis: {config.domain}",
            f"{config.rounds} rounds x {config.per_round} candidates, seed {config.seed}"
            + (f"; switched off: {', '.join(switches)}" if switches else "")
            + ". Tasks written by the backend named in each task's provenance (`procedural` = the offline "
            "procedural backend, see services/generator/README.md).",
            table,
            "Yield is accepted / generated (candidates the generator failed to write count as generated). "
            "Failures count each rejected candidate once, by the first validator that rejected it. The mutation "
            "score is the mean over accepted tasks; near-duplicates are measured against earlier accepted tasks "
            "with the validator's own detector, so with the diversity agent on they are 0 by construction.",
            "![yield](yield.png)",
            "![failures](failures.png)",
            "![diversity](diversity.png)",
        ]
    )
    md_path, _ = write_report(out, markdown + "\n", f"Synthesis: {config.domain}")
    return md_path

"""Synthesis for the quickstart: rounds of generate → validate → evolve (eigenloop.synthesis.run), then a
held-out evaluation set of unseen entities.

Generator, validator and toolenv run as services on loopback (the launcher); the generator and validator use
their default backend, the offline procedural one (labelled `procedural` in every task's provenance). The
held-out tasks are generated with the final evolved prompt set in another world (another database seed,
whose users and orders carry other ids), validated the same way, and any task naming an id that occurs in the
training tasks is dropped: the evaluation never sees an entity the agent was trained on.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.contracts.v1 import validator_pb2 as vpb
from eigenloop.data import read_tasks, write_jsonl
from eigenloop.quickstart import services
from eigenloop.quickstart.config import QuickstartConfig
from eigenloop.synthesis.clients import GeneratorClient, ValidatorClient
from eigenloop.synthesis.prompts import default_prompt_set
from eigenloop.synthesis.run import SynthesisConfig, round_dir, run_synthesis

HELDOUT_SEED_OFFSET = 7919  # another world: with the toy shop's 400 id blocks, never the training world's ids
IDENTIFIER = re.compile(r"\b[A-Z]\d{4,}\b")

Progress = Callable[[int, int, int], None]


def synthesis_config(config: QuickstartConfig) -> SynthesisConfig:
    s = config.synth
    return SynthesisConfig.model_validate(
        {
            "domain": config.domain,
            "rounds": s.rounds,
            "per_round": s.per_round,
            "seed": config.seed,
            "evolve": s.evolve,
            "validate_tasks": s.validate_tasks,
            "diversity": s.diversity,
            "minibatch": s.minibatch,
        }
    )


def identifiers(task: pb.Task) -> set[str]:
    """Entity ids a task mentions anywhere (dialogue, instruction, checker)."""
    return set(IDENTIFIER.findall(json_format.MessageToJson(task)))


def synthesize(config: QuickstartConfig, out: Path, progress: Progress | None = None) -> dict[str, Any]:
    """`out/accepted.jsonl` (training tasks, all rounds), the per-round folders and `out/heldout.jsonl`."""
    sconfig = synthesis_config(config)
    wanted: dict[str, dict[str, str]] = {"toolenv": {}, "generator": {}, "validator": {}}
    with services.running(out / "services", wanted) as addresses:
        generator = GeneratorClient(addresses["generator"])
        validator = ValidatorClient(addresses["validator"])
        try:
            summaries = run_synthesis(
                sconfig, generator, validator, out, default_prompt_set(config.domain), progress=progress
            )
            train = read_tasks(out / "accepted.jsonl")
            final = json_format.Parse((round_dir(out, sconfig.rounds) / "prompt_set.json").read_text(), pb.PromptSet())
            heldout = heldout_tasks(config, generator, validator, final, train) if config.synth.heldout else []
        finally:
            generator.close()
            validator.close()
    if heldout:
        write_jsonl(out / "heldout.jsonl", heldout)
    return {
        "rounds": [
            {"round": s.round, "generated": s.generated, "accepted": s.accepted, "failures": s.failures}
            for s in summaries
        ],
        "train_tasks": len(train),
        "heldout_tasks": len(heldout),
    }


def heldout_tasks(
    config: QuickstartConfig,
    generator: GeneratorClient,
    validator: ValidatorClient,
    prompt_set: pb.PromptSet,
    train: list[pb.Task],
) -> list[pb.Task]:
    seen = set().union(*(identifiers(t) for t in train)) if train else set()
    seed = config.seed + HELDOUT_SEED_OFFSET
    run_id = f"heldout-{config.domain}-{seed}"  # its own accepted set: held-out tasks are not near-duplicates
    kept: list[pb.Task] = []
    # Generate in batches until enough tasks pass; a bounded number of tries so a domain that cannot
    # produce unseen entities fails loudly instead of looping.
    for attempt in range(10):
        generated = generator.generate(config.domain, config.synth.heldout, seed, prompt_set, 100 + attempt)
        fresh = [g.task for g in generated if g.HasField("task") and not identifiers(g.task) & seen]
        reports = validator.validate(fresh, vpb.ValidationOptions(), run_id=run_id)
        for task, report in zip(fresh, reports, strict=True):
            if not report.accepted:
                continue
            task.id = f"heldout-{len(kept):04d}"
            kept.append(task)
            if len(kept) == config.synth.heldout:
                return kept
    if not kept:
        raise RuntimeError(f"no held-out task with unseen entities could be generated for domain {config.domain}")
    return kept

"""A synthesis run: rounds of generate → validate → evolve, written to a folder round by round.

Layout of `out/`:
  rounds/round-<r>/prompt_set.json   the PromptSet the round generated with
  rounds/round-<r>/accepted.jsonl    accepted tasks (eigenloop.v1.Task records)
  rounds/round-<r>/rejected.jsonl    one ValidationReport per rejected candidate (agent, category, reason)
  rounds/round-<r>/rejected_tasks.jsonl  the rejected tasks that were written at all
  rounds/round-<r>/evolution.json    the Evolve outcome: failure counts, candidates and their minibatch yields
  rounds/round-<r>/summary.json      written last: a round is complete exactly when this exists
  accepted.jsonl, rejected.jsonl     every complete round's records, rebuilt after each round
  report.md (+ report.html, *.png)   see synthesis.report
  timings.json                       wall-clock seconds per round: the one file that differs between runs

Every other file depends only on the configuration (same seed, same bytes). Each file is written
atomically, so an interrupted run leaves whole rounds and nothing half-written; `resume` continues after
the last complete round with the prompt set that round evolved.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, Protocol

from google.protobuf import json_format
from pydantic import BaseModel, ConfigDict, Field

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.contracts.v1 import validator_pb2 as vpb
from eigenloop.data import read_jsonl, read_tasks, remove_partial_writes, to_record, write_json_atomic, write_jsonl
from eigenloop.synthesis.diversity import Fingerprint, NearDuplicateIndex
from eigenloop.synthesis.pipeline import Generation
from eigenloop.synthesis.prompts import check_prompt_set
from eigenloop.synthesis.validation import EXECUTABLE, VALIDATORS, generation_failure_report


class SynthesisConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    domain: str
    rounds: Annotated[int, Field(ge=1)] = 4
    per_round: Annotated[int, Field(ge=1)] = 200
    seed: int = 0
    evolve: bool = True
    # False: accept every executable task (only the executable agent runs).
    validate_tasks: bool = True
    diversity: bool = True
    minibatch: Annotated[int, Field(ge=1)] = 16
    min_mutation_score: Annotated[float, Field(ge=0, le=1)] = 0.9


class Validation(Protocol):
    def validate(
        self,
        tasks: Sequence[pb.Task],
        options: vpb.ValidationOptions,
        run_id: str = "",
        accepted: Iterable[pb.Task] = (),
    ) -> Iterator[pb.ValidationReport]: ...

    def evolve(self, request: vpb.EvolveRequest) -> vpb.EvolveResponse: ...


@dataclass(frozen=True)
class RoundSummary:
    round: int
    prompt_set_version: str
    generated: int
    accepted: int
    failures: dict[str, int]
    # Accepted tasks whose nearest earlier accepted task is a near-duplicate (same detector as the validator).
    near_duplicate_rate: float
    # Mean similarity of each accepted task to its nearest earlier accepted one (0 = nothing alike).
    mean_nearest_similarity: float
    goals: int
    mutation_score: float | None
    llm_calls: int

    @property
    def yield_(self) -> float:
        return self.accepted / self.generated if self.generated else 0.0


# Progress: (round, candidates done, candidates in the round).
Progress = Callable[[int, int, int], None]


class RunFolderError(ValueError):
    """The output folder holds a different run (or is not a run folder); the message says how to proceed."""


def round_dir(out: Path, round_: int) -> Path:
    return out / "rounds" / f"round-{round_}"


def complete_rounds(out: Path) -> list[int]:
    found = []
    round_ = 1
    while (round_dir(out, round_) / "summary.json").is_file():
        found.append(round_)
        round_ += 1
    return found


def run_synthesis(
    config: SynthesisConfig,
    generation: Generation,
    validation: Validation,
    out: Path,
    initial: pb.PromptSet,
    *,
    resume: bool = False,
    progress: Progress | None = None,
) -> list[RoundSummary]:
    check_prompt_set(initial)
    summaries, prompt_set = _start(config, out, initial, resume)
    run_id = uuid.uuid4().hex
    accepted_so_far = [
        t for r in range(1, len(summaries) + 1) for t in read_tasks(round_dir(out, r) / "accepted.jsonl")
    ]
    to_index: list[pb.Task] = list(accepted_so_far)
    timings = _read_timings(out) if resume else {}
    for round_ in range(len(summaries) + 1, config.rounds + 1):
        started = time.perf_counter()
        generated = []
        for generated_task in generation.generate(config.domain, config.per_round, config.seed, prompt_set, round_):
            generated.append(generated_task)
            if progress is not None:
                progress(round_, len(generated), config.per_round)
        tasks = [g.task for g in generated if g.HasField("task")]
        reports = {r.task_id: r for r in validation.validate(tasks, _options(config), run_id=run_id, accepted=to_index)}
        to_index = []
        ordered: list[pb.ValidationReport] = []
        for index, g in enumerate(generated):
            if g.HasField("task"):
                ordered.append(reports[g.task.id])
            else:
                ordered.append(
                    generation_failure_report(
                        f"{config.domain}-r{round_}-failed-{index:04d}", g.failed_agent, g.failure_reason
                    )
                )
        accepted = [t for t in tasks if reports[t.id].accepted]
        evolution = None
        next_set = prompt_set
        if config.evolve and round_ < config.rounds:
            evolution = validation.evolve(
                vpb.EvolveRequest(
                    current=prompt_set,
                    reports=ordered,
                    round=round_ + 1,
                    seed=config.seed,
                    minibatch_size=config.minibatch,
                    run_id=run_id,
                )
            )
            next_set = evolution.prompt_set
        summary = _summary(round_, prompt_set, generated, ordered, accepted, accepted_so_far)
        _write_round(out, round_, prompt_set, next_set, accepted, tasks, ordered, evolution, summary)
        accepted_so_far += accepted
        summaries.append(summary)
        prompt_set = next_set
        timings[str(round_)] = time.perf_counter() - started
        write_json_atomic(out / "timings.json", timings)
    _write_totals(out, len(summaries))
    from eigenloop.synthesis.report import write_synthesis_report

    write_synthesis_report(out, config, summaries)
    return summaries


def _options(config: SynthesisConfig) -> vpb.ValidationOptions:
    disabled = [] if config.validate_tasks else [v for v in VALIDATORS if v != EXECUTABLE]
    return vpb.ValidationOptions(
        skip_diversity=not config.diversity,
        min_mutation_score=config.min_mutation_score,
        disabled_agents=disabled,
    )


def _start(
    config: SynthesisConfig, out: Path, initial: pb.PromptSet, resume: bool
) -> tuple[list[RoundSummary], pb.PromptSet]:
    config_path = out / "config.json"
    wanted = config.model_dump(mode="json")
    done = complete_rounds(out)
    if config_path.is_file():
        recorded = json.loads(config_path.read_text())
        if not resume:
            raise RunFolderError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
        if {k: v for k, v in recorded.items() if k != "rounds"} != {k: v for k, v in wanted.items() if k != "rounds"}:
            raise RunFolderError(f"{out} holds a run with another configuration ({recorded}); resume needs the same")
    elif resume and done:
        raise RunFolderError(f"{out} has rounds but no config.json; it was not written by `eigenloop synth`")
    if resume:  # the temp files of writes the interrupted run never finished, in any of its folders
        remove_partial_writes(out, "**/.*.tmp")
    write_json_atomic(config_path, wanted)
    summaries = [RoundSummary(**json.loads((round_dir(out, r) / "summary.json").read_text())) for r in done]
    if not done:
        return summaries, initial
    last = round_dir(out, done[-1]) / "next_prompt_set.json"
    return summaries, json_format.Parse(last.read_text(), pb.PromptSet())


def _summary(
    round_: int,
    prompt_set: pb.PromptSet,
    generated: Sequence[Any],
    reports: Sequence[pb.ValidationReport],
    accepted: Sequence[pb.Task],
    earlier: Sequence[pb.Task],
) -> RoundSummary:
    failures: Counter[str] = Counter()
    for report in reports:
        failed = [v for v in report.verdicts if not v.passed]
        if not report.accepted and failed:
            failures[failed[0].category] += 1
    index = NearDuplicateIndex()
    for task in earlier:
        index.add(Fingerprint.of(task))
    duplicates, similarities = 0, []
    for task in accepted:
        fingerprint = Fingerprint.of(task)
        nearest = index.nearest_similarity(fingerprint)
        similarities.append(nearest)
        duplicates += nearest >= index.threshold
        index.add(fingerprint)
    by_id = {r.task_id: r for r in reports}
    mutation = [v.score for t in accepted for v in by_id[t.id].verdicts if v.agent == "checker_strength" and v.passed]
    return RoundSummary(
        round=round_,
        prompt_set_version=prompt_set.version,
        generated=len(generated),
        accepted=len(accepted),
        failures=dict(sorted(failures.items())),
        near_duplicate_rate=duplicates / len(accepted) if accepted else 0.0,
        mean_nearest_similarity=sum(similarities) / len(similarities) if similarities else 0.0,
        goals=len({goal_of(t) for t in accepted}),
        mutation_score=sum(mutation) / len(mutation) if mutation else None,
        llm_calls=sum(g.cost.llm_calls for g in generated),
    )


def goal_of(task: pb.Task) -> str:
    """The scenario goal, the last part of a generated task's id (see generator.task_id)."""
    return task.id.rsplit("-", 1)[-1]


def _write_round(
    out: Path,
    round_: int,
    prompt_set: pb.PromptSet,
    next_set: pb.PromptSet,
    accepted: Sequence[pb.Task],
    tasks: Sequence[pb.Task],
    reports: Sequence[pb.ValidationReport],
    evolution: vpb.EvolveResponse | None,
    summary: RoundSummary,
) -> None:
    folder = round_dir(out, round_)
    write_json_atomic(folder / "prompt_set.json", to_record(prompt_set))
    write_json_atomic(folder / "next_prompt_set.json", to_record(next_set))
    write_jsonl(folder / "accepted.jsonl", accepted)
    rejected = [r for r in reports if not r.accepted]
    write_jsonl(folder / "rejected.jsonl", rejected)
    rejected_ids = {r.task_id for r in rejected}
    write_jsonl(folder / "rejected_tasks.jsonl", [t for t in tasks if t.id in rejected_ids])
    if evolution is not None:
        write_json_atomic(folder / "evolution.json", to_record(evolution))
    write_json_atomic(folder / "summary.json", asdict(summary))  # last: marks the round complete


def _write_totals(out: Path, rounds: int) -> None:
    write_jsonl(
        out / "accepted.jsonl",
        (t for r in range(1, rounds + 1) for t in read_tasks(round_dir(out, r) / "accepted.jsonl")),
    )
    write_jsonl(
        out / "rejected.jsonl",
        (
            x
            for r in range(1, rounds + 1)
            for x in read_jsonl(round_dir(out, r) / "rejected.jsonl", pb.ValidationReport)
        ),
    )


def _read_timings(out: Path) -> dict[str, float]:
    path = out / "timings.json"
    return dict(json.loads(path.read_text())) if path.is_file() else {}

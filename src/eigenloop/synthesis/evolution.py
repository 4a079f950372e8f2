"""Evolution of the generator's PromptSet from one round's validation reports.

Failures are counted by category and charged to the generator agent responsible for them
(validation.RESPONSIBLE); each responsible agent's prompt is rewritten by the backend from its failures (an
LLM with the failure examples; the procedural backend with its own directive edits), each rewrite and their
union become candidate PromptSets, and every candidate and the current set are scored on the same
minibatch (yield of freshly generated and validated tasks). The best is kept, the current one on ties
(elitist), and every round's outcome is kept in the history.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.contracts.v1 import validator_pb2 as vpb
from eigenloop.llm.base import ChatBackend
from eigenloop.synthesis import prompts as P
from eigenloop.synthesis.agents import RetryPolicy, ask
from eigenloop.synthesis.validation import responsible_agent

REWRITER = "prompt_rewriter"
REWRITER_PROMPT = (
    "You improve one agent of a task generator. Given its prompt, its settings and the validation failures it "
    "caused, propose rewritten prompts and settings that prevent those failures. Answer with JSON: "
    '{"candidates": [{"prompt": ..., "settings": {...}, "rationale": ...}]}.'
)
EXAMPLES_PER_CATEGORY = 3

# Yield of `prompt_set` on a minibatch of `size` fresh tasks generated with `seed` for `round_`.
MinibatchScore = Callable[[pb.PromptSet, int, int, int], float]


def count_failures(reports: Sequence[pb.ValidationReport]) -> list[vpb.FailureCategoryCount]:
    """Failed verdicts by (category, responsible agent), most frequent first (a report may count in several)."""
    counts: Counter[tuple[str, str]] = Counter()
    for report in reports:
        for verdict in report.verdicts:
            if not verdict.passed:
                counts[(verdict.category, responsible_agent(verdict))] += 1
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [vpb.FailureCategoryCount(category=c, responsible_agent=a, count=n) for (c, a), n in ordered]


@dataclass
class Evolver:
    backend: ChatBackend
    score: MinibatchScore
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    history: dict[str, list[vpb.EvolveResponse]] = field(default_factory=dict)

    def evolve(self, request: vpb.EvolveRequest) -> vpb.EvolveResponse:
        current = request.current
        P.check_prompt_set(current)
        failures = count_failures(request.reports)
        candidates = self._candidates(current, request, failures)
        size = request.minibatch_size or 16
        scored = [(current, self.score(current, request.seed, request.round, size))]
        scored += [(c, self.score(c, request.seed, request.round, size)) for c in candidates]
        best, best_score = scored[0]
        for candidate, value in scored[1:]:
            if value > best_score:
                best, best_score = candidate, value
        response = vpb.EvolveResponse(
            failures=failures,
            candidates=[vpb.PromptCandidate(prompt_set=c, score=s) for c, s in scored[1:]],
            changed=best is not current,
        )
        response.prompt_set.CopyFrom(best)
        self.history.setdefault(current.domain, []).append(response)
        return response

    def _candidates(
        self, current: pb.PromptSet, request: vpb.EvolveRequest, failures: Sequence[vpb.FailureCategoryCount]
    ) -> list[pb.PromptSet]:
        examples = _examples(request.reports)
        per_agent: list[list[dict[str, Any]]] = []
        for agent in dict.fromkeys(f.responsible_agent for f in failures if f.responsible_agent in P.AGENTS):
            prompt = P.agent_prompt(current, agent)
            brief = {
                "domain": current.domain,
                "seed": request.seed,
                "settings": P.parse_settings(prompt).model_dump(mode="json"),
                "input": {
                    "agent": agent,
                    "prompt": prompt.prompt,
                    "failures": [
                        {"category": f.category, "count": f.count, "examples": examples.get(f.category, [])}
                        for f in failures
                        if f.responsible_agent == agent
                    ],
                },
            }
            answer = ask(self.backend, REWRITER, REWRITER_PROMPT, brief, self.retry)
            rewrites = [dict(c, agent=agent) for c in answer.get("candidates", []) if isinstance(c, dict)]
            if rewrites:
                per_agent.append(rewrites)
        candidates = [_with(current, request.round, [rewrite]) for rewrites in per_agent for rewrite in rewrites]
        if len(per_agent) > 1:  # every agent's broadest rewrite together
            candidates.append(_with(current, request.round, [rewrites[-1] for rewrites in per_agent]))
        valid = []
        for candidate in candidates:
            try:
                P.check_prompt_set(candidate)
            except P.PromptSetError:
                continue  # a rewrite the generator could not run is no candidate
            valid.append(candidate)
        return valid


def _examples(reports: Sequence[pb.ValidationReport]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for report in reports:
        for verdict in report.verdicts:
            if not verdict.passed and len(found.setdefault(verdict.category, [])) < EXAMPLES_PER_CATEGORY:
                found[verdict.category].append(verdict.reason)
    return found


def _with(current: pb.PromptSet, round_: int, rewrites: Sequence[dict[str, Any]]) -> pb.PromptSet:
    candidate = pb.PromptSet()
    candidate.CopyFrom(current)
    candidate.parent_version = current.version
    candidate.round = round_
    rationales = []
    for rewrite in rewrites:
        for agent in candidate.agents:
            if agent.agent == rewrite["agent"]:
                agent.prompt = str(rewrite.get("prompt", agent.prompt))
                agent.settings.clear()
                agent.settings.update({k: _json(v) for k, v in dict(rewrite.get("settings", {})).items()})
        rationales.append(f"{rewrite['agent']}: {rewrite.get('rationale', '')}")
    candidate.rationale = "; ".join(rationales)
    candidate.version = P.content_version(candidate)
    return candidate


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True)

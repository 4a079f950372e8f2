"""The validation agents: each gives a Verdict (passed, failure category, reason) for one candidate task.

All of them run on every candidate, so one report shows every defect a task has (evolution then sees them all
at once), except the mutation test: the expensive part of checker_strength runs only on a task nothing else
rejected.

  executable       the gold replay earns reward 1 from its own checker, twice, with the same final state
  policy           the dialogue obeys the domain policy's rules that code can check (explicit confirmation
                   before every write where the policy demands it; nothing after a hand-off to a human)
  consistency      what the user says is in the user's instruction; every identifier the agent passes to a
                   tool was said by the user or returned by a tool before
  diversity        not a near-duplicate of an accepted task (MinHash over dialogue text and actions)
  checker_strength the checker rejects the empty trajectory and kills at least `min_mutation_score` of the
                   mutants of the gold trajectory (eigenloop.checkers.mutate)

Each failure category names the generator agent evolution rewrites for it (RESPONSIBLE).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from eigenloop.checkers.mutate import Trajectory, evaluate_trajectory, gold_trajectory, score_task
from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.domains import UnknownDomainError, load_domain
from eigenloop.domains.base import Domain, ToolKind
from eigenloop.env.session import InitialStateError
from eigenloop.protocol import arguments_of
from eigenloop.synthesis import prompts as P
from eigenloop.synthesis.diversity import Fingerprint, NearDuplicateIndex

EXECUTABLE, POLICY, CONSISTENCY, DIVERSITY, CHECKER_STRENGTH = (
    "executable",
    "policy",
    "consistency",
    "diversity",
    "checker_strength",
)
VALIDATORS = (EXECUTABLE, POLICY, CONSISTENCY, DIVERSITY, CHECKER_STRENGTH)
GENERATION_FAILED = "generation_failed"

RESPONSIBLE = {
    "not_executable": P.DIALOGUE_WRITER,
    "policy_violation": P.DIALOGUE_WRITER,
    "inconsistent": P.DIALOGUE_WRITER,
    "near_duplicate": P.PLANNER,
    "checker_passes_empty": P.CHECKER_WRITER,
    "weak_checker": P.CHECKER_WRITER,
}
AFFIRMATION = re.compile(r"\b(yes|yeah|yep|sure|confirm(ed)?|go ahead|please do|do it|okay|ok|correct)\b", re.I)
# An identifier worth tracing: no spaces, at least 4 characters, a digit (ids, flight numbers); not a date, which
# people say in words ("May 23").
IDENTIFIER = re.compile(r"^(?!\d{4}-\d{2}-\d{2}$)(?=.*\d)\S{4,}$")


@dataclass(frozen=True)
class ValidationSettings:
    min_mutation_score: float = 0.9
    skip_diversity: bool = False
    disabled: frozenset[str] = frozenset()
    mutation_seed: int = 0


def _verdict(agent: str, passed: bool, category: str = "", reason: str = "", score: float = 0.0) -> pb.Verdict:
    return pb.Verdict(agent=agent, passed=passed, category="" if passed else category, reason=reason, score=score)


def generation_failure_report(task_id: str, failed_agent: str, reason: str) -> pb.ValidationReport:
    """A candidate the generator could not write, reported like a rejected task so evolution sees it."""
    verdict = pb.Verdict(agent=failed_agent, passed=False, category=GENERATION_FAILED, reason=reason)
    return pb.ValidationReport(task_id=task_id, accepted=False, verdicts=[verdict])


def responsible_agent(verdict: pb.Verdict) -> str:
    return verdict.agent if verdict.category == GENERATION_FAILED else RESPONSIBLE.get(verdict.category, "")


@dataclass
class TaskValidator:
    settings: ValidationSettings = ValidationSettings()
    index: NearDuplicateIndex = field(default_factory=NearDuplicateIndex)

    def validate(self, task: pb.Task, *, remember: bool = True) -> pb.ValidationReport:
        """Run the agents on `task`; when accepted and `remember`, it joins the accepted set diversity checks."""
        report = pb.ValidationReport(task_id=task.id, accepted=True)
        try:
            domain = load_domain(task.domain)
        except UnknownDomainError as exc:
            report.accepted = False
            report.verdicts.append(_verdict(EXECUTABLE, False, "not_executable", str(exc)))
            return report
        fingerprint = Fingerprint.of(task)
        checks = {
            EXECUTABLE: lambda: _executable(domain, task),
            POLICY: lambda: _policy(domain, task),
            CONSISTENCY: lambda: _consistency(task),
            DIVERSITY: lambda: _diversity(self.index, fingerprint),
            CHECKER_STRENGTH: lambda: _checker_strength(domain, task, self.settings, mutate=report.accepted),
        }
        for name in VALIDATORS:
            if name in self.settings.disabled or (name == DIVERSITY and self.settings.skip_diversity):
                continue
            verdict = checks[name]()
            report.verdicts.append(verdict)
            report.accepted = report.accepted and verdict.passed
        if report.accepted and remember:
            self.index.add(fingerprint)
        return report

    def remember(self, tasks: Iterable[pb.Task]) -> None:
        """Index already accepted tasks (a resumed run, an existing dataset) for the diversity check."""
        for task in tasks:
            self.index.add(Fingerprint.of(task))


def _env_seed(task: pb.Task) -> int:
    return task.provenance.seed


def _executable(domain: Domain, task: pb.Task) -> pb.Verdict:
    gold = gold_trajectory(task)
    try:
        first = evaluate_trajectory(domain, task, gold, env_seed=_env_seed(task))
        second = evaluate_trajectory(domain, task, gold, env_seed=_env_seed(task))
    except (InitialStateError, ValueError) as exc:
        return _verdict(EXECUTABLE, False, "not_executable", f"the task's environment does not build: {exc}")
    if first.value < 1.0:
        return _verdict(EXECUTABLE, False, "not_executable", f"gold replay fails its checker: {first.failure_reason}")
    if (first.value, first.final_state_hash) != (second.value, second.final_state_hash):
        return _verdict(EXECUTABLE, False, "not_executable", "gold replay is not deterministic")
    return _verdict(EXECUTABLE, True, score=1.0)


def _policy(domain: Domain, task: pb.Task) -> pb.Verdict:
    needs_yes = 'explicit "yes"' in domain.policy
    last_user = last_agent_text = -1
    handed_off = False
    for position, message in enumerate(task.reference_dialogue):
        if message.role == pb.ROLE_USER and message.content:
            last_user = position
        if message.role != pb.ROLE_ASSISTANT:
            continue
        if handed_off and (message.tool_calls or message.content.strip()) and not _is_transfer_notice(message):
            return _verdict(POLICY, False, "policy_violation", "the agent goes on after transferring to a human")
        for call in message.tool_calls:
            tool = domain.tool(call.name)
            if needs_yes and tool is not None and tool.kind is ToolKind.WRITE:
                said = task.reference_dialogue[last_user].content if last_user > last_agent_text else ""
                if not AFFIRMATION.search(said):
                    return _verdict(
                        POLICY,
                        False,
                        "policy_violation",
                        f'{call.name} without the user\'s explicit "yes" after the agent last spoke',
                    )
            handed_off = handed_off or call.name.startswith("transfer")
        if message.content.strip():
            last_agent_text = position
    return _verdict(POLICY, True, score=1.0)


def _is_transfer_notice(message: pb.Message) -> bool:
    return not message.tool_calls and "transfer" in message.content.lower()


def _consistency(task: pb.Task) -> pb.Verdict:
    briefing = " ".join([task.user.instruction, task.user.known_info, task.user.reason_for_call])
    identifiers = {
        value for call in task.checker.gold_actions for value in _strings(arguments_of(call)) if IDENTIFIER.match(value)
    }
    seen = ""
    for message in task.reference_dialogue:
        if message.role == pb.ROLE_USER:
            for value in identifiers:
                if value in message.content and value not in briefing and value not in seen:
                    return _verdict(
                        CONSISTENCY, False, "inconsistent", f"the user says {value!r}, which their instruction lacks"
                    )
        if message.role == pb.ROLE_ASSISTANT:
            for call in message.tool_calls:
                for value in _strings(arguments_of(call)):
                    if IDENTIFIER.match(value) and value not in seen:
                        return _verdict(
                            CONSISTENCY,
                            False,
                            "inconsistent",
                            f"{call.name} uses {value!r}, which neither the user nor a tool said before",
                        )
        seen += "\n" + message.content
    return _verdict(CONSISTENCY, True, score=1.0)


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def _diversity(index: NearDuplicateIndex, fingerprint: Fingerprint) -> pb.Verdict:
    nearest = index.nearest(fingerprint)
    if nearest is not None:
        other, score = nearest
        return _verdict(
            DIVERSITY, False, "near_duplicate", f"near-duplicate of {other} (similarity {score:.2f})", score
        )
    return _verdict(DIVERSITY, True, score=0.0)


def _checker_strength(domain: Domain, task: pb.Task, settings: ValidationSettings, *, mutate: bool) -> pb.Verdict:
    empty = evaluate_trajectory(domain, task, Trajectory(), env_seed=_env_seed(task))
    if empty.value >= 1.0:
        return _verdict(CHECKER_STRENGTH, False, "checker_passes_empty", "the checker accepts doing nothing")
    if not mutate:
        return _verdict(CHECKER_STRENGTH, True, reason="mutation test skipped: the task is rejected anyway")
    report = score_task(domain, task, settings.mutation_seed, env_seed=_env_seed(task))
    if report.score < settings.min_mutation_score:
        survivors = "; ".join(f"{m.operator}: {m.description}" for m in report.survivors[:3])
        return _verdict(
            CHECKER_STRENGTH,
            False,
            "weak_checker",
            f"mutation score {report.score:.2f} < {settings.min_mutation_score} (survivors: {survivors})",
            report.score,
        )
    return _verdict(CHECKER_STRENGTH, True, score=report.score)

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import torch
from prometheus_client import REGISTRY
from transformers import AutoModelForCausalLM, AutoTokenizer

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.data import read_jsonl, write_jsonl
from eigenloop.models import build_model, train_tokenizer
from eigenloop.training.config import AdvantageConfig, FilterConfig, GRPOConfig, LossConfig, RewardConfig, parse_config
from eigenloop.training.data import layout
from eigenloop.training.grpo import advantages, draw_groups, filter_groups, grpo_loss, policy_batch, run_grpo
from eigenloop.training.metrics import read_metrics
from eigenloop.training.rollouts import FileSource
from tests.support import TEST_DEVICE
from tests.training.helpers import dialogue_task, trajectory, write_tasks, write_trajectories


def _group(
    tok: Any, rewards: list[float], *, name: str = "g", statuses: dict[int, int] | None = None, version: int = 0
) -> list[pb.Trajectory]:
    task = dialogue_task(0, random.Random(0))
    return [
        trajectory(
            tok,
            task,
            reward=r,
            group=name,
            index=i,
            status=(statuses or {}).get(i, pb.EPISODE_STATUS_COMPLETED),
            version=version,
        )
        for i, r in enumerate(rewards)
    ]


@pytest.fixture(scope="module")
def tok() -> Any:
    return train_tokenizer([], vocab_size=259)


def test_filters_count_by_reason(tok: Any) -> None:
    groups = [
        _group(tok, [1, 0, 1, 0], name="ok"),
        _group(tok, [1, 1, 1, 1], name="flat"),
        _group(
            tok,
            [1, 0, 0, 0],
            name="broken",
            statuses={0: pb.EPISODE_STATUS_INFRA_FAILED, 1: pb.EPISODE_STATUS_SIMULATOR_INVALID},
        ),
        _group(tok, [1, 0], name="old", version=0),
    ]
    kept, dropped = filter_groups(groups[:3], FilterConfig(), policy_version=0, max_length=4096)
    assert [g[0].group_id for g in kept] == ["ok"]
    assert dropped == {"zero_variance": 2, "infra_failed": 1, "simulator_invalid": 1}  # 'broken' is left all-zero
    kept, dropped = filter_groups(groups[3:], FilterConfig(max_staleness=2), policy_version=3, max_length=4096)
    assert kept == [] and dropped == {"stale": 2, "group_too_small": 1}
    off = FilterConfig(zero_variance=False, infra_failed=False, simulator_invalid=False, max_staleness=None)
    kept, dropped = filter_groups(groups, off, policy_version=3, max_length=4096)
    assert len(kept) == 4 and not dropped


def _refill_config(tmp_path: Path, *, refill: bool, factor: int = 4) -> GRPOConfig:
    return parse_config(
        GRPOConfig,
        {
            "run_dir": str(tmp_path),
            "model": {"path": str(tmp_path / "unused-model")},
            "rollouts": {"source": "file", "path": str(tmp_path / "unused.jsonl"), "tasks_per_step": 2},
            "filter": {"refill": refill, "max_draw_factor": factor, "max_staleness": None},
        },
    )


def test_refill_draws_until_the_batch_holds_groups_with_signal(tmp_path: Path, tok: Any) -> None:
    flat, mixed = [1.0, 1.0, 1.0], [1.0, 0.0, 0.0]
    pattern = [flat, mixed, flat, flat, mixed, flat]
    source = FileSource([t for i, r in enumerate(pattern) for t in _group(tok, r, name=f"g{i}")])

    # Off: the step trains on whatever survives its two groups (here one).
    assert [g[0].group_id for g in draw_groups(source, _refill_config(tmp_path, refill=False), 0)] == ["g0", "g1"]
    # On: g2 and g3 carry no signal, g4 does; only the missing group is asked for each time, so the step ends
    # with exactly two survivors.
    source.position = 0
    drawn = draw_groups(source, _refill_config(tmp_path, refill=True), 0)
    assert [g[0].group_id for g in drawn] == ["g0", "g1", "g2", "g3", "g4"]
    kept, dropped = filter_groups(drawn, FilterConfig(max_staleness=None), policy_version=0, max_length=4096)
    assert [g[0].group_id for g in kept] == ["g1", "g4"] and dropped == {"zero_variance": 3}


def test_refill_stops_at_its_draw_limit_when_nothing_has_signal(tmp_path: Path, tok: Any) -> None:
    source = FileSource(_group(tok, [1.0, 1.0], name="flat"))
    drawn = draw_groups(source, _refill_config(tmp_path, refill=True, factor=3), 0)
    assert len(drawn) == 6 and source.position == 6  # 2 tasks per step x 3, then it trains on nothing


def test_advantages_are_group_relative_and_batch_normalised(tok: Any) -> None:
    groups = [_group(tok, [1, 0, 0, 0]), _group(tok, [1, 1, 0, 0])]
    raw = advantages(groups, RewardConfig(), AdvantageConfig(batch_std_norm=False))
    assert raw == [pytest.approx([7.5, -2.5, -2.5, -2.5]), pytest.approx([5, 5, -5, -5])]
    normed = advantages(groups, RewardConfig(), AdvantageConfig())
    flat = torch.tensor([a for g in normed for a in g])
    assert float(flat.std(unbiased=False)) == pytest.approx(1.0, abs=1e-5)
    assert float(flat.mean()) == pytest.approx(0.0, abs=1e-6)
    no_baseline = advantages(
        groups[:1], RewardConfig(scale=1, bias=0), AdvantageConfig(group_baseline=False, batch_std_norm=False)
    )
    assert no_baseline == [[1.0, 0.0, 0.0, 0.0]]


def _loss(
    tok: Any, groups: list[list[pb.Trajectory]], config: LossConfig
) -> tuple[torch.Tensor, dict[str, float], Any]:
    model = build_model("tiny", tok)
    adv = advantages(groups, RewardConfig(), AdvantageConfig())
    batch = policy_batch(groups, adv, config)
    rows = layout(
        batch.examples,
        max_length=4096,
        packing=True,
        pad_id=tok.pad_token_id,
        weights=batch.weights,
        old_logprobs=batch.old_logprobs,
        advantages=batch.advantages,
    )
    loss, values = grpo_loss(model, rows, config)
    return loss, values, batch


def test_loss_is_the_advantage_weighted_ratio_over_policy_tokens(tok: Any) -> None:
    # Old logprobs far below the model's: ratios are huge, so every positive-advantage token is clipped at 1 + eps.
    groups = [_group(tok, [1, 0])]
    for t in groups[0]:
        t.tokens.logprobs[:] = [-50.0 if m else 0.0 for m in t.tokens.policy_mask]
    loss, values, batch = _loss(tok, groups, LossConfig(clip_eps=0.4))
    n = batch.policy_tokens / 2
    a = batch.advantages
    assert a[0] > 0 > a[1]
    # positive advantage: -min(r*A, 1.4*A) = -1.4*A ; negative: -min(r*A, 1.4*A) = -r*A (huge)
    assert values["clipped_tokens"] == pytest.approx(n)
    assert values["policy_tokens"] == pytest.approx(2 * n)
    assert float(loss.detach()) > 0


def test_sequence_aggregation_weighs_each_trajectory_equally(tok: Any) -> None:
    groups = [_group(tok, [1, 0])]
    short = groups[0][1]
    mask = list(short.tokens.policy_mask)
    first = mask.index(1)
    short.tokens.policy_mask = bytes([1 if i == first else 0 for i in range(len(mask))])  # one policy token
    token = policy_batch(groups, [[1.0, -1.0]], LossConfig(aggregation="token"))
    sequence = policy_batch(groups, [[1.0, -1.0]], LossConfig(aggregation="sequence"))
    assert sum(sum(w) for w in token.weights) == pytest.approx(1.0)
    assert [sum(w) for w in sequence.weights] == pytest.approx([0.5, 0.5])
    assert sum(token.weights[1]) < 0.1


def test_grpo_run_syncs_every_step_and_logs_metrics(tmp_path: Path, sft_model: Path) -> None:
    tok = AutoTokenizer.from_pretrained(sft_model)
    write_trajectories(tmp_path / "traj.jsonl", tok)
    write_tasks(tmp_path / "tasks.jsonl")

    class Recorder:
        def __init__(self) -> None:
            self.versions: list[int] = []

        def push(self, model: Any, version: int) -> None:
            self.versions.append(version)

        def close(self) -> None:
            pass

    sync = Recorder()
    raw = {
        "run_dir": str(tmp_path / "grpo"),
        "steps": 3,
        "threads": 1,
        "model": {"path": str(sft_model), "device": TEST_DEVICE},
        "data": {"tasks": [str(tmp_path / "tasks.jsonl")], "max_length": 256},
        "rollouts": {"source": "file", "path": str(tmp_path / "traj.jsonl"), "tasks_per_step": 3},
        "loss": {"sft_weight": 0.1, "kl_coef": 0.05, "sft_batch_size": 2},
        "filter": {"max_staleness": None},
    }
    result = run_grpo(parse_config(GRPOConfig, raw), sync=sync)
    assert sync.versions == [1, 2, 3] and result.policy_version == 3
    lines = read_metrics(tmp_path / "grpo" / "metrics.jsonl")
    assert len(lines) == 3
    for key in (
        "reward_mean",
        "pass_rate",
        "policy_loss",
        "clip_fraction",
        "entropy",
        "kl",
        "sft_loss",
        "tokens_per_s",
        "rollout_wait_s",
        "train_s",
        "sync_s",
        "filtered_zero_variance",
    ):
        assert key in lines[0], key
    assert lines[0]["filtered_zero_variance"] == 1 and lines[0]["filtered_infra_failed"] == 1
    # The same values as Prometheus series.
    assert REGISTRY.get_sample_value("eigenloop_trainer_filtered_total", {"run": "grpo", "reason": "infra_failed"})
    assert REGISTRY.get_sample_value("eigenloop_trainer_reward_mean", {"run": "grpo"}) == lines[-1]["reward_mean"]
    assert REGISTRY.get_sample_value("eigenloop_trainer_sample_staleness_count", {"run": "grpo"})


def test_file_source_cycles_groups_and_resumes_from_its_cursor(tmp_path: Path, tok: Any) -> None:
    trajectories = read_jsonl(write_trajectories(tmp_path / "t.jsonl", tok, n_groups=3), pb.Trajectory)
    source = FileSource(trajectories)
    first = [g[0].group_id for g in source.groups(4, 0)]
    assert first == ["g0", "g1", "g2", "g0"]
    again = FileSource(trajectories, **source.cursor())
    assert [g[0].group_id for g in again.groups(1, 0)] == ["g1"]


def test_grpo_with_the_rollout_manager_and_a_real_inference_server(tmp_path: Path, sft_model: Path) -> None:
    """Live rollouts: toy tasks played by the policy behind a gRPC inference server (procedural users and toolenv
    in this process); weights go back to that server after every step, and its version follows the trainer's."""
    from concurrent import futures

    import grpc

    from eigenloop.contracts.v1 import inference_pb2 as ipb
    from eigenloop.contracts.v1 import inference_pb2_grpc
    from eigenloop.inference.engine import TransformersEngine
    from eigenloop_inference.server import InferenceServicer

    engine = TransformersEngine(sft_model, device=TEST_DEVICE, max_batch_size=8, batch_window_ms=2)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=16), options=[("grpc.max_receive_message_length", 64 << 20)]
    )
    inference_pb2_grpc.add_InferenceServicer_to_server(InferenceServicer(engine, 64 << 20), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        raw = {
            "run_dir": str(tmp_path / "grpo"),
            "steps": 2,
            "threads": 1,
            "model": {"path": str(sft_model), "device": TEST_DEVICE},
            # Short prompts (no policy text, no tool listing): the model learned its tools from SFT.
            "data": {
                "domains": ["toy"],
                "eval_fraction": 0.0,
                "max_length": 512,
                "system_prompt": "Help.",
                "tools_in_prompt": False,
            },
            "rollouts": {
                "inference": f"127.0.0.1:{port}",
                "tasks_per_step": 2,
                "group_size": 2,
                "max_new_tokens": 12,
                "max_turns": 2,
            },
            "filter": {"zero_variance": False},  # an untrained policy scores 0 everywhere; train on it anyway
        }
        result = run_grpo(parse_config(GRPOConfig, raw))
        assert result.steps == 2 and result.policy_version == 2
        assert engine.version == 2  # every step's weights reached the server
        lines = read_metrics(tmp_path / "grpo" / "metrics.jsonl")
        assert [line["episodes"] for line in lines] == [4, 4]
        assert lines[1]["sync_s"] > 0
        info = inference_pb2_grpc.InferenceStub(grpc.insecure_channel(f"127.0.0.1:{port}")).GetModelInfo(
            ipb.GetModelInfoRequest()
        )
        assert info.policy_version.version == 2
    finally:
        server.stop(grace=None)
        engine.close()


def _grpo_config(tmp_path: Path, sft_model: Path, run: str) -> GRPOConfig:
    return parse_config(
        GRPOConfig,
        {
            "run_dir": str(tmp_path / run),
            "steps": 4,
            "threads": 1,
            "model": {"path": str(sft_model), "device": TEST_DEVICE},
            "data": {"tasks": [str(tmp_path / "tasks.jsonl")], "max_length": 256},
            "rollouts": {"source": "file", "path": str(tmp_path / "traj.jsonl"), "tasks_per_step": 2},
            "loss": {"sft_weight": 0.1, "kl_coef": 0.05, "sft_batch_size": 2},
            "filter": {"max_staleness": None},
            "checkpoint": {"every": 1, "keep_last": 2},
        },
    )


def test_grpo_resume_continues_exactly(tmp_path: Path, sft_model: Path) -> None:
    from safetensors.torch import load_file

    write_trajectories(tmp_path / "traj.jsonl", AutoTokenizer.from_pretrained(sft_model))
    write_tasks(tmp_path / "tasks.jsonl")
    run_grpo(_grpo_config(tmp_path, sft_model, "straight"))
    interrupted = _grpo_config(tmp_path, sft_model, "interrupted")
    assert run_grpo(interrupted, stop_at=2).steps == 2
    resumed = run_grpo(interrupted, resume=True)
    assert resumed.steps == 4 and resumed.policy_version == 4
    a = load_file(str(tmp_path / "straight" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "interrupted" / "model" / "model.safetensors"))
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0)


def test_weights_reach_every_replica_and_a_refused_update_stops_the_run(sft_model: Path) -> None:
    from concurrent import futures

    import grpc
    from transformers import AutoModelForCausalLM

    from eigenloop.contracts.v1 import inference_pb2_grpc
    from eigenloop.inference.engine import TransformersEngine
    from eigenloop.training.config import SyncConfig
    from eigenloop.training.sync import InferenceSync, SyncError
    from eigenloop_inference.server import InferenceServicer

    engines, servers, addresses = [], [], []
    for _ in range(2):
        engine = TransformersEngine(sft_model)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        inference_pb2_grpc.add_InferenceServicer_to_server(InferenceServicer(engine, 64 << 20), server)
        addresses.append(f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}")
        server.start()
        engines.append(engine)
        servers.append(server)
    sync = InferenceSync(SyncConfig(inference=addresses, chunk_bytes=4096))
    try:
        model = AutoModelForCausalLM.from_pretrained(sft_model)
        with torch.no_grad():
            model.model.norm.weight.fill_(0.5)
        sync.push(model, 1)
        for engine in engines:
            assert engine.version == 1
            torch.testing.assert_close(engine.model.model.norm.weight, model.model.norm.weight)
        with pytest.raises(SyncError, match="FAILED_PRECONDITION"):
            sync.push(model, 1)  # not newer than what the replicas serve
    finally:
        sync.close()
        for server, engine in zip(servers, engines, strict=True):
            server.stop(grace=None)
            engine.close()


def _with_reason(task: pb.Task, reason: str) -> pb.Task:
    """The task's reference dialogue with another cancellation reason in the agent's tool call."""
    changed = pb.Task()
    changed.CopyFrom(task)
    call = changed.reference_dialogue[1].tool_calls[0]
    call.arguments_json = json.dumps({**json.loads(call.arguments_json), "reason": reason})
    return changed


def test_grpo_moves_the_policy_toward_the_rewarded_episode(tmp_path: Path, sft_model: Path) -> None:
    """Each group holds one conversation twice: the reason the user gave rewarded 1, the other reason 0. After a few
    steps the trained model must prefer every rewarded episode more than the starting model did: the policy
    gradient's sign, end to end (advantages, token weights, recomputed old logprobs, the optimizer, saved weights).
    Every user here gives the same reason, so the preference needs no reading of the context: a model this small
    learns that only over many more steps."""
    tok = AutoTokenizer.from_pretrained(sft_model)
    rng = random.Random(1)
    tasks = [t for t in (dialogue_task(i, rng) for i in range(20)) if "mistake" in t.user.instruction][:4]
    pairs, trajectories = [], []
    for g, right in enumerate(tasks):
        wrong = _with_reason(right, "found_cheaper")
        pairs.append(
            (
                trajectory(tok, right, reward=1.0, group="", index=0),
                trajectory(tok, wrong, reward=0.0, group="", index=0),
            )
        )
        for i in range(4):
            episode = right if i % 2 == 0 else wrong
            trajectories.append(trajectory(tok, episode, reward=float(i % 2 == 0), group=f"g{g}", index=i))
    write_jsonl(tmp_path / "traj.jsonl", trajectories)
    raw = {
        "run_dir": str(tmp_path / "grpo"),
        "steps": 4,
        "threads": 1,
        "optim": {"lr": 3e-3},
        "model": {"path": str(sft_model), "device": TEST_DEVICE},
        "data": {"tasks": [str(write_tasks(tmp_path / "tasks.jsonl"))], "max_length": 256},
        "rollouts": {"source": "file", "path": str(tmp_path / "traj.jsonl"), "tasks_per_step": 4},
        "loss": {"old_logprobs": "recompute"},
        "filter": {"max_staleness": None},
    }
    result = run_grpo(parse_config(GRPOConfig, raw))

    def preference(model_dir: Path) -> list[float]:
        """Per pair: log p(rewarded episode's policy tokens) - log p(penalised one's)."""
        model = AutoModelForCausalLM.from_pretrained(model_dir)
        out = []
        for right, wrong in pairs:
            scores = []
            for t in (right, wrong):
                ids = torch.tensor([list(t.tokens.token_ids)])
                with torch.no_grad():
                    logits = model(input_ids=ids).logits[0, :-1]
                lp = torch.log_softmax(logits, -1).gather(-1, ids[0, 1:, None]).squeeze(-1)
                mask = torch.tensor(list(t.tokens.policy_mask)[1:], dtype=torch.bool)
                scores.append(float(lp[mask].sum()))
            out.append(scores[0] - scores[1])
        return out

    before, after = preference(sft_model), preference(result.model_dir)
    assert all(a > b + 0.5 for a, b in zip(after, before, strict=True)), (before, after)

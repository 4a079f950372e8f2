from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.data import read_tasks, write_jsonl
from eigenloop.llm.local import TransformersBackend
from eigenloop.models import build_model, train_tokenizer
from eigenloop.training import checkpoint
from eigenloop.training import sft as sft_module
from eigenloop.training.config import SFTConfig, parse_config
from eigenloop.training.data import EmptyDatasetError, agent_examples, layout, usable, user_examples
from eigenloop.training.metrics import read_metrics
from eigenloop.training.run import NonFiniteLossError, target_weights, token_logprobs
from eigenloop.training.sft import run_sft
from eigenloop.training.user_sft import run_user_sft
from eigenloop.usersim.policies import ConversationView, LLMUser, chat_messages
from tests.training.helpers import sft_config, write_tasks


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


def test_agent_targets_are_the_agent_turns_only(tmp_path: Path) -> None:
    tasks = read_tasks(write_tasks(tmp_path / "t.jsonl", n=2))
    tok = train_tokenizer([], vocab_size=259)
    example = agent_examples(tok, tasks)[0]
    target = tok.decode([t for t, m in zip(example.token_ids, example.mask, strict=True) if m])
    assert "cancel_order" in target and "is cancelled." in target
    assert "Please cancel" not in target and "bye" not in target


def test_user_targets_are_the_user_turns_only(tmp_path: Path) -> None:
    tasks = read_tasks(write_tasks(tmp_path / "t.jsonl", n=2))
    tok = train_tokenizer([], vocab_size=259)
    example = user_examples(tok, tasks)[0]
    target = tok.decode([t for t, m in zip(example.token_ids, example.mask, strict=True) if m])
    assert "Please cancel" in target and "###STOP###" in target
    assert "is cancelled." not in target


def test_packed_rows_give_the_same_loss_as_padded_rows(tmp_path: Path) -> None:
    tasks = read_tasks(write_tasks(tmp_path / "t.jsonl", n=6))
    tok = train_tokenizer([], vocab_size=259)
    examples = agent_examples(tok, tasks)
    model = build_model("tiny", tok).eval()
    losses = []
    for packing in (True, False):
        rows = layout(examples, max_length=1024, packing=packing, pad_id=tok.pad_token_id)
        with torch.no_grad():
            logprobs, _ = token_logprobs(model, rows)
        losses.append(float(-(logprobs * target_weights(rows)).sum()))
        assert (len(rows) < len(examples)) if packing else (len(rows) == len(examples))
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


def test_sft_learns_and_writes_metrics_and_checkpoints(tmp_path: Path) -> None:
    config = parse_config(SFTConfig, sft_config(tmp_path, steps=8))
    result = run_sft(config)
    lines = read_metrics(config.run_dir / "metrics.jsonl")
    assert [line["step"] for line in lines] == list(range(1, 9))
    assert lines[-1]["train_loss"] < lines[0]["train_loss"]
    assert math.isfinite(result.eval_loss) and "eval_loss" in lines[1]
    kept = checkpoint.checkpoints(config.run_dir / "checkpoints")
    assert [p.name for p in kept] == ["step-000006", "step-000008"]  # keep_last 2
    assert not list((config.run_dir / "checkpoints").glob(".*"))  # no temp folder left behind
    assert (result.model_dir / "model.safetensors").is_file()


def test_resume_continues_exactly(tmp_path: Path) -> None:
    straight = parse_config(SFTConfig, sft_config(tmp_path / "a", steps=6, checkpoint={"every": 2, "keep_last": 5}))
    run_sft(straight)
    interrupted = parse_config(SFTConfig, sft_config(tmp_path / "b", steps=6))
    first = run_sft(interrupted, stop_at=4)
    assert first.steps == 4 and not (interrupted.run_dir / "model").exists()
    resumed = run_sft(interrupted, resume=True)
    assert resumed.steps == 6
    a, b = _weights(straight.run_dir / "model"), _weights(interrupted.run_dir / "model")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0)


def test_resume_without_a_checkpoint_says_so(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="no checkpoint under"):
        run_sft(parse_config(SFTConfig, sft_config(tmp_path)), resume=True)


def test_zero_usable_examples_fail_fast(tmp_path: Path) -> None:
    raw = sft_config(tmp_path)
    raw["data"]["max_length"] = 16
    with pytest.raises(EmptyDatasetError, match=r"no usable training dialogue.*too_long"):
        run_sft(parse_config(SFTConfig, raw))


def test_tasks_without_reference_dialogues_are_not_examples(tmp_path: Path) -> None:
    tok = train_tokenizer([], vocab_size=259)
    assert agent_examples(tok, [pb.Task(id="t", domain="unit")]) == []


def test_a_dialogue_that_cannot_be_rendered_is_dropped_as_malformed_and_sft_trains_on_the_rest(
    tmp_path: Path,
) -> None:
    """Unvalidated synthesis (quickstart --no-validate) can accept a dialogue that opens with the agent's turn."""
    tasks = read_tasks(write_tasks(tmp_path / "tasks.jsonl", n=12))
    broken = pb.Task()
    broken.CopyFrom(tasks[0])
    broken.id = "broken"
    del broken.reference_dialogue[0]
    tok = train_tokenizer([], vocab_size=259)
    examples = agent_examples(tok, [broken, *tasks])
    assert "nothing to respond to" in examples[0].malformed and not examples[0].token_ids
    kept, dropped = usable(examples, max_length=512)
    assert dropped["malformed"] == 1 and len(kept) == len(tasks)
    write_jsonl(tmp_path / "with_broken.jsonl", [broken, *tasks])
    result = run_sft(parse_config(SFTConfig, {**sft_config(tmp_path, steps=2), "data": {
        "tasks": [str(tmp_path / "with_broken.jsonl")], "max_length": 256, "eval_fraction": 0.0}}))  # fmt: skip
    assert result.steps == 2 and result.dropped["malformed"] == 1


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = parse_config(SFTConfig, sft_config(tmp_path, steps=6))
    real = sft_module.sft_loss
    calls = {"n": 0}

    def poisoned(model: object, rows: object, total_targets: float) -> tuple[torch.Tensor, dict[str, float]]:
        loss, values = real(model, rows, total_targets)  # type: ignore[arg-type]
        calls["n"] += 1
        return (loss * math.nan, values) if calls["n"] > 3 else (loss, values)

    monkeypatch.setattr(sft_module, "sft_loss", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"step 3.*last good checkpoint: .*step-000002"):
        run_sft(config)
    assert checkpoint.latest(config.run_dir / "checkpoints") == config.run_dir / "checkpoints" / "step-000002"


@pytest.mark.parametrize("prompt", ["full", "compact"])
def test_user_sft_model_plays_the_user(tmp_path: Path, prompt: str) -> None:
    raw = sft_config(tmp_path, steps=2)
    raw["data"]["max_length"] = 1024  # the user's full system prompt (its scenario and rules) is long
    raw["data"]["user_prompt"] = prompt
    result = run_user_sft(parse_config(SFTConfig, raw))
    task = read_tasks(tmp_path / "tasks.jsonl")[0]
    user = LLMUser(TransformersBackend(result.model_dir), max_tokens=8, prompt=prompt)  # type: ignore[arg-type]
    view = ConversationView(task=task, domain=None, history=(), event="open", turn=0, max_turns=4)
    assert isinstance(user.next_turn(view).content, str)
    # The served user renders the system prompt it was trained on.
    tok = train_tokenizer([], vocab_size=259)
    trained_on = tok.decode(user_examples(tok, [task], prompt=prompt)[0].token_ids)  # type: ignore[arg-type]
    assert chat_messages(view, prompt)[0].content in trained_on  # type: ignore[arg-type]

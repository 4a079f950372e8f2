"""Parts of the quickstart report that the --fast end-to-end run does not reach."""

from __future__ import annotations

from eigenloop.quickstart.config import GRPOSection, QuickstartConfig
from eigenloop.quickstart.report import _task_draws


def test_task_draws_table_follows_the_curriculum_state() -> None:
    config = QuickstartConfig(grpo=GRPOSection(task_sampling="pass_rate"))
    summary = {
        "tasks": {
            "draws": {"get_order": 12, "get_order>cancel_order": 40},
            "pass_rate": {"get_order": 1.0, "get_order>cancel_order": None},
        }
    }
    text = _task_draws(config, summary)
    lines = text.splitlines()
    cancel = next(i for i, line in enumerate(lines) if "get_order>cancel_order" in line)
    lookup = next(i for i, line in enumerate(lines) if "| get_order |" in line)
    assert cancel < lookup  # most drawn first
    assert "40" in lines[cancel] and "100.0" in lines[lookup]


def test_task_draws_says_uniform_when_the_stream_was_uniform() -> None:
    assert "uniformly" in _task_draws(QuickstartConfig(), {"tasks": {"drawn": 64}})

"""User-model SFT: the SFT loop on reference dialogues as the simulated user sees them, its turns as targets.

The result (run_dir/model) is what user_sim's local backend loads (`LLMUser` over `TransformersBackend`): it was
trained on exactly the chat that backend renders, system prompt and role mapping included (usersim.policies).
"""

from __future__ import annotations

import functools
from typing import Any

from eigenloop.training.config import SFTConfig
from eigenloop.training.data import user_examples
from eigenloop.training.sft import SFTResult, run_sft


def run_user_sft(config: SFTConfig, **kwargs: Any) -> SFTResult:
    examples = functools.partial(user_examples, prompt=config.data.user_prompt)
    return run_sft(config, examples=examples, run_id=kwargs.pop("run_id", "user-sft"), **kwargs)

from __future__ import annotations

from pathlib import Path

import pytest

from eigenloop.training.config import SFTConfig, parse_config
from eigenloop.training.sft import run_sft
from tests.training.helpers import sft_config


@pytest.fixture(scope="session")
def sft_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model after a few SFT steps on the unit dialogues (the starting policy of the GRPO tests)."""
    tmp = tmp_path_factory.mktemp("sft-model")
    return run_sft(parse_config(SFTConfig, sft_config(tmp, steps=3))).model_dir

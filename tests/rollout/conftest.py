from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.domains import sample_tasks


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random chat model (tokenizer with a ChatML template, 2-layer Qwen2), built once per test run; its
    context fits a toy-domain episode with the tool schemas in the system turn."""
    pytest.importorskip("torch")
    from tests.llm_fixtures import build_tiny_chat_model

    return build_tiny_chat_model(tmp_path_factory.mktemp("tiny-chat-model"), max_position_embeddings=4096)


@pytest.fixture(scope="session")
def tokenizer(tiny_model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_dir), local_files_only=True)


def toy_task(task_id: str) -> pb.Task:
    return next(t for t in sample_tasks("toy") if t.id == task_id)

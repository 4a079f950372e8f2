"""Build a ChatBackend from configuration.

The backend modules are imported only when asked for, so a component that talks to an HTTP endpoint never imports
torch, and one with a local model never needs `openai`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from eigenloop.llm.base import BackendError, ChatBackend


class BackendConfig(BaseModel):
    """Which LLM backend to use: an OpenAI-compatible endpoint, a local transformers checkpoint, or the offline
    procedural backend (generator agents only; see eigenloop.llm.procedural)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["openai", "transformers", "procedural"]
    model: str = Field(min_length=1, description="model id (openai) or local checkpoint directory (transformers)")
    base_url: str | None = Field(default=None, description="e.g. http://vllm:8000/v1; required for kind=openai")
    api_key: str = "EMPTY"
    timeout_s: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=4, ge=0)
    initial_backoff_s: float = Field(default=0.5, ge=0)
    max_backoff_s: float = Field(default=20.0, ge=0)
    price_per_1k_prompt: float = Field(default=0.0, ge=0)
    price_per_1k_completion: float = Field(default=0.0, ge=0)
    device: str | None = Field(default=None, description="torch device for kind=transformers (default: CPU)")


def make_backend(config: BackendConfig) -> ChatBackend:
    """The backend `config` describes; BackendError (naming what is wrong) when it cannot be built."""
    if config.kind == "procedural":
        from eigenloop.llm.procedural import ProceduralBackend

        return ProceduralBackend()
    if config.kind == "openai":
        if not config.base_url:
            raise BackendError(
                f"backend kind 'openai' (model {config.model!r}) needs base_url, e.g. http://localhost:8000/v1"
            )
        if config.device is not None:
            raise BackendError("backend kind 'openai' does not take a device (that is for kind 'transformers')")
        from eigenloop.llm.openai_backend import OpenAIBackend

        return OpenAIBackend(
            base_url=config.base_url,
            model=config.model,
            api_key=config.api_key,
            timeout_s=config.timeout_s,
            max_retries=config.max_retries,
            initial_backoff_s=config.initial_backoff_s,
            max_backoff_s=config.max_backoff_s,
            price_per_1k_prompt=config.price_per_1k_prompt,
            price_per_1k_completion=config.price_per_1k_completion,
        )

    if config.base_url is not None:
        raise BackendError(
            f"backend kind 'transformers' loads {config.model!r} locally and takes no base_url "
            f"(got {config.base_url!r})"
        )
    path = Path(config.model)
    if not path.is_dir():
        what = "is not a directory" if path.exists() else "does not exist"
        raise BackendError(f"backend kind 'transformers': model path {str(path)!r} {what}")
    from eigenloop.llm.local import TransformersBackend

    return TransformersBackend(path, device=config.device)

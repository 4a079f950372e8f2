"""Policy inference: a dynamically batched transformers engine, a vLLM engine, and an OpenAI-compatible HTTP front end.

torch and transformers (the `local` extra) are imported by `eigenloop.inference.engine` only, vLLM (the `vllm`
extra, GPU only) when `eigenloop.inference.vllm_engine.VLLMEngine` is built; `base` holds what both share.
"""

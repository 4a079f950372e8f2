"""Policy inference: a dynamically batched transformers engine and an OpenAI-compatible HTTP front end.

torch and transformers (the `local` extra) are imported by `eigenloop.inference.engine` only.
"""

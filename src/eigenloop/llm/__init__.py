"""LLM backends behind one interface: OpenAI-compatible HTTP, a local transformers model, and fakes for tests."""

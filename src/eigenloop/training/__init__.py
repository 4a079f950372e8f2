"""Training stages (SFT, user-model SFT, GRPO) and what they share; see services/trainer/README.md."""

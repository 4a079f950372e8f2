"""The trainer service: runs training stages (SFT, user-model SFT, GRPO) submitted over gRPC."""

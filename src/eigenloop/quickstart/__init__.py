"""`eigenloop quickstart`: synthesize → SFT → user-model SFT → GRPO → evaluate → report, on one machine."""

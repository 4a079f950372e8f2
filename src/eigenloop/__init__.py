"""eigenloop: post-training multi-turn, tool-using agents with synthesized tasks and verifiable rewards."""

__version__ = "0.1.0"

"""Executable checkers: data-first components combined by a reward basis (tau2-bench semantics)."""

"""Episode environments: the in-process session (used by the toolenv service and by tests/benchmarks)."""

"""The user_sim service: simulated users over gRPC (Converse)."""

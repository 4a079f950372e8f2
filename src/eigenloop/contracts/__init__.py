"""Generated protobuf and gRPC code for the eigenloop.v1 contracts (see protos/ and scripts/generate_contracts.py)."""

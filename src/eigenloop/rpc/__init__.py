"""The gRPC runtime every service shares: server bootstrap, interceptors, client channels."""

"""The inference service: the policy over gRPC (Generate, UpdateWeights, GetModelInfo) and OpenAI HTTP."""

# `eigenloop up` skips this service, saying why, unless these are set: it has no model to serve otherwise.
REQUIRED_SETTINGS = ("EIGENLOOP_INFERENCE_MODEL",)

"""The generator service: Generate (a stream of candidate tasks), GetPromptSet, SetPromptSet."""

"""The validator service: Validate (a stream of reports), Evolve, GetHistory."""

"""A short soak in the suite (benchmarks/soak.py runs the long one): the local stack held at its configured
maximum concurrency; every episode completes (a retry allowed, as the rollout manager does), both servers stay
up, and neither holds more open files at the end than after warm-up."""

from __future__ import annotations

from benchmarks.soak import soak
from tests.reliability.conftest import Trials


def test_short_soak_at_the_configured_maximum(trials: Trials) -> None:
    result = soak(duration_s=10, concurrency=8, sample_every_s=1)
    services = result["services"]
    files = ", ".join(f"{n} {s['open_files']['first']}→{s['open_files']['last']}" for n, s in services.items())
    rss = ", ".join(f"{n} {s['rss_mb']['first']}→{s['rss_mb']['last']} MB" for n, s in services.items())
    trials.record(
        "load",
        f"toolenv + user_sim, {result['concurrency']} episodes at once (= --workers) for {result['duration_s']} s",
        f"{result['episodes']} episodes, {result['retried']} retried, {result['errors']} failed; "
        f"open files {files}; RSS {rss}",
        cases=result["episodes"],
    )
    assert result["episodes"] > 0 and result["errors"] == 0
    for service in services.values():
        assert service["alive_at_end"]
        opened = service["samples"]["open_files"]
        assert opened[-1] <= opened[len(opened) // 2] + 2  # no growth after warm-up

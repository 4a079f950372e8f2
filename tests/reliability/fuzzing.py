"""What every fuzz test checks, whatever the service: the answer is a clear status, and the server lives on."""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Sequence
from types import ModuleType

from hypothesis import HealthCheck, settings

from eigenloop.launcher import health
from tests.reliability.conftest import Trials
from tests.support import ServiceProcess

# Bad input gets one of these; anything else (UNKNOWN, INTERNAL: an unhandled exception; DEADLINE_EXCEEDED: a
# hang; UNAVAILABLE: a crash) is a finding. OK is fine: a message that happens to be valid.
CLEAR = frozenset({"OK", "INVALID_ARGUMENT", "FAILED_PRECONDITION", "NOT_FOUND", "RESOURCE_EXHAUSTED", "OUT_OF_RANGE"})


def fuzz_settings(examples: int) -> settings:
    """Bounded and reproducible: no example database (the tree is shared), no per-example deadline (a loaded
    machine is slow, and a hang shows up as DEADLINE_EXCEEDED instead), derandomized so CI sees the same cases."""
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )


def record_multiplexed(trials: Trials, area: str, stream: str, what: str, code: str, key_codes: set[str]) -> None:
    """Record how a fuzzed multiplexed stream ended and how its keys did; every one of them must be clear."""
    trials.record(area, f"{stream}: {what}", code)
    for key_code in key_codes:
        trials.record(area, f"{stream}: a key's error", key_code)
    assert code in CLEAR
    assert key_codes <= CLEAR


def assert_alive(service: ServiceProcess) -> None:
    assert service.proc.poll() is None, f"the server exited:\n{service.log.read_text()[-3000:]}"
    assert health(service.address, timeout_s=5) == "SERVING"


def run_atheris(fuzz_one: Callable[[bytes], None], modules: Sequence[ModuleType]) -> None:
    """A coverage-guided atheris session over `fuzz_one`, with libFuzzer flags from sys.argv.

    Only the functions and methods defined in `modules` are instrumented: instrumenting everything loaded
    (pydantic, protobuf, ...) takes over a minute at start-up, for coverage of code that is not under test.
    """
    import atheris

    for module in modules:
        for value in vars(module).values():
            members = vars(value).values() if inspect.isclass(value) else [value]
            for member in members:
                if inspect.isfunction(member) and member.__module__ == module.__name__:
                    atheris.instrument_func(member)
    atheris.Setup(sys.argv, fuzz_one)
    atheris.Fuzz()

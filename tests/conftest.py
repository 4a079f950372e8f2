from __future__ import annotations

from collections.abc import Iterator

import pytest

from eigenloop.env.remote import ToolEnvClient
from tests.support import ServiceProcess

TOOLENV = "eigenloop_toolenv.server"


@pytest.fixture(scope="session")
def toolenv() -> Iterator[ServiceProcess]:
    """One toolenv process shared by the contract tests (each test opens its own sessions)."""
    with ServiceProcess(TOOLENV, ["--max-arguments-bytes", "4096", "--max-message-bytes", "262144"]) as service:
        yield service


@pytest.fixture(params=["stream", "multiplexed"])
def client(toolenv: ServiceProcess, request: pytest.FixtureRequest) -> Iterator[ToolEnvClient]:
    """A client whose sessions are Session streams of their own, or keys of one Sessions stream: every session
    test runs both ways."""
    with ToolEnvClient(toolenv.address, multiplexed=request.param == "multiplexed") as c:
        yield c

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


@pytest.fixture()
def client(toolenv: ServiceProcess) -> Iterator[ToolEnvClient]:
    with ToolEnvClient(toolenv.address) as c:
        yield c

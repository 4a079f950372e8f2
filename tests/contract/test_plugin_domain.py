"""A domain defined outside the package (tests/fixtures/domains/library) is served by an unchanged toolenv."""

from __future__ import annotations

import json

import pytest

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.domains import PATH_VARIABLE, available_domains, load_domain
from eigenloop.env.remote import ToolEnvClient
from eigenloop.protocol import tool_call
from tests.conftest import TOOLENV
from tests.support import REPO, ServiceProcess

FOLDER = REPO / "tests" / "fixtures" / "domains"


def test_folder_domain_is_served_by_toolenv() -> None:
    with ServiceProcess(TOOLENV, env={PATH_VARIABLE: str(FOLDER)}) as service, ToolEnvClient(service.address) as client:
        assert "library" in [d.name for d in client.list_domains()]
        description = client.describe("library")
        assert [t.name for t in description.tools] == ["find_book", "lend_book"]
        checker = pb.Checker(gold_actions=[tool_call("lend_book", {"book_id": "B2"})])
        with client.session("library") as session:
            assert json.loads(session.call(tool_call("lend_book", {"book_id": "B2"})).content)["on_loan"] is True
            again = session.call(tool_call("lend_book", {"book_id": "B2"}))
            assert again.error and "already on loan" in again.content
            assert session.evaluate([], checker).value == 1.0


def test_folder_domain_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PATH_VARIABLE, str(FOLDER))
    load_domain.cache_clear()
    try:
        assert "library" in available_domains()
        assert load_domain("library").name == "library"
    finally:
        load_domain.cache_clear()

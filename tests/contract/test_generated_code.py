"""The committed stubs under src/eigenloop/contracts/ must be exactly what protos/ generates."""

from __future__ import annotations

import shutil
import subprocess
import sys

from tests.support import REPO

SCRIPT = REPO / "scripts" / "generate_contracts.py"


def test_committed_stubs_match_protos() -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_drift_is_detected(tmp_path: object) -> None:
    """Editing a proto without regenerating fails the check (run on a copy of the repo's protos and stubs)."""
    from pathlib import Path

    copy = Path(str(tmp_path)) / "repo"
    shutil.copytree(REPO / "protos", copy / "protos")
    shutil.copytree(REPO / "src" / "eigenloop" / "contracts", copy / "src" / "eigenloop" / "contracts")
    (copy / "scripts").mkdir()
    shutil.copy(SCRIPT, copy / "scripts")
    proto = copy / "protos" / "eigenloop" / "v1" / "toolenv.proto"
    proto.write_text(
        proto.read_text().replace("message GetStateRequest {}", "message GetStateRequest { bool full = 1; }")
    )
    proc = subprocess.run(
        [sys.executable, str(copy / "scripts" / SCRIPT.name), "--check"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 1
    assert "toolenv_pb2.py" in proc.stderr


def test_every_service_has_its_contract() -> None:
    from eigenloop.contracts.v1 import (
        generator_pb2,
        inference_pb2,
        toolenv_pb2,
        trainer_pb2,
        user_sim_pb2,
        validator_pb2,
    )

    services = {
        name: module.DESCRIPTOR.services_by_name
        for name, module in [
            ("toolenv", toolenv_pb2),
            ("user_sim", user_sim_pb2),
            ("inference", inference_pb2),
            ("generator", generator_pb2),
            ("validator", validator_pb2),
            ("trainer", trainer_pb2),
        ]
    }
    streaming = {
        ("ToolEnv", "Session"): (True, True),
        ("UserSim", "Converse"): (True, True),
        ("Inference", "Generate"): (False, True),
    }
    for (service, method), (client_streaming, server_streaming) in streaming.items():
        descriptor = next(s[service] for s in services.values() if service in s).methods_by_name[method]
        assert (descriptor.client_streaming, descriptor.server_streaming) == (client_streaming, server_streaming)

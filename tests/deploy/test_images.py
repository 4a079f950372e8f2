"""The service images built and run for real, offline: the slow stage of `make test` (`make test-images`).

No registry is reachable, so the base image is made with debootstrap (Debian's python3, as in the slim Python
image) and pip inside the builds reads a wheelhouse made here on the host, served on loopback. Every
torch-free service image is built with podman, started with the host's network (no bridge, no firewall rule),
must answer its gRPC health check, pass its own HEALTHCHECK, drain on SIGTERM, run as non-root and hold no
torch. The torch images (inference, trainer) are not built here: the CPU torch wheel alone would add minutes and
about a gigabyte per image on a 2-core machine; their Dockerfiles are linted and checked by test_dockerfiles.py.
"""

from __future__ import annotations

import functools
import http.server
import os
import platform
import shutil
import subprocess
import sys
import threading
import tomllib
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from eigenloop.launcher import HOST, free_port, health
from tests.deploy.services import SERVICES, needs_torch, project
from tests.support import REPO, wait_for

pytestmark = [
    pytest.mark.skipif(
        not os.environ.get("EIGENLOOP_IMAGE_TESTS"), reason="the image stage runs on its own: make test-images"
    ),
    # The first test also waits for the shared set-up: wheelhouse, debootstrap, every build.
    pytest.mark.timeout(1800),
]
TORCH_FREE = [s for s in SERVICES if not needs_torch(s)]
BASE = "localhost/eigenloop-base:bookworm"
MIRROR = "http://deb.debian.org/debian"


def run(*cmd: str | Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(map(str, cmd))}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


class Podman:
    """podman with all its state under one scratch folder, runc (crun cannot run on cgroup v1 hybrid)."""

    def __init__(self, scratch: Path) -> None:
        self.prefix = [
            "podman",
            f"--root={scratch / 'root'}",
            f"--runroot={scratch / 'run'}",
            f"--tmpdir={scratch / 'tmp'}",
            "--runtime=runc",
            "--cgroup-manager=cgroupfs",
            "--events-backend=file",
        ]

    def __call__(self, *args: str | Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return run(*self.prefix, *args, timeout=timeout)


def debootstrap_base(podman: Podman, scratch: Path) -> None:
    """A minimal Debian bookworm with python3 and venv, imported as BASE."""
    rootfs = scratch / "rootfs"
    run("debootstrap", "--variant=minbase", "--include=python3,python3-venv", "bookworm", rootfs, MIRROR)
    for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):  # emptied, not removed: apt still works
        shutil.rmtree(rootfs / cache)
        (rootfs / cache / "partial").mkdir(parents=True)
    tar = scratch / "rootfs.tar"
    run("tar", "-C", rootfs, "-cf", tar, ".")
    shutil.rmtree(rootfs)
    podman("import", tar, BASE)
    tar.unlink()


def wheelhouse(folder: Path) -> None:
    """Wheels of every third-party dependency of the core and the torch-free services, plus the build backend."""
    requirements = list(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"])
    for service in TORCH_FREE:
        requirements += [d for d in project(service)["dependencies"] if not d.startswith("eigenloop")]
    requirements += ["setuptools>=69", "wheel"]
    # Wheels for the image's Python (Debian bookworm: CPython 3.11, glibc 2.36), whatever Python runs this.
    arch = platform.machine()
    tags = [f"--platform=manylinux_2_{v}_{arch}" for v in (36, 28, 17)] + [f"--platform=manylinux2014_{arch}"]
    run(
        sys.executable, "-m", "pip", "download", "--quiet", "--dest", folder, "--only-binary=:all:",
        "--python-version=3.11", "--implementation=cp", "--abi=cp311", *tags, *requirements,
    )  # fmt: skip


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """pip's downloads are not worth a line each."""


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Podman, dict[str, str]]]:
    scratch = tmp_path_factory.mktemp("images")
    podman = Podman(scratch)
    wheels = scratch / "wheels"
    handler = functools.partial(QuietHandler, directory=str(wheels))
    index = http.server.ThreadingHTTPServer((HOST, 0), handler)
    threading.Thread(target=index.serve_forever, daemon=True).start()
    try:
        wheelhouse(wheels)
        debootstrap_base(podman, scratch)
        built = {}
        for service in TORCH_FREE:
            tag = f"localhost/eigenloop/{service.name.replace('_', '-')}:test"
            # Docker format: the OCI image format has no HEALTHCHECK.
            podman(
                "build", "--format=docker", "--isolation=chroot", "--pull=never",
                "--file", service / "Dockerfile", "--tag", tag,
                "--build-arg", f"BASE_IMAGE={BASE}", "--build-arg", "PIP_NO_INDEX=1",
                "--build-arg", f"PIP_FIND_LINKS=http://{HOST}:{index.server_port}/", REPO,
            )  # fmt: skip
            built[service.name] = tag
        index.shutdown()
        sizes = {
            name: podman("image", "inspect", "--format", "{{.Size}}", tag).stdout.strip() for name, tag in built.items()
        }
        print(f"\nimage sizes (bytes): {sizes}")
        yield podman, built
    finally:
        index.shutdown()
        index.server_close()
        subprocess.run([*podman.prefix, "rm", "--all", "--force"], capture_output=True, timeout=120)
        subprocess.run([*podman.prefix, "system", "reset", "--force"], capture_output=True, timeout=300)
        shutil.rmtree(scratch, ignore_errors=True)
    interfaces = os.listdir("/sys/class/net")
    assert not [i for i in interfaces if i.startswith(("podman", "cni", "veth"))], f"network left behind: {interfaces}"


@pytest.mark.parametrize("service", [s.name for s in TORCH_FREE])
def test_image_serves_health_and_metrics_and_drains(images: tuple[Podman, dict[str, str]], service: str) -> None:
    podman, built = images
    prefix = f"EIGENLOOP_{service.upper()}_"
    port, metrics_port = free_port(), free_port()
    name = f"eigenloop-test-{service.replace('_', '-')}-{port}"
    podman(
        "run", "--detach", "--name", name, "--pull=never", "--network=host",
        "--ulimit=nofile=1024:1024", "--ulimit=nproc=4096:4096",
        # Stops by itself even if this test never gets to stop it.
        "--timeout=300",
        "--env", f"{prefix}HOST={HOST}", "--env", f"{prefix}PORT={port}",
        "--env", f"{prefix}METRICS_PORT={metrics_port}",
        built[service],
    )  # fmt: skip
    try:
        assert wait_for(lambda: health(f"{HOST}:{port}") == "SERVING", timeout_s=60), podman("logs", name).stdout
        with urllib.request.urlopen(f"http://{HOST}:{metrics_port}/metrics", timeout=5) as reply:
            assert f'eigenloop_service_info{{replica="{service}@' in reply.read().decode()
        podman("healthcheck", "run", name)
        podman("stop", "--time=30", name)
        assert podman("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip() == "0"
    finally:
        subprocess.run([*podman.prefix, "rm", "--force", name], capture_output=True, timeout=60)


@pytest.mark.parametrize("service", [s.name for s in TORCH_FREE])
def test_image_runs_as_non_root_without_torch(images: tuple[Podman, dict[str, str]], service: str) -> None:
    podman, built = images
    probe = "import importlib.util, os; print(os.getuid(), importlib.util.find_spec('torch') is None)"
    result = podman(
        "run", "--rm", "--pull=never", "--network=none", "--ulimit=nofile=1024:1024", "--ulimit=nproc=4096:4096",
        "--entrypoint=python3", built[service], "-c", probe,
    )  # fmt: skip
    assert result.stdout.split() == ["10001", "True"]

"""Escape attempts against the Python checker sandbox: each one fails, and the failure is reported as the checker's
error (or, for secrets, the secret is simply not there to find).

Tried: network (socket modules, a hand-loaded extension, the namespace itself, as root and as a non-root caller),
host secrets (environment variables, /proc/self/environ, /proc/1/environ), writes outside the sandbox (/tmp, $HOME,
the caller's cwd), processes (fork bomb, exec, spawn, threads, signals to the parent), resources (busy loop, CPU,
2 GB allocation, growing memory, flooding output), native code (ctypes, hand-made bytecode, marshal), and
removing its own limits.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from eigenloop.checkers.sandbox import SandboxLimits
from tests.reliability.conftest import Trials
from tests.unit.test_sandbox import failed, run

SECRET = "eigenloop-test-secret-4b1d"

BLOCKED = {
    "open a TCP socket": (
        """
        import socket
        def check(state, messages):
            socket.create_connection(("127.0.0.1", 22), timeout=1)
            return 1.0
        """,
        "blocked: import socket",
    ),
    "socket via the C module": ("import _socket\ndef check(s, m): return 1.0", "blocked: import _socket"),
    "socket module already loaded": (
        "import sys\ndef check(s, m): return sys.modules['_socket'].socket()",
        "check() raised KeyError: '_socket'",
    ),
    "load _socket by hand": (
        """
        import _imp
        class Spec:
            name = "_socket"
            origin = "/nonexistent/_socket.so"
        _imp.create_dynamic(Spec)
        """,
        "blocked: import _socket",
    ),
    "read /proc/self/environ": (
        "def check(s, m): return float(b'SECRET' in open('/proc/self/environ', 'rb').read())",
        "blocked: open",
    ),
    "read /proc/1/environ": (
        "def check(s, m): return float(len(open('/proc/1/environ', 'rb').read()) > 0)",
        "blocked: open",
    ),
    "read the parent's environ": (
        "import os\ndef check(s, m): return float(len(open(f'/proc/{os.getppid()}/environ', 'rb').read()) > 0)",
        "blocked: open",
    ),
    "read /etc/passwd": ("def check(s, m): return len(open('/etc/passwd').read()) > 0", "blocked: open"),
    "write /tmp/outside": (
        "def check(s, m):\n    open('/tmp/outside', 'w').write('x')\n    return 1.0",
        "blocked: open",
    ),
    "write $HOME with os.open": (
        "import os\ndef check(s, m): os.open(os.path.expanduser('~/planted'), os.O_CREAT | os.O_WRONLY)",
        "blocked: open",
    ),
    "make a directory": ("import os\ndef check(s, m): os.mkdir('/tmp/eigenloop-planted')", "blocked: os.mkdir"),
    "remove a file": ("import os\ndef check(s, m): os.remove('/tmp/anything')", "blocked: os.remove"),
    "list a directory": ("import os\ndef check(s, m): return len(os.listdir('/')) > 0", "blocked: os.listdir"),
    "fork bomb": ("import os\ndef check(state, messages):\n    while True:\n        os.fork()", "blocked: os.fork"),
    "fork, catching the error": (
        "import os\ndef check(s, m):\n    try:\n        os.fork()\n    except BaseException:\n        return 1.0",
        "blocked: os.fork",
    ),
    "start a thread": (
        "import _thread\ndef check(s, m):\n    _thread.start_new_thread(print, ())\n    return 1.0",
        "check() raised RuntimeError: can't start new thread",
    ),
    "subprocess": ("import subprocess\ndef check(s, m): subprocess.run(['true'])", "blocked: import subprocess"),
    "os.system": ("import os\ndef check(s, m): os.system('true'); return 1.0", "blocked: os.system"),
    "posix_spawn": ("import os\ndef check(s, m): os.posix_spawn('/bin/true', ['true'], {})", "blocked: os.posix_spawn"),
    "exec": ("import os\ndef check(s, m): os.execv('/bin/true', ['true'])", "blocked: os.exec"),
    "kill the parent": ("import os\ndef check(s, m): os.kill(os.getppid(), 9)", "blocked: os.kill"),
    "ctypes": ("import ctypes\ndef check(s, m): return ctypes.CDLL(None).getpid() * 0.0", "blocked: import ctypes"),
    "hand-made bytecode": (
        "def check(s, m): return check.__code__.replace(co_consts=(None,))",
        "blocked: code.__new__",
    ),
    "marshal": ("import marshal\ndef check(s, m): marshal.loads(b'N')", "blocked: marshal.loads"),
    "raise its own CPU limit": (
        "import resource\ndef check(s, m): resource.setrlimit(resource.RLIMIT_CPU, (100, 100))",
        "blocked: resource.setrlimit",
    ),
    "remove the audit hook via gc": (
        "import gc\ndef check(s, m): return float(len(gc.get_objects()) > 0)",
        "blocked: import gc",
    ),
    "crash the interpreter": ("import os\ndef check(s, m): os.abort()", "crashed: killed by SIGABRT"),
}

EXHAUSTION = {
    "allocate 2 GB": (
        "def check(s, m):\n    b = bytearray(2 * 1024**3)\n    return 1.0",
        SandboxLimits(),
        "memory limit (256 MB)",
    ),
    # A small limit keeps this quick: touching memory page by page is slow on some VMs.
    "grow memory until refused": (
        "def check(s, m):\n    xs = []\n    while True: xs.append(' ' * 10**6)",
        SandboxLimits(timeout_s=5.0, memory_mb=64),
        "memory limit (64 MB)",
    ),
    "busy loop past the wall clock": (
        "def check(s, m):\n    while True: pass",
        SandboxLimits(timeout_s=1.0),
        "timeout after 1.0s",
    ),
    "busy loop past the CPU limit": (
        "def check(s, m):\n    while True: pass",
        SandboxLimits(timeout_s=10.0, cpu_s=1),
        "cpu time limit (1s)",
    ),
    "ignore SIGXCPU and keep spinning": (
        "import _signal\n_signal.signal(_signal.SIGXCPU, _signal.SIG_IGN)\ndef check(s, m):\n    while True: pass",
        SandboxLimits(timeout_s=10.0, cpu_s=1),
        "killed by SIGKILL (the hard cpu time limit",
    ),
    "close its pipes and spin": (
        "import os\ndef check(s, m):\n    os.close(1)\n    os.close(2)\n    while True: pass",
        SandboxLimits(timeout_s=0.5),
        "timeout after 0.5s",
    ),
    "flood its output": (
        "def check(s, m):\n    print('x' * 10_000_000)\n    return 1.0",
        SandboxLimits(timeout_s=2.0, cpu_s=2),
        "output limit: more than 65536 bytes",
    ),
}


@pytest.mark.parametrize("name", list(BLOCKED))
def test_escape_attempt_is_stopped_and_reported(name: str, trials: Trials) -> None:
    source, expected = BLOCKED[name]
    pid, cwd = os.getpid(), os.getcwd()
    outcome = run(source)
    trials.record("sandbox", name, outcome.error or f"value {outcome.value}")
    failed(outcome, expected)
    assert (os.getpid(), os.getcwd()) == (pid, cwd)
    assert not Path("/tmp/outside").exists() and not Path("/tmp/eigenloop-planted").exists()
    assert not (Path.home() / "planted").exists()


@pytest.mark.parametrize("name", list(EXHAUSTION))
def test_resource_exhaustion_is_stopped_and_reported(name: str, trials: Trials) -> None:
    source, limits, expected = EXHAUSTION[name]
    outcome = run(source, limits)
    trials.record("sandbox", name, outcome.error or f"value {outcome.value}")
    failed(outcome, expected)


def test_host_environment_is_not_visible(trials: Trials, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EIGENLOOP_AUTH_TOKEN", SECRET)
    source = """
    import os
    def check(state, messages):
        leaked = any(state["secret"] in v for v in os.environ.values()) or "EIGENLOOP_AUTH_TOKEN" in os.environ
        return float(leaked)
    """
    outcome = run(source, state={"secret": SECRET})
    trials.record(
        "sandbox", "read a host secret from os.environ", "not visible" if outcome.value == 0.0 else str(outcome)
    )
    assert outcome.value == 0.0, outcome


def test_files_in_the_callers_cwd_are_out_of_reach(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trials: Trials
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET)
    monkeypatch.chdir(tmp_path)
    for tried, source in {
        "read a file in the caller's cwd": "def check(s, m): return float(open('secret.txt').read() != '')",
        "read a file by absolute path": f"def check(s, m): return float(open({str(secret)!r}).read() != '')",
        "plant a file in the caller's cwd": "def check(s, m):\n    open('planted.txt', 'w').write('x')\n    return 1.0",
    }.items():
        outcome = run(source)
        trials.record("sandbox", tried, outcome.error or f"value {outcome.value}")
        failed(outcome, "blocked: open")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret.txt"]
    assert secret.read_text() == SECRET


@pytest.mark.skipif(os.geteuid() != 0, reason="privileges are dropped only when the caller is root")
def test_root_caller_runs_the_checker_as_nobody(trials: Trials) -> None:
    outcome = run("import os\ndef check(s, m): return os.getuid() / 65534")
    trials.record(
        "sandbox", "run as the caller's uid (root)", "runs as nobody" if outcome.value == 1.0 else str(outcome)
    )
    assert outcome.value == 1.0


NAMESPACE_PROBE = "import os\ndef check(s, m): return float(os.readlink('/proc/self/ns/net') != s['ns'])"


def namespaces_permitted() -> bool:
    probe = "import ctypes, sys; sys.exit(ctypes.CDLL(None).unshare(0x40000000 | 0x10000000) != 0)"
    return subprocess.run([sys.executable, "-c", probe], check=False).returncode == 0


@pytest.mark.skipif(not namespaces_permitted(), reason="network namespaces are not permitted here")
def test_checker_has_no_network_namespace_of_the_host(trials: Trials) -> None:
    ours = os.readlink("/proc/self/ns/net")
    outcome = run(NAMESPACE_PROBE, state={"ns": ours})
    trials.record(
        "sandbox", "share the host's network namespace", "own empty namespace" if outcome.value == 1.0 else str(outcome)
    )
    assert outcome.value == 1.0


@pytest.mark.skipif(
    shutil.which("unshare") is None or not namespaces_permitted(), reason="needs unshare(1) and user namespaces"
)
def test_non_root_caller_still_gets_a_network_namespace(trials: Trials) -> None:
    # `unshare --user --map-user` makes the caller itself non-root (uid 1000 in a user namespace of its own), so the
    # sandbox takes its unprivileged path: a nested user namespace that holds an empty network namespace.
    program = textwrap.dedent(
        f"""
        import json, os
        from eigenloop.checkers.sandbox import run_python_checker
        assert os.geteuid() != 0
        ours = os.readlink("/proc/self/ns/net")
        result = run_python_checker({NAMESPACE_PROBE!r}, {{"ns": ours}}, [])
        blocked = run_python_checker("import _socket\\ndef check(s, m): return 1.0", {{}}, [])
        print(json.dumps([result.value, blocked.error]))
        """
    )
    done = subprocess.run(
        ["unshare", "--user", "--map-user=1000", "--map-group=1000", sys.executable, "-c", program],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    value, blocked = json.loads(done.stdout.strip().splitlines()[-1])
    trials.record(
        "sandbox",
        "share the host's network namespace (non-root caller)",
        "own empty namespace" if value == 1.0 else f"value {value}",
    )
    assert value == 1.0
    assert blocked == "checker source raised ImportError: blocked: import _socket"

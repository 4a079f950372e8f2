"""The Python checker sandbox: results come back, and every escape or failure becomes a checker error."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from eigenloop.checkers.sandbox import CheckerOutcome, SandboxLimits, run_python_checker

FAST = SandboxLimits(timeout_s=2.0, cpu_s=2)
STATE: dict[str, Any] = {"db": {"orders": {"O1": {"status": "cancelled", "items": [1, 2]}}}, "n": 3}
MESSAGES: list[dict[str, Any]] = [
    {"role": "user", "content": "Cancel order O1"},
    {"role": "assistant", "content": "Order O1 is cancelled."},
]


def run(source: str, limits: SandboxLimits = FAST, state: dict[str, Any] | None = None) -> CheckerOutcome:
    return run_python_checker(textwrap.dedent(source), STATE if state is None else state, MESSAGES, limits)


def failed(outcome: CheckerOutcome, expected: str) -> None:
    assert outcome.value is None, outcome
    assert outcome.error is not None and expected in outcome.error, outcome


def test_passing_checker_reads_state_and_messages() -> None:
    outcome = run(
        """
        from __future__ import annotations
        import json, re
        from typing import Any

        def check(state: dict[str, Any], messages: list[dict[str, Any]]) -> float:
            print("debug output is allowed")  # goes to stderr, within the output limit
            cancelled = state["db"]["orders"]["O1"]["status"] == "cancelled"
            told = any(re.search(r"cancelled", m["content"]) for m in messages if m["role"] == "assistant")
            return (cancelled + told) / 2 if json.dumps(state) else 0.0
        """
    )
    assert outcome == CheckerOutcome(1.0, None)


@pytest.mark.parametrize(("returned", "value"), [("0.25", 0.25), ("0", 0.0), ("True", 1.0), ("1", 1.0)])
def test_numbers_in_range_pass(returned: str, value: float) -> None:
    assert run(f"def check(state, messages):\n    return {returned}\n") == CheckerOutcome(value, None)


def test_checker_cannot_modify_the_callers_state() -> None:
    state = copy.deepcopy(STATE)
    outcome = run(
        """
        def check(state, messages):
            state["db"]["orders"]["O1"]["status"] = "hacked"
            state.clear()
            messages.append({"role": "assistant", "content": "injected"})
            return 1.0
        """,
        state=state,
    )
    assert outcome == CheckerOutcome(1.0, None)
    assert state == STATE
    assert len(MESSAGES) == 2


BLOCKED = {
    "socket": (
        """
        import socket
        def check(state, messages):
            socket.create_connection(("127.0.0.1", 22), timeout=1)
            return 1.0
        """,
        "blocked: import socket",
    ),
    "socket via the C module": ("import _socket\ndef check(s, m): return 1.0", "blocked: import _socket"),
    "fork bomb": (
        """
        import os
        def check(state, messages):
            while True:
                os.fork()
        """,
        "blocked: os.fork",
    ),
    "fork caught": (
        """
        import os
        def check(state, messages):
            try:
                os.fork()
            except BaseException:
                pass
            return 1.0  # never reached: a blocked operation ends the checker, it cannot be caught
        """,
        "blocked: os.fork",
    ),
    "subprocess": ("import subprocess\ndef check(s, m): subprocess.run(['true'])", "blocked: import subprocess"),
    "os.system": ("import os\ndef check(s, m): os.system('true'); return 1.0", "blocked: os.system"),
    "posix_spawn": ("import os\ndef check(s, m): os.posix_spawn('/bin/true', ['true'], {})", "blocked: os.posix_spawn"),
    "exec": ("import os\ndef check(s, m): os.execv('/bin/true', ['true'])", "blocked: os.exec"),
    "kill the parent": ("import os\ndef check(s, m): os.kill(os.getppid(), 9)", "blocked: os.kill"),
    "read /etc/passwd": ("def check(s, m): return len(open('/etc/passwd').read()) > 0", "blocked: open"),
    "list a directory": ("import os\ndef check(s, m): return len(os.listdir('/')) > 0", "blocked: os.listdir"),
    "write a file": ("def check(s, m):\n    open('out.txt', 'w').write('x')\n    return 1.0", "blocked: open"),
    "remove a file": ("import os\ndef check(s, m): os.remove('/tmp/anything')", "blocked: os.remove"),
    "ctypes": (
        "import ctypes\ndef check(s, m): return ctypes.CDLL(None).getpid() * 0.0",
        "blocked: import ctypes",
    ),
    # _imp loads an extension module without the import system; it is audited as an import all the same.
    "extension module by hand": (
        """
        import _imp
        class Spec:
            name = "_posixsubprocess"
            origin = "/nonexistent/_posixsubprocess.so"
        _imp.create_dynamic(Spec)
        """,
        "blocked: import _posixsubprocess",
    ),
    "hand-made bytecode": (
        "def check(s, m): return check.__code__.replace(co_consts=(None,))",
        "blocked: code.__new__",
    ),
    "marshal": ("import marshal\ndef check(s, m): marshal.loads(b'N')", "blocked: marshal.loads"),
    "raise an rlimit": (
        "import resource\ndef check(s, m): resource.setrlimit(resource.RLIMIT_CPU, (100, 100))",
        "blocked: resource.setrlimit",
    ),
}


@pytest.mark.parametrize("name", list(BLOCKED))
def test_escape_attempts_end_as_checker_errors(name: str) -> None:
    source, expected = BLOCKED[name]
    pid, cwd = os.getpid(), os.getcwd()
    failed(run(source), expected)
    assert (os.getpid(), os.getcwd()) == (pid, cwd)


def test_files_in_the_callers_cwd_are_out_of_reach(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cret")
    monkeypatch.chdir(tmp_path)
    failed(run("def check(s, m): return float(open('secret.txt').read() == 's3cret')"), "blocked: open")
    failed(run(f"def check(s, m): return float(open({str(secret)!r}).read() == 's3cret')"), "blocked: open")
    failed(run("def check(s, m):\n    open('planted.txt', 'w').write('x')\n    return 1.0"), "blocked: open")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret.txt"]
    assert secret.read_text() == "s3cret"


def test_working_directory_is_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert run("def check(s, m): return 1.0").value == 1.0
    failed(run("def check(s, m):\n    while True: pass", SandboxLimits(timeout_s=0.5)), "timeout after 0.5s")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="privileges are dropped only when the caller is root")
def test_root_caller_runs_the_checker_as_nobody() -> None:
    assert run("import os\ndef check(s, m): return os.getuid() / 65534").value == 1.0


@pytest.mark.skipif(os.geteuid() != 0, reason="the network namespace is created only when the caller is root")
def test_root_caller_runs_the_checker_without_network() -> None:
    probe = "import ctypes, sys; sys.exit(ctypes.CDLL(None).unshare(0x40000000) != 0)"
    if subprocess.run([sys.executable, "-c", probe], check=False).returncode != 0:
        pytest.skip("network namespaces are not permitted here")
    ours = os.readlink("/proc/self/ns/net")
    source = "import os\ndef check(s, m): return float(os.readlink('/proc/self/ns/net') != s['ns'])"
    assert run(source, state={"ns": ours}).value == 1.0


def test_memory_exhaustion() -> None:
    failed(run("def check(s, m):\n    b = bytearray(2 * 1024**3)\n    return 1.0"), "memory limit (256 MB)")
    # A smaller limit keeps this quick: touching memory page by page is slow on some VMs.
    grow = "def check(s, m):\n    xs = []\n    while True: xs.append(' ' * 10**6)"
    failed(run(grow, SandboxLimits(timeout_s=5.0, memory_mb=64)), "memory limit (64 MB)")


def test_infinite_loop_times_out_without_hanging_the_caller() -> None:
    start = time.monotonic()
    failed(run("def check(s, m):\n    while True: pass"), "timeout after 2.0s")
    assert time.monotonic() - start < 3.5


def test_cpu_limit() -> None:
    limits = SandboxLimits(timeout_s=10.0, cpu_s=1)
    failed(run("def check(s, m):\n    while True: pass", limits), "cpu time limit (1s)")


def test_hard_cpu_limit_holds_when_sigxcpu_is_ignored() -> None:
    source = """
    import _signal
    _signal.signal(_signal.SIGXCPU, _signal.SIG_IGN)
    def check(s, m):
        while True:
            pass
    """
    failed(run(source, SandboxLimits(timeout_s=10.0, cpu_s=1)), "killed by SIGKILL (the hard cpu time limit")


def test_checker_that_closes_its_pipes_still_times_out() -> None:
    source = "import os\ndef check(s, m):\n    os.close(1)\n    os.close(2)\n    while True: pass"
    failed(run(source, SandboxLimits(timeout_s=0.5)), "timeout after 0.5s")


def test_oversized_output() -> None:
    failed(run("def check(s, m):\n    print('x' * 10_000_000)\n    return 1.0"), "output limit: more than 65536 bytes")


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("def check(s, m)\n    return 1.0", "syntax error: expected ':' (line 1)"),
        ("x = 1", "the source defines no check(state, messages) function"),
        ("check = 0.5", "the source defines no check(state, messages) function"),
        ("raise RuntimeError('at import')", "checker source raised RuntimeError: at import"),
        ("import numpy", "checker source raised ImportError: blocked: import numpy"),
        ("def check(s, m): raise ValueError('bad state')", "check() raised ValueError: bad state"),
        ("def check(s, m): return s['missing']", "check() raised KeyError: 'missing'"),
        ("def check(s, m): return check(s, m)", "check() raised RecursionError"),
        ("import sys\ndef check(s, m): sys.exit(0)", "check() raised SystemExit"),
        ("def check(s, m): return 'yes'", "returned 'yes', not a number in [0, 1]"),
        ("def check(s, m): return 1.5", "returned 1.5, not a number in [0, 1]"),
        ("def check(s, m): return -0.1", "returned -0.1, not a number in [0, 1]"),
        ("def check(s, m): return float('nan')", "returned nan, not a number in [0, 1]"),
        ("def check(s, m): return float('inf')", "returned inf, not a number in [0, 1]"),
        ("def check(s, m): return None", "returned None, not a number in [0, 1]"),
        ("def check(s, m): return 10**5000", "returned a huge int, not a number in [0, 1]"),
        ("def check(s, m): return [1.0]", "returned a list, not a number in [0, 1]"),
        ("def check(s, m): return object()", "returned a object, not a number in [0, 1]"),
    ],
)
def test_checker_failures(source: str, expected: str) -> None:
    failed(run(source), expected)


def test_crash_is_reported() -> None:
    failed(run("import os\ndef check(s, m): os.abort()"), "crashed: killed by SIGABRT")


def test_unserializable_input() -> None:
    failed(run("def check(s, m): return 1.0", state={"x": object()}), "JSON-serializable")


def test_invalid_limits() -> None:
    failed(run("def check(s, m): return 1.0", SandboxLimits(timeout_s=0.0)), "invalid sandbox limits")


def test_concurrent_runs_do_not_mix() -> None:
    source = "def check(state, messages):\n    return state['i'] / 16"
    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(lambda i: run(source, state={"i": i}), range(16)))
    assert outcomes == [CheckerOutcome(i / 16, None) for i in range(16)]


def test_runs_are_deterministic() -> None:
    # Set iteration order of strings depends on the hash seed, which the sandbox fixes.
    source = """
    def check(state, messages):
        order = list({"alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"})
        return (hash("eigenloop") % 1000 + order.index("theta")) / 1010
    """
    outcomes = {run(source) for _ in range(20)}
    assert len(outcomes) == 1
    (outcome,) = outcomes
    assert outcome.value is not None and 0.0 <= outcome.value <= 1.0

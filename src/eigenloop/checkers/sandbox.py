"""Run an untrusted Python checker (``check(state, messages) -> float``) in a sandboxed subprocess.

Python checkers come from synthesized tasks, so their source is untrusted. ``run_python_checker`` runs it in a
fresh interpreter and turns every way it can go wrong into a ``CheckerOutcome`` with ``value=None`` and an error
string; the function itself never raises and returns within about ``timeout_s + 1`` seconds.

How the child is built, in order (see ``_child_main``):
  1. ``python -S -s -P -B -X utf8 -W ignore`` with an environment of only ``PYTHONHASHSEED=0`` (no site, no user
     site, no cwd on sys.path, deterministic hashing; ``-I`` would ignore PYTHONHASHSEED), in an empty temporary
     working directory that is removed afterwards, in its own session / process group.
  2. On Linux: a new, empty network namespace (no interfaces up, not even loopback); without root, inside a new
     user namespace of its own, where the kernel allows unprivileged user namespaces.
  3. The stdlib modules a checker may use are imported (``CHECKER_MODULES``); later imports of anything not yet
     loaded are refused.
  4. As root: drop to uid/gid 65534 (nobody) with no supplementary groups.
  5. rlimits: CPU seconds, address space, file size 0, 8 open files, 0 processes, no core dumps. If they cannot
     be applied, the checker does not run.
  6. The request (source, state, messages) is read as JSON from stdin, which is then closed.
  7. The source is compiled (no checker code runs yet), then an audit hook (``sys.addaudithook``; it cannot be
     removed) is installed, and only then does the checker's code run: its module body, then ``check()``.

Guaranteed (kernel-enforced, whatever the checker does, native code included):
  * CPU time <= ``cpu_s`` (SIGXCPU; SIGKILL a second later if that is ignored), address space <= ``memory_mb``
    (allocations fail: ``memory limit``), wall clock <= ``timeout_s`` (the parent kills the whole process group),
    output on stdout + stderr <= ``output_bytes`` (the parent stops reading and kills it), no files written.
  * No new processes or threads: RLIMIT_NPROC=0 holds once the child is not root (we drop to nobody when started
    as root; a non-root child keeps the caller's uid, for which the limit holds too).
  * On Linux, as root or where unprivileged user namespaces are allowed: no network at all (empty namespace).
  * As root: no access to files only root may read or write, and no signals to processes of other users (the
    caller included).
  * The caller's objects are never shared: the checker sees a JSON copy, and only a JSON result comes back,
    which the parent validates again (a finite number in [0, 1] from a child that exited cleanly).

Defence in depth only (the audit hook; it stops Python-level attempts, not native code or interpreter bugs):
  * ``open`` of any path, directory listing and every other ``os.*`` audited operation (kill, fork, exec,
    system, posix_spawn, remove, chmod, ...), ``socket.*``, ``subprocess.*``, ``ctypes.*``, ``mmap``, ``marshal``,
    crafting code objects, ``gc`` introspection, tracing/profiling hooks, ``resource.setrlimit``: the first such
    event ends the checker at once with ``blocked: <event>`` (it cannot be caught).
  * ``import`` of anything not preloaded raises ImportError (``blocked: import <name>``), so code with an
    optional import can fall back.

Not guaranteed:
  * Without root the uid is the caller's, and where no namespace can be created there is no network namespace
    either: file access, signals to the caller and (then) the network are stopped only by the audit hook, and a
    native-code escape would run with the caller's rights (it still cannot fork or exceed the rlimits).
  * Reading world-readable files is stopped only by the audit hook; metadata calls the hook does not see
    (``os.stat``) still work; concurrent sandboxes share uid 65534.
  * A CPython memory-safety bug reachable from pure Python would bypass the hook (the rlimits, uid and
    namespace still hold). Determinism holds for deterministic checkers (hash seed and flags are fixed; time,
    ``id()`` and CPU-speed-dependent timeouts are not).
POSIX only (Linux for the namespace and WNOWAIT). The checker can import only modules already loaded: those in
``CHECKER_MODULES``, what they import (random, locale, ...) and the interpreter's own (os, sys, time, ...), whose
dangerous calls the hook stops. Prints go to stderr and count toward the output limit; they are otherwise dropped.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NoReturn

# Imported by the child before the audit hook goes up; the checker may import these and nothing else.
CHECKER_MODULES: tuple[str, ...] = (
    "__future__",
    "_strptime",  # datetime.strptime imports it lazily
    "bisect",
    "collections",
    "copy",
    "datetime",
    "decimal",
    "difflib",
    "enum",
    "fractions",
    "functools",
    "heapq",
    "itertools",
    "json",
    "math",
    "operator",
    "re",
    "statistics",
    "string",
    "textwrap",
    "typing",
    "unicodedata",
)

_VIOLATION_EXIT = 3  # the child's exit status after the audit hook stopped it
_MAX_ERROR_CHARS = 1000


@dataclass(frozen=True)
class SandboxLimits:
    timeout_s: float = 5.0  # wall clock, enforced by the parent
    cpu_s: int = 5  # RLIMIT_CPU
    memory_mb: int = 256  # RLIMIT_AS
    output_bytes: int = 65536  # stdout + stderr together, including the result line


@dataclass(frozen=True)
class CheckerOutcome:
    value: float | None  # None when the checker failed
    error: str | None


def run_python_checker(
    source: str,
    state: dict[str, Any],
    messages: list[dict[str, Any]],
    limits: SandboxLimits = SandboxLimits(),  # frozen, so one shared default is safe
) -> CheckerOutcome:
    """Run ``check(state, messages)`` from ``source`` in a sandboxed subprocess; never raises."""
    try:
        return _run(source, state, messages, limits)
    except Exception as e:  # a bug here must not take the caller down; report it as a checker error
        return CheckerOutcome(None, _clip(f"sandbox failure: {type(e).__name__}: {e}"))


def _run(source: str, state: dict[str, Any], messages: list[dict[str, Any]], limits: SandboxLimits) -> CheckerOutcome:
    valid_timeout = math.isfinite(limits.timeout_s) and limits.timeout_s > 0
    if not (valid_timeout and limits.cpu_s >= 1 and limits.memory_mb >= 32 and limits.output_bytes >= 1024):
        return CheckerOutcome(None, f"invalid sandbox limits: {limits}")
    try:
        # Serialising here is what makes the checker's view a copy: nothing it does can reach the caller's objects.
        payload = json.dumps({"source": source, "state": state, "messages": messages}).encode()
    except (TypeError, ValueError) as e:
        return CheckerOutcome(None, _clip(f"state and messages must be JSON-serializable: {e}"))

    argv = [
        sys.executable,
        *("-S", "-s", "-P", "-B", "-X", "utf8", "-W", "ignore"),
        *("-c", _child_program(), str(math.ceil(limits.cpu_s)), str(math.ceil(limits.memory_mb)), str(_VIOLATION_EXIT)),
        ",".join(CHECKER_MODULES),
    ]
    # The input goes through an unlinked temporary file rather than a pipe, so a large state cannot deadlock us.
    with (
        tempfile.TemporaryDirectory(prefix="eigenloop-checker-", ignore_cleanup_errors=True) as workdir,
        tempfile.TemporaryFile() as stdin,
    ):
        stdin.write(payload)
        stdin.seek(0)
        try:
            # No preexec_fn: it is unsafe in a multi-threaded parent (gRPC servers are); the child limits itself.
            proc = subprocess.Popen(
                argv,
                stdin=stdin,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=workdir,
                env={"PYTHONHASHSEED": "0"},
                close_fds=True,
                start_new_session=True,  # its own process group, so one killpg reaches anything it left behind
            )
        except OSError as e:
            return CheckerOutcome(None, _clip(f"could not start the sandbox: {e}"))
        try:
            ending, stdout, stderr = _collect(proc, time.monotonic() + limits.timeout_s, limits.output_bytes)
        finally:
            _kill_group(proc)  # before reaping, so the process group id cannot have been reused
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
            # Unkillable only if stuck in the kernel; then Popen reaps it later and we do not wait for it.
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=1.0)

    if ending == "timeout":
        return CheckerOutcome(None, f"timeout after {float(limits.timeout_s)}s")
    if ending == "overflow":
        return CheckerOutcome(None, f"output limit: more than {limits.output_bytes} bytes written")
    return _interpret(proc.returncode, stdout, stderr, limits)


def _collect(proc: subprocess.Popen[bytes], deadline: float, limit: int) -> tuple[str, bytes, bytes]:
    """Read stdout and stderr until both close, the deadline passes or more than ``limit`` bytes arrive."""
    assert proc.stdout is not None and proc.stderr is not None
    out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
    chunks = {out_fd: bytearray(), err_fd: bytearray()}
    total = 0
    with selectors.DefaultSelector() as selector:
        for fd in chunks:
            selector.register(fd, selectors.EVENT_READ)
        while selector.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return "timeout", bytes(chunks[out_fd]), bytes(chunks[err_fd])
            for key, _ in selector.select(remaining):
                data = os.read(key.fd, 65536)
                if not data:
                    selector.unregister(key.fd)
                    continue
                chunks[key.fd] += data
                total += len(data)
                if total > limit:
                    return "overflow", bytes(chunks[out_fd]), bytes(chunks[err_fd])
    # Both pipes are closed, normally because the child is exiting. Wait for that without reaping it (WNOWAIT), so
    # the caller's killpg still addresses our process group; one that closed its pipes and went on is a timeout.
    while not _exited(proc.pid):
        if time.monotonic() >= deadline:
            return "timeout", bytes(chunks[out_fd]), bytes(chunks[err_fd])
        time.sleep(0.001)
    return "exited", bytes(chunks[out_fd]), bytes(chunks[err_fd])


def _exited(pid: int) -> bool:
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:  # reaped by someone else (a SIGCHLD handler in the host program)
        return True


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _interpret(returncode: int | None, stdout: bytes, stderr: bytes, limits: SandboxLimits) -> CheckerOutcome:
    result = _last_json_line(stdout)
    if result is not None:
        error = result.get("error")
        if isinstance(error, str):
            return CheckerOutcome(None, _clip(error))
        value = result.get("value")
        # Validated again here: the child is untrusted and may have written this line itself.
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            value = math.nan
        if returncode == 0 and math.isfinite(value) and 0.0 <= value <= 1.0:
            return CheckerOutcome(float(value), None)
    if returncode == _VIOLATION_EXIT:
        return CheckerOutcome(None, "blocked: an operation the sandbox forbids")
    if returncode is not None and returncode < 0:
        sig = -returncode
        if sig == signal.SIGXCPU:
            return CheckerOutcome(None, f"cpu time limit ({limits.cpu_s}s)")
        if sig == signal.SIGKILL:  # not ours (we kill only once the child has exited or timed out): the kernel's
            return CheckerOutcome(None, "killed by SIGKILL (the hard cpu time limit, or out of memory)")
        if sig == signal.SIGXFSZ:
            return CheckerOutcome(None, "file size limit")
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        return CheckerOutcome(None, f"crashed: killed by {name}")
    tail = stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
    detail = f": {tail[0][-200:]}" if tail[0] else ""
    return CheckerOutcome(None, _clip(f"exited with status {returncode} without a result{detail}"))


def _last_json_line(stdout: bytes) -> dict[str, Any] | None:
    lines = stdout.strip().splitlines()
    if not lines:
        return None
    try:
        parsed = json.loads(lines[-1])
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 3] + "..."


@lru_cache(maxsize=1)
def _child_program() -> str:
    # _child_main is shipped as source, so it is linted and type-checked with this module but imports nothing
    # from it. The future import keeps its annotations unevaluated in the child.
    return f"from __future__ import annotations\n{inspect.getsource(_child_main)}\n_child_main()\n"


def _child_main() -> None:  # pragma: no cover - runs only inside the sandbox subprocess
    """The sandbox subprocess: set up isolation, then run the checker and write one JSON line to stdout."""
    import builtins
    import json
    import math
    import os
    import resource
    import sys

    cpu_s, memory_mb, violation_exit = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    preload = sys.argv[4].split(",")
    # Bound before any untrusted code runs; a checker that patches json or os only affects its own result.
    write, exit_, dumps = os.write, os._exit, json.dumps

    def emit(result: dict[str, object]) -> NoReturn:
        # The parent reads the last line of stdout; the leading newline ends any stray output before it.
        try:
            line = dumps(result)
        except BaseException:
            line = '{"error": "could not encode the checker result"}'
        # Plain try/except here and below: the child avoids helpers from modules the checker could patch.
        try:  # noqa: SIM105
            sys.stderr.flush()  # the checker's own prints first
        except BaseException:
            pass
        try:
            write(1, b"\n" + line.encode("ascii", "replace") + b"\n")
        finally:
            exit_(0)

    def describe(exc: BaseException) -> str:
        try:
            text = str(exc)
        except BaseException:
            text = "<unprintable>"
        return f"{type(exc).__name__}: {text}"[:500] if text else type(exc).__name__

    # Privileged steps first. A network namespace with nothing in it is the real network guard. Root creates it
    # directly; anyone else inside a new user namespace of their own (unprivileged user namespaces), which grants
    # nothing outside it: file access and rlimits are still checked against the caller's real uid.
    clone_newnet, clone_newuser = 0x40000000, 0x10000000
    try:
        flags = clone_newnet if os.geteuid() == 0 else clone_newnet | clone_newuser
        unshare = getattr(os, "unshare", None)  # Python >= 3.12
        if unshare is not None:
            unshare(flags)
        else:
            import ctypes

            ctypes.CDLL(None).unshare(flags)  # -1 when not permitted: as below, the audit hook guards the network
    except Exception:
        pass  # not permitted here (a container without CAP_SYS_ADMIN or user namespaces): the audit hook still applies
    # Forget ctypes, so that `import ctypes` in the checker triggers the import hook like any other import.
    for name in [n for n in sys.modules if n in ("ctypes", "_ctypes") or n.startswith("ctypes.")]:
        del sys.modules[name]

    # Preload while the stdlib is still readable (it may not be for nobody); later imports are refused.
    for name in preload:
        try:  # noqa: SIM105
            __import__(name)
        except ImportError:
            pass

    if os.geteuid() == 0:
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)  # nobody: RLIMIT_NPROC now applies, and root-only files and processes are out of reach
        except OSError:
            pass

    def limit(which: int, soft: int, hard: int) -> None:
        current_hard = resource.getrlimit(which)[1]
        if current_hard != resource.RLIM_INFINITY:
            hard = min(hard, current_hard)
        resource.setrlimit(which, (min(soft, hard), hard))

    try:
        limit(resource.RLIMIT_CPU, cpu_s, cpu_s + 1)  # SIGXCPU at the soft limit, SIGKILL at the hard one
        limit(resource.RLIMIT_AS, memory_mb << 20, memory_mb << 20)
        limit(resource.RLIMIT_FSIZE, 0, 0)
        limit(resource.RLIMIT_NOFILE, 8, 8)
        limit(resource.RLIMIT_NPROC, 0, 0)
        limit(resource.RLIMIT_CORE, 0, 0)
    except (OSError, ValueError) as e:
        emit({"error": f"could not apply resource limits: {describe(e)}"})  # fail closed

    # Preformatted, so that reporting exhaustion does not itself need memory.
    memory_error = b'\n{"error": "memory limit (%d MB)"}\n' % memory_mb
    try:
        request = json.loads(sys.stdin.buffer.read())
        source, state, messages = request["source"], request["state"], request["messages"]
    except MemoryError:
        write(1, memory_error)
        exit_(0)
    except Exception as e:
        emit({"error": f"bad request: {describe(e)}"})
    os.close(0)  # the input file is the one writable file the child holds
    sys.stdout = sys.stderr  # print() goes to stderr; stdout carries only the result

    # Compiling runs none of the checker's code, and it is done before the hook goes up because reporting a syntax
    # error makes CPython try to open "<checker>" to show the offending line (there is no such file in the cwd).
    try:
        code = compile(source, "<checker>", "exec", dont_inherit=True)
    except SyntaxError as e:
        emit({"error": f"syntax error: {e.msg} (line {e.lineno})"})
    except MemoryError:
        write(1, memory_error)
        exit_(0)
    except Exception as e:
        emit({"error": f"cannot compile the checker: {describe(e)}"})

    def make_hook(
        write: Any,
        exit_: Any,
        status: int,
        import_error: type[ImportError],
        exact: frozenset[str],
        prefixes: tuple[str, ...],
    ) -> Any:
        # The hook uses only its own closure (this call's arguments) and methods of builtin types. Nothing but the
        # interpreter references the hook, and its cells are shared with no other function, so the checker can
        # neither remove it nor patch what it relies on (it could through gc, which the hook itself blocks).
        def hook(event: str, args: tuple[Any, ...]) -> None:
            if event == "import":  # raised only for modules not yet imported, i.e. never for the preloaded ones
                raise import_error("blocked: import " + args[0])
            if event in exact or event.startswith(prefixes):
                name = event.encode("ascii", "replace").replace(b'"', b"'").replace(b"\\", b"/")
                try:
                    write(1, b'\n{"error": "blocked: ' + name + b'"}\n')
                finally:
                    exit_(status)  # not an exception: the checker cannot catch it and carry on

        return hook

    sys.addaudithook(
        make_hook(
            write,
            exit_,
            violation_exit,
            ImportError,
            frozenset(
                {
                    "open",
                    "code.__new__",  # hand-made bytecode can corrupt memory
                    "builtins.breakpoint",
                    "pickle.find_class",
                    "setopencodehook",
                    "sys.addaudithook",
                    "sys.settrace",
                    "sys.setprofile",
                    "sys._current_frames",
                    "sys._current_exceptions",
                }
            ),
            (
                "os.",  # fork, exec, system, posix_spawn, kill, listdir, remove, chmod, putenv, ...
                "socket.",
                "subprocess.",
                "pty.",
                "ctypes.",
                "_ctypes.",
                "signal.",
                "resource.",
                "shutil.",
                "fcntl.",
                "mmap.",
                "marshal.",
                "gc.",
                "glob.",
                "pathlib.",
                "tempfile.",
                "sqlite3.",
                "urllib.",
                "http.",
                "ftplib.",
                "smtplib.",
                "imaplib.",
                "poplib.",
                "nntplib.",
                "telnetlib.",
                "webbrowser.",
                "ensurepip.",
                "syslog.",
                "winreg.",
                "_winapi.",
                "msvcrt.",
            ),
        )
    )

    # From here on the checker's code runs.
    namespace: dict[str, Any] = {"__name__": "__checker__", "__builtins__": builtins}
    try:
        exec(code, namespace)
        check = namespace.get("check")
        if not callable(check):
            emit({"error": "the source defines no check(state, messages) function"})
    except MemoryError:
        write(1, memory_error)
        exit_(0)
    except BaseException as e:  # SystemExit included: the checker does not get to end the process its own way
        emit({"error": f"checker source raised {describe(e)}"})
    try:
        value = check(state, messages)
    except MemoryError:
        write(1, memory_error)
        exit_(0)
    except BaseException as e:
        emit({"error": f"check() raised {describe(e)}"})

    # Exact types only: a subclass could lie through __float__ or comparisons. bool counts as 0 or 1.
    if type(value) in (bool, int, float):
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if math.isfinite(number) and 0.0 <= number <= 1.0:
            emit({"value": number})
    # repr only for scalars: other reprs may carry memory addresses, which would make the error nondeterministic.
    try:
        shown = repr(value)[:80] if type(value) in (bool, int, float, str, type(None)) else f"a {type(value).__name__}"
    except ValueError:  # an int too long to print
        shown = "a huge int"
    emit({"error": f"returned {shown}, not a number in [0, 1]"})

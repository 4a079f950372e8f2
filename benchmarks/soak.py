"""Bounded soak: the local stack (toolenv + user_sim) held at its configured maximum concurrency for a few
minutes, with each server's memory (RSS) and open file descriptors sampled, and every episode's outcome counted.

Both servers are started with `--workers N` (which is also their max_concurrent_rpcs), and N episode loops run
at once, each holding one toolenv Session and one user_sim Converse stream: every server thread is busy for the
whole run. As the rollout manager does, a failed episode is retried once; both kinds are counted. (This soak
found that at exactly the limit a new stream was sometimes refused in the moment between the client seeing the
previous one end and gRPC freeing its slot; the runtime now admits against its own count, which drops first.)
An episode is a scripted agent replaying a retail reference dialogue; its reward must be 1.0. The leak check
fits a line to each series over the second half of the run (after warm-up): the slope, and the growth it implies
over that half relative to the level, are reported; `leak_suspected` is set when RSS would grow by more than 5%
or open files by more than 2 over that half. Loopback only; stops by itself.

    python benchmarks/soak.py [--duration-s 180] [--concurrency 16] [--sample-every-s 5]
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc

from benchmarks.common import write_result
from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.domains import sample_tasks
from eigenloop.env.remote import ToolEnvClient
from eigenloop.rollout.scripted import replay_reference
from eigenloop.usersim.remote import UserSimClient
from tests.support import ServiceProcess

SERVICES = {"toolenv": "eigenloop_toolenv.server", "user_sim": "eigenloop_user_sim.server"}
RSS_GROWTH_LIMIT = 0.05
FD_GROWTH_LIMIT = 2.0


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def trend(times: list[float], values: list[float]) -> dict[str, float]:
    """Least-squares slope (per minute) over the second half of the samples, and the growth it implies there."""
    half = len(times) // 2
    xs, ys = times[half:], values[half:]
    if len(xs) < 2:
        return {"slope_per_min": 0.0, "growth_over_second_half": 0.0, "level": ys[-1] if ys else 0.0}
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mean_x) ** 2 for x in xs)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / var if var else 0.0
    return {
        "slope_per_min": round(slope * 60, 4),
        "growth_over_second_half": round(slope * (xs[-1] - xs[0]), 4),
        "level": round(mean_y, 3),
    }


def classify(exc: BaseException) -> str:
    if isinstance(exc, grpc.RpcError):
        return f"grpc {exc.code().name}"
    return type(exc).__name__


def soak(duration_s: float, concurrency: int, sample_every_s: float) -> dict[str, Any]:
    tasks = sample_tasks("retail")[:8]
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()
    stop = threading.Event()
    flags = ["--workers", str(concurrency)]
    with ExitStack() as stack:
        servers = {name: stack.enter_context(ServiceProcess(module, flags)) for name, module in SERVICES.items()}
        envs = stack.enter_context(ToolEnvClient(servers["toolenv"].address))
        users = stack.enter_context(UserSimClient(servers["user_sim"].address))

        def episode(task: pb.Task) -> str:
            with envs.session(task=task) as env, users.conversation(task) as user:
                played = replay_reference(task, env, user)
            return "reward 1.0" if played.reward and played.reward.value == 1.0 else "wrong reward"

        def loop(worker: int) -> None:
            n = worker
            while not stop.is_set():
                task = tasks[n % len(tasks)]
                n += concurrency
                # Like the rollout manager: an infrastructure failure is retried once, then dropped (counted).
                try:
                    outcome = episode(task)
                except Exception as first:
                    try:
                        outcome = f"{episode(task)} on retry (first: {classify(first)})"
                    except Exception as second:
                        outcome = f"error: {classify(second)}"
                with lock:
                    outcomes[outcome] += 1

        samples: dict[str, dict[str, list[float]]] = {
            name: {"t": [], "rss_mb": [], "open_files": []} for name in servers
        }
        errors_per_sample: list[int] = []
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            futures = [pool.submit(loop, worker) for worker in range(concurrency)]
            while (elapsed := time.monotonic() - started) < duration_s:
                for name, server in servers.items():
                    series = samples[name]
                    series["t"].append(round(elapsed, 2))
                    series["rss_mb"].append(round(rss_mb(server.proc.pid), 2))
                    series["open_files"].append(open_files(server.proc.pid))
                with lock:
                    errors_per_sample.append(sum(c for o, c in outcomes.items() if o.startswith("error")))
                stop.wait(sample_every_s)
            stop.set()
            for future in futures:
                future.result()
        wall_s = time.monotonic() - started
        alive = {name: server.proc.poll() is None for name, server in servers.items()}

    report: dict[str, Any] = {}
    for name, series in samples.items():
        rss, files = trend(series["t"], series["rss_mb"]), trend(series["t"], series["open_files"])
        report[name] = {
            "alive_at_end": alive[name],
            "rss_mb": {"first": series["rss_mb"][0], "last": series["rss_mb"][-1], "max": max(series["rss_mb"]), **rss},
            "open_files": {"first": series["open_files"][0], "last": series["open_files"][-1], **files},
            "leak_suspected": rss["growth_over_second_half"] > RSS_GROWTH_LIMIT * rss["level"]
            or files["growth_over_second_half"] > FD_GROWTH_LIMIT,
            "samples": series,
        }
    episodes = sum(outcomes.values())
    increments = [b - a for a, b in zip([0, *errors_per_sample], errors_per_sample, strict=False)]
    return {
        "duration_s": round(wall_s, 1),
        "concurrency": concurrency,
        "episodes": episodes,
        "episodes_per_s": round(episodes / wall_s, 2),
        "outcomes": dict(outcomes),
        "retried": sum(c for o, c in outcomes.items() if "on retry" in o),
        "errors": sum(c for o, c in outcomes.items() if not o.startswith("reward 1.0")),
        "max_errors_in_one_sample_interval": max(increments, default=0),
        "services": report,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration-s", type=float, default=180.0)
    parser.add_argument("--concurrency", type=int, default=16, help="episodes at once = each server's --workers")
    parser.add_argument("--sample-every-s", type=float, default=5.0)
    args = parser.parse_args()
    result = soak(args.duration_s, args.concurrency, args.sample_every_s)
    write_result("soak", result)
    leaks = [name for name, service in result["services"].items() if service["leak_suspected"]]
    return 1 if result["errors"] or leaks else 0


if __name__ == "__main__":
    sys.exit(main())

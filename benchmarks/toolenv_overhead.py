"""toolenv overhead: the same toy episodes in-process and through the gRPC Session stream, in one run.

Each episode opens a session for a toy task, makes 10 tool calls from a fixed script (reads and writes,
one of them a bad call), evaluates the checker, and closes. The gRPC path runs the real toolenv server as
a separate process on loopback, with requests in lock-step (each call waits for its result, as an agent's
next action would). Reports per-episode times, their ratio (gRPC / in-process), and tool calls/s.

Then many episodes at once (`--in-flight` threads, as a rollout manager runs them): each session a Session
stream of its own vs each a key of one Sessions stream (eigenloop.rpc.mux), in interleaved halves. Reports
episodes/s and the CPU per episode of the client process and of the server process for each, and their ratios.

    python benchmarks/toolenv_overhead.py [--episodes 300] [--in-flight 64]
"""

from __future__ import annotations

import argparse
import os
import queue
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import Run, interleaved, write_result
from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.domains import load_domain
from eigenloop.domains.toy.tasks import sample_tasks
from eigenloop.env.remote import ToolEnvClient
from eigenloop.env.session import EnvSession
from eigenloop.protocol import text_message, tool_call
from tests.support import ServiceProcess

CALLS_PER_EPISODE = 10


def script(task: pb.Task) -> list[pb.ToolCall]:
    """10 calls: the task's gold calls, then look-ups and one bad call, as a real agent's episode might."""
    calls = list(task.checker.gold_actions)
    fillers = [
        tool_call("get_user", {"user_id": "U1001"}),
        tool_call("get_order", {"order_id": "O10003"}),
        tool_call("get_order", {"order_id": 10003}),  # wrong type: an error result
        tool_call("get_user", {"user_id": "U1002"}),
    ]
    while len(calls) < CALLS_PER_EPISODE:
        calls.append(fillers[len(calls) % len(fillers)])
    return calls[:CALLS_PER_EPISODE]


def run_in_process(task: pb.Task, calls: list[pb.ToolCall], messages: list[pb.Message]) -> float:
    session = EnvSession(load_domain("toy"), task=task)
    for call in calls:
        session.call(call)
    return session.evaluate(messages).value


Episode = tuple[pb.Task, list[pb.ToolCall], list[pb.Message]]
Runner = Callable[[pb.Task, list[pb.ToolCall], list[pb.Message]], float]


def make_remote(client: ToolEnvClient, pipelined: bool) -> Runner:
    def run(task: pb.Task, calls: list[pb.ToolCall], messages: list[pb.Message]) -> float:
        with client.session(task=task) as session:
            if pipelined:
                session.call_many(calls)
            else:
                for call in calls:
                    session.call(call)
            return session.evaluate(messages).value

    return run


def timed(run: Runner, episodes: list[Episode]) -> tuple[list[float], list[float]]:
    times, rewards = [], []
    for task, calls, messages in episodes:
        start = time.perf_counter()
        rewards.append(run(task, calls, messages))
        times.append(time.perf_counter() - start)
    return times, rewards


def concurrent(client: ToolEnvClient, episodes: list[Episode], in_flight: int) -> float:
    """Run `episodes` from `in_flight` threads, lock-step each; returns the wall seconds."""
    work: queue.SimpleQueue[Episode] = queue.SimpleQueue()
    for episode in episodes:
        work.put(episode)
    run = make_remote(client, pipelined=False)

    def worker() -> None:
        while True:
            try:
                episode = work.get_nowait()
            except queue.Empty:
                return
            run(*episode)

    threads = [threading.Thread(target=worker) for _ in range(in_flight)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start


def streams_vs_multiplexed(address: str, server_pid: int, episodes: list[Episode], in_flight: int) -> dict[str, Any]:
    clients = {
        "streams": ToolEnvClient(address),
        "multiplexed": ToolEnvClient(address, multiplexed=True),
    }
    half = len(episodes) // 2
    parts = (episodes[:half], episodes[half:])

    def run(client: ToolEnvClient) -> Run:
        return lambda turn: (len(parts[turn % 2]), concurrent(client, parts[turn % 2], in_flight))

    pids = {"client": os.getpid(), "server": server_pid}
    try:
        for client in clients.values():  # warm-up: connection, the server's thread pool
            concurrent(client, episodes[: in_flight * 2], in_flight)
        turns = interleaved({name: (run(client), pids) for name, client in clients.items()}, turns=4)
    finally:
        for client in clients.values():
            client.close()
    sides = {
        name: {
            "episodes_per_s": round(side.rate(), 1),
            "client_cpu_ms_per_episode": round(side.cpu_s["client"] / sum(side.episodes) * 1e3, 3),
            "server_cpu_ms_per_episode": round(side.cpu_s["server"] / sum(side.episodes) * 1e3, 3),
        }
        for name, side in turns.items()
    }
    streams, mux = sides["streams"], sides["multiplexed"]
    return {
        "in_flight": in_flight,
        **sides,
        "throughput_ratio": round(mux["episodes_per_s"] / streams["episodes_per_s"], 2),
        "client_cpu_ratio": round(streams["client_cpu_ms_per_episode"] / mux["client_cpu_ms_per_episode"], 2),
        "server_cpu_ratio": round(streams["server_cpu_ms_per_episode"] / mux["server_cpu_ms_per_episode"], 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5, help="alternating in-process/gRPC rounds")
    parser.add_argument("--in-flight", type=int, default=64, help="episodes at once in the streams/multiplexed part")
    args = parser.parse_args()

    tasks = sample_tasks()
    episodes = []
    for i in range(args.episodes):
        task = tasks[i % len(tasks)]
        said = [text_message(pb.ROLE_ASSISTANT, f"It is {info}.") for info in task.checker.communicate_info]
        episodes.append((task, script(task), said))

    with ServiceProcess("eigenloop_toolenv.server") as toolenv, ToolEnvClient(toolenv.address) as client:
        paths: dict[str, Runner] = {
            "in_process": run_in_process,
            "grpc": make_remote(client, pipelined=False),
            "grpc_pipelined": make_remote(client, pipelined=True),
        }
        times: dict[str, list[float]] = {name: [] for name in paths}
        rewards: dict[str, list[float]] = {}
        for run in paths.values():  # warm-up: imports, caches, connection
            timed(run, episodes[:20])
        for _ in range(args.rounds):  # interleaved, so drift in machine load hits every path alike
            for name, run in paths.items():
                t, rewards[name] = timed(run, episodes)
                times[name] += t
        many = streams_vs_multiplexed(toolenv.address, toolenv.proc.pid, episodes * 4, args.in_flight)
    if len({tuple(r) for r in rewards.values()}) != 1:
        raise SystemExit("the paths' rewards differ: the benchmark is not comparing like with like")

    local_ms, grpc_ms, pipelined_ms = (statistics.median(times[name]) * 1e3 for name in paths)
    result = {
        "episodes_per_path": len(times["in_process"]),
        "tool_calls_per_episode": CALLS_PER_EPISODE,
        "in_process_ms_per_episode_p50": round(local_ms, 3),
        "grpc_ms_per_episode_p50": round(grpc_ms, 3),
        "grpc_pipelined_ms_per_episode_p50": round(pipelined_ms, 3),
        # Lock-step: every call waits for its result, as an agent's next action does.
        "ratio": round(grpc_ms / local_ms, 3),
        # The same script with the calls pipelined on the stream (RemoteSession.call_many).
        "ratio_pipelined": round(pipelined_ms / local_ms, 3),
        "in_process_tool_calls_per_s": round(CALLS_PER_EPISODE / (local_ms / 1e3)),
        "grpc_tool_calls_per_s": round(CALLS_PER_EPISODE / (grpc_ms / 1e3)),
        "grpc_pipelined_tool_calls_per_s": round(CALLS_PER_EPISODE / (pipelined_ms / 1e3)),
        "mean_reward": round(statistics.mean(rewards["grpc"]), 3),
        "target_ratio": 1.5,
        # Many episodes at once: a Session stream each vs keys of one Sessions stream (ratios > 1: multiplexed better).
        "concurrent": many,
    }
    write_result("toolenv_overhead", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

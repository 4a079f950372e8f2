"""user_sim scaling: conversations/s at 1, 2 and 4 replicas and at concurrency 1, 8 and 32, in one run.

Each replica runs the procedural user behind a fixed per-turn latency (like a remote LLM, default 200 ms)
and computes at most `--slots` turns at once (its backend's capacity), which is what makes one replica
latency-bound. A conversation is the toy task's opening turn plus `--turns` agent messages; the client
spreads conversations over the replicas with UserSimClient (least-loaded, pinned per conversation).
scaling_efficiency_4 = throughput with 4 replicas / (4 x throughput with 1 replica), both at concurrency 32.

    python benchmarks/user_sim_scaling.py [--turn-latency-s 0.2] [--slots 4] [--turns 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write_result
from eigenloop.domains.toy.tasks import sample_tasks
from eigenloop.usersim.remote import UserSimClient
from tests.support import ServiceProcess

AGENT_LINES = ["Could you tell me the order id?", "Let me check that for you.", "Is there anything else?"]


def converse(client: UserSimClient, turns: int) -> None:
    task = sample_tasks()[0]
    with client.conversation(task, max_turns=turns + 2) as conversation:
        for line in AGENT_LINES[:turns]:
            if conversation.turn.stop:
                break
            conversation.agent_message(line)


def throughput(client: UserSimClient, concurrency: int, conversations: int, turns: int) -> float:
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        for future in [pool.submit(converse, client, turns) for _ in range(conversations)]:
            future.result()
    return conversations / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turn-latency-s", type=float, default=0.2)
    parser.add_argument("--slots", type=int, default=4, help="turns one replica computes at once")
    parser.add_argument("--turns", type=int, default=3, help="agent messages per conversation")
    args = parser.parse_args()
    flags = ["--turn-latency-s", str(args.turn_latency_s), "--max-concurrent-turns", str(args.slots)]
    table: dict[str, dict[str, float]] = {}
    with ExitStack() as stack:
        replicas = [stack.enter_context(ServiceProcess("eigenloop_user_sim.server", flags)) for _ in range(4)]
        for count in (1, 2, 4):
            with UserSimClient([r.address for r in replicas[:count]]) as client:
                converse(client, 1)  # connect
                for concurrency in (1, 8, 32):
                    # Enough conversations that each run lasts a few turn latencies at full concurrency.
                    n = max(4, 2 * concurrency)
                    rate = throughput(client, concurrency, n, args.turns)
                    table.setdefault(f"replicas_{count}", {})[f"concurrency_{concurrency}"] = round(rate, 3)
                    print(f"replicas={count} concurrency={concurrency:>2}: {rate:6.2f} conversations/s", flush=True)
    one, four = table["replicas_1"]["concurrency_32"], table["replicas_4"]["concurrency_32"]
    result: dict[str, Any] = {
        "turn_latency_s": args.turn_latency_s,
        "slots_per_replica": args.slots,
        "turns_per_conversation": args.turns + 1,
        "conversations_per_s": table,
        "scaling_efficiency_2": round(table["replicas_2"]["concurrency_32"] / (2 * one), 3),
        "scaling_efficiency_4": round(four / (4 * one), 3),
        "target_scaling_efficiency_4": 0.8,
    }
    write_result("user_sim_scaling", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

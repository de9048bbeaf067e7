"""Judge throughput against a server that answers after a fixed latency.

    .venv/bin/python bench/judge.py [--items 500 --concurrency 16 --latency 0.2]

With `concurrency` requests in flight and each answered after `latency` seconds, no client
can do better than concurrency / latency requests per second. The last line printed is JSON
with `throughput_over_bound`, achieved requests/s over that bound (the bar is ≥ 0.8).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests" / "support")]

from fault_server import request_stats, running_stand_in  # noqa: E402

from judges.config import JudgeConfig  # noqa: E402
from judges.factory import build_judge  # noqa: E402
from judges.judgment import JudgeItem  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--latency", type=float, default=0.2, help="the server's seconds per answer")
    args = parser.parse_args()

    items = [JudgeItem(instruction=f"What is {i} + {i + 7}?", response=str(2 * i + 7 + i % 2)) for i in range(args.items)]
    with running_stand_in(fault_rate=0.0, latency_s=args.latency) as base_url:
        config = JudgeConfig(kind="openai", model="stand-in", base_url=base_url, concurrency=args.concurrency)
        judge = build_judge(config)
        # Warm-up (not timed): the openai client imports most of itself on first use.
        judge.judge_many_sync([JudgeItem(instruction="warm-up", response=str(i)) for i in range(args.concurrency)])
        warm_up_requests = request_stats(base_url)["requests"]
        started = time.perf_counter()
        judgments = judge.judge_many_sync(items)
        seconds = time.perf_counter() - started
        requests = request_stats(base_url)["requests"] - warm_up_requests

    throughput = requests / seconds
    bound = args.concurrency / args.latency
    statuses = Counter(j.status for j in judgments)
    print(f"{len(judgments)} items, {requests} requests in {seconds:.2f} s: {throughput:.1f} req/s "
          f"against a bound of {bound:.1f} req/s ({statuses['ok']} ok, {statuses['failed']} failed)")
    print(json.dumps({
        "bench": "judge",
        "items": len(judgments),
        "requests": requests,
        "concurrency": args.concurrency,
        "latency_s": args.latency,
        "seconds": round(seconds, 3),
        "requests_per_s": round(throughput, 2),
        "bound_requests_per_s": round(bound, 2),
        "throughput_over_bound": round(throughput / bound, 3),
        "failed": statuses["failed"],
    }))


if __name__ == "__main__":
    main()

"""A stand-in OpenAI-compatible chat server that injects faults, for the judge's tests and
benchmark. Run it as a process:

    python tests/support/fault_server.py --port 8123 --fault-rate 0.3 --latency 0 --hang-s 2

Faults are deterministic: an item (the conversation's first user message) is faulty when
its hash says so, and then its first request fails with one of: 429 with Retry-After, 500,
a hang past the client's timeout, a 200 reply that is not the asked JSON, or a 200 whose
body is not a chat completion at all. Every third
faulty item also fails its second request, with a 429, 500 or hang (two unusable replies in
a row would rightly fail the item); an item containing "[always-not-json]" never
gets the asked JSON. Later requests are answered with a valid chat
completion after `--latency` seconds. The Batch API (/v1/files, /v1/batches) is served beside it
from the same answers (tests/support/batch_stand_in.py). GET /stats counts the requests received; when the
environment variable STAND_IN_EXPECTED_KEY is set, a request with another key gets 401
with that key quoted in the error message.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from aiohttp import web
from batch_stand_in import BatchBehaviour, add_batch_routes

FAULTS = ("429", "500", "hang", "not-json", "garbage")
TRANSPORT_FAULTS = FAULTS[:3]  # retried by the client; the others cost the item its one repair
ALWAYS_NOT_JSON = "[always-not-json]"  # an item whose text holds this never gets the asked JSON


def _first_user_message(body: dict) -> str:
    return next((m["content"] for m in body["messages"] if m["role"] == "user"), "")


def planned_fault(item_hash: int, attempt: int, fault_rate: float) -> str | None:
    """Which fault (if any) the `attempt`-th request of an item gets."""
    if (item_hash % 1000) >= fault_rate * 1000:
        return None
    kind = (item_hash // 1000) % len(FAULTS)
    if attempt == 0:
        return FAULTS[kind]
    if attempt == 1 and (item_hash // 4000) % 3 == 0:
        return TRANSPORT_FAULTS[kind % len(TRANSPORT_FAULTS)]
    return None


def completion(body: dict, content: str, item_hash: int) -> dict:
    prompt_tokens = sum(len(m["content"].split()) for m in body["messages"])
    return {
        "id": f"chatcmpl-{item_hash:x}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "stand-in"),
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 20, "total_tokens": prompt_tokens + 20},
    }


def answer(body: dict) -> dict:
    """The valid chat completion for a request: the same table answers online and batch requests."""
    item = int(hashlib.sha256(_first_user_message(body).encode()).hexdigest()[:12], 16)
    verdict = "positive" if item % 2 else "negative"
    score = 7 + item % 4 if verdict == "positive" else 1 + item % 6
    content = json.dumps({"judgment": f"The response was checked ({verdict}).", "verdict": verdict, "score": score})
    return completion(body, content, item)


def build_app(fault_rate: float, latency_s: float, hang_s: float, batch: BatchBehaviour | None = None) -> web.Application:
    attempts: Counter[int] = Counter()
    stats: Counter[str] = Counter(requests=0)
    expected_key = os.environ.get("STAND_IN_EXPECTED_KEY")

    async def chat(request: web.Request) -> web.Response:
        stats["requests"] += 1
        if expected_key is not None and request.headers.get("Authorization") != f"Bearer {expected_key}":
            stats["unauthorized"] += 1
            # As real servers do, the error quotes the key it was given.
            sent = request.headers.get("Authorization", "").removeprefix("Bearer ")
            return web.json_response({"error": {"message": f"Incorrect API key provided: {sent}", "type": "auth"}}, status=401)
        body = await request.json()
        first_user = _first_user_message(body)
        item = int(hashlib.sha256(first_user.encode()).hexdigest()[:12], 16)
        fault = "not-json" if ALWAYS_NOT_JSON in first_user else planned_fault(item, attempts[item], fault_rate)
        attempts[item] += 1
        stats[fault or "ok"] += 1
        if fault == "429":
            return web.json_response(
                {"error": {"message": "rate limited", "type": "rate_limit"}}, status=429, headers={"Retry-After": "0.1"}
            )
        if fault == "500":
            return web.json_response({"error": {"message": "internal error", "type": "server"}}, status=500)
        if fault == "hang":
            await asyncio.sleep(hang_s)
        if fault == "garbage":
            return web.Response(text="<html>502 Bad Gateway</html>", content_type="text/html")
        if fault == "not-json":
            return web.json_response(completion(body, "I think this response is quite good overall!", item))
        await asyncio.sleep(latency_s)
        return web.json_response(answer(body))

    async def get_stats(_: web.Request) -> web.Response:
        return web.json_response(dict(stats))

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.add_routes([web.post("/v1/chat/completions", chat), web.get("/stats", get_stats), web.get("/health", health)])
    add_batch_routes(app, batch or BatchBehaviour(), answer, stats, expected_key)
    return app


@contextmanager
def running_stand_in(
    fault_rate: float,
    latency_s: float = 0.0,
    hang_s: float = 2.0,
    expected_key: str | None = None,
    batch: BatchBehaviour | None = None,
) -> Iterator[str]:
    """Start the server in its own process; yields its OpenAI base URL (…/v1)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "STAND_IN_EXPECTED_KEY"}
    if expected_key is not None:
        env["STAND_IN_EXPECTED_KEY"] = expected_key
    command = [sys.executable, __file__, "--port", str(port), "--fault-rate", str(fault_rate),
               "--latency", str(latency_s), "--hang-s", str(hang_s), *(batch or BatchBehaviour()).arguments()]
    server = subprocess.Popen(command, env=env)
    root = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{root}/health", timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the stand-in server did not start ({' '.join(command)})") from None
                time.sleep(0.1)
        yield f"{root}/v1"
    finally:
        server.terminate()
        server.wait(timeout=10)


def request_stats(base_url: str) -> dict[str, int]:
    """How many requests the server got, in total ('requests') and by outcome."""
    with urllib.request.urlopen(base_url.removesuffix("/v1") + "/stats", timeout=5) as reply:
        return json.load(reply)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--fault-rate", type=float, default=0.3)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each valid answer")
    parser.add_argument("--hang-s", type=float, default=2.0, help="how long a 'hang' fault sleeps")
    BatchBehaviour.add_arguments(parser)
    args = parser.parse_args()
    app = build_app(args.fault_rate, args.latency, args.hang_s, BatchBehaviour.from_arguments(args))
    web.run_app(app, host="127.0.0.1", port=args.port, print=None)

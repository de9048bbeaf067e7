"""vLLM's own OpenAI-compatible server on the shipped model, as the tests that talk to a real
server need it: runtime LoRA loading for the vllm-server sampler, the base served as `critic`
for the judge.

Float32 keeps its scores as close to the trainer's as the in-process engines'; eager mode
starts it in half the time on CPU. The KV cache is sized in bytes: `--gpu-memory-utilization`
is a share of RAM from which vLLM's CPU worker subtracts its own footprint, which went negative.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from engines import KV_CACHE_GIB
from prefect_server import free_port

SERVED_NAME = "critic"


@contextmanager
def running_vllm_server(model: Path, log_path: Path, timeout_s: float = 600) -> Iterator[str]:
    """Yields the server's OpenAI base URL (…/v1); the server is stopped on exit."""
    port = free_port()
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
        "--served-model-name", SERVED_NAME, "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32",
        "--max-model-len", "2048", "--kv-cache-memory-bytes", str(int(KV_CACHE_GIB * 2**30)), "--enforce-eager",
        "--enable-lora", "--max-lora-rank", "16",
    ]
    base_url = f"http://127.0.0.1:{port}"
    with log_path.open("w") as log:
        server = subprocess.Popen(command, env={**os.environ, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"},
                                  stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout_s
        while not _healthy(base_url):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the vLLM server did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(1)
        yield f"{base_url}/v1"
    finally:
        server.terminate()
        server.wait(timeout=60)


def _healthy(base_url: str) -> bool:
    try:
        return httpx.get(f"{base_url}/health", timeout=2).status_code == 200
    except httpx.TransportError:
        return False

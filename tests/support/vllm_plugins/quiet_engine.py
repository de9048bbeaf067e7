"""A vLLM general plugin for the test suite: engine processes sleep while they wait for each other.

vLLM's engine core and its worker pass each step through shared-memory queues whose readers spin
(`sched_yield`) for a second after each message before they sleep on a socket. Under the suite's
one thread per worker and no core binding (tests/conftest.py), the engine core spun on a core for
as long as the worker computed: measured on the shipped model, 16 prompts x 2 samples, it used
4.8-6.1 CPU-s beside the worker's 7.4-8.6 (8 runs), and 0.1 CPU-s with this plugin, sampling as
fast (87-98 tok/s over 5 runs, against 88-108 without). A user's engine, its worker's threads bound
to every core, measured 0.1-0.2 CPU-s in its engine core without it.

Loaded by vLLM itself in every process it starts (`vllm.general_plugins`, found through the
dist-info folder beside this file once this folder is on PYTHONPATH), before the queues exist.
"""

from __future__ import annotations

# A reader that finds its queue empty sleeps at once; a missed wake-up (a notification sent before
# the reader's socket connected, as at start) costs at most this long instead of vLLM's 5 s.
RECHECK_MS = 20


def readers_sleep_while_waiting() -> None:
    from vllm.distributed.device_communicators import shm_broadcast

    shm_broadcast.SpinCondition.__init__.__defaults__ = (0,)  # busy_loop_s
    shm_broadcast.SHM_READER_RECHECK_INTERVAL_MS = RECHECK_MS

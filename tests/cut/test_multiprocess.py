"""Training on several processes (DDP over gloo, started by torchrun as `cut.launcher: accelerate` does on a
CPU). That the result equals one process's is tests/rounds/test_steps.py's launcher test; here, how often the
processes synchronise."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "support" / "ddp_sync_count.py"


def test_processes_average_their_gradients_once_an_optimizer_step_not_once_a_micro_batch(tiny_model, tmp_path):
    """16 rows in micro-batches of 4 on 2 processes with grad_accum 2: one optimizer step of 2 micro-batches a
    process. Syncing on the first micro-batch too (no `no_sync`) would count 2."""
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                    str(SCRIPT), str(tiny_model), str(tmp_path), "2"], check=True, capture_output=True, timeout=300)
    reports = [json.loads((tmp_path / f"rank-{rank}.json").read_text()) for rank in (0, 1)]
    assert reports == [{"world": 2, "steps": 1, "syncs": 1}] * 2

"""Train the tiny model under torchrun and count each process's gradient synchronisations (tests/cut/
test_multiprocess.py): a DDP communication hook sees every bucket each time the processes average their
gradients; bucket 0 is in every such round, so its calls count the rounds.

    python -m torch.distributed.run --standalone --nproc_per_node 2 ddp_sync_count.py MODEL OUT GRAD_ACCUM
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch.distributed
from accelerate import Accelerator
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

from cut.config import CutConfig
from cut.data import Triple
from cut.trainer import train


def main(model: str, out: Path, grad_accum: int) -> None:
    rounds = []
    prepare = Accelerator.prepare

    def prepare_counting(self, *args):
        prepared = prepare(self, *args)

        def counted(state, bucket):
            if bucket.index() == 0:
                rounds.append(1)
            return allreduce_hook(state, bucket)

        prepared[0].register_comm_hook(None, counted)
        return prepared

    Accelerator.prepare = prepare_counting
    triples = [Triple(f"What is {a} + 12?", "", f"{a + 12 + (a % 3)}", None if a % 3 == 0 else f"Wrong: {a + 12}.")
               for a in range(10, 26)]
    config = CutConfig(micro_batch_size=4, grad_accum=grad_accum, positive_ratio=None, max_length=64,
                       lora={"dropout": 0.0})
    result = train(config, model, triples, out / "adapter", progress=False)
    rank = torch.distributed.get_rank()
    (out / f"rank-{rank}.json").write_text(json.dumps(
        {"world": result.processes, "steps": len(result.steps), "syncs": len(rounds)}))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]))

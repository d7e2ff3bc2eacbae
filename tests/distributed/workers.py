"""Worker bodies of the two-process tests, run as ``torchrun --nproc_per_node 2 tests/distributed/workers.py KIND OUT``.

Fresh processes (not forked from the test process, whose OpenMP threads may already be running and would
deadlock a fork) that join a gloo group through Accelerate and write what each rank saw to ``OUT``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from accelerate import Accelerator

from common import losses
from common.engine.distributed import gather_with_grad
from common.samplers.m_per_class import MPerClassBatchSampler

GATHERED_LOSSES = [
    "multi_similarity",
    "contrastive",
    "triplet",
    "circle",
    "ntxent",
    "supcon",
    "align_uniform",
    "siglip",
]


def sampler_labels() -> torch.Tensor:
    return torch.arange(20).repeat_interleave(5)


def global_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(32, 8, generator=generator, dtype=torch.float64)
    weight = torch.randn(8, 6, generator=generator, dtype=torch.float64)
    return inputs, weight, torch.arange(8).repeat_interleave(4)


def sampler_worker(accelerator: Accelerator) -> dict:
    sampler = MPerClassBatchSampler(
        sampler_labels(),
        4,
        3,
        batches_per_epoch=10,
        seed=7,
        rank=accelerator.process_index,
        world_size=accelerator.num_processes,
    )
    return {"classes": [sorted(set(sampler_labels()[b].tolist())) for b in sampler]}


def gradient_worker(accelerator: Accelerator) -> dict:
    rank, world = accelerator.process_index, accelerator.num_processes
    inputs, weight, labels = global_batch()
    local = slice(rank * len(inputs) // world, (rank + 1) * len(inputs) // world)
    grads = {}
    for name in GATHERED_LOSSES:
        w = weight.clone().requires_grad_(True)
        criterion = losses.build(name).double()
        loss = criterion(gather_with_grad(inputs[local] @ w), gather_with_grad(labels[local]))
        loss.backward()
        grads[name] = []
        for param in [w, *criterion.parameters()]:  # siglip's temperature and bias too
            dist.all_reduce(param.grad)  # what DDP does, followed by its division by the world size
            grads[name].append((param.grad / world).tolist())
    return {"grads": grads}


if __name__ == "__main__":
    kind, out = sys.argv[1], Path(sys.argv[2])
    accelerator = Accelerator(cpu=True)
    result = {"sampler": sampler_worker, "gradients": gradient_worker}[kind](accelerator)
    result.update(world_size=accelerator.num_processes, pid=os.getpid())
    (out / f"{kind}{accelerator.process_index}.json").write_text(json.dumps(result))
    accelerator.end_training()  # waits for every rank, then destroys the gloo group before its threads die

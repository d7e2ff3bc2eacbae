"""Two real CPU processes over gloo (accelerate's debug_launcher): distinct classes per rank, and the
gathered loss gives the gradients of one process on the concatenated batch."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from accelerate import debug_launcher

from common import losses
from common.engine.distributed import gather_with_grad
from common.samplers import MPerClassBatchSampler

pytestmark = pytest.mark.distributed
WORLD = 2


def _labels() -> torch.Tensor:
    return torch.arange(20).repeat_interleave(5)


def _sampler_worker(out: str) -> None:
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    sampler = MPerClassBatchSampler(
        _labels(),
        4,
        3,
        batches_per_epoch=10,
        seed=7,
        rank=accelerator.process_index,
        world_size=accelerator.num_processes,
    )
    classes = [sorted(set(_labels()[b].tolist())) for b in sampler]
    Path(out, f"rank{accelerator.process_index}.json").write_text(
        json.dumps({"world_size": accelerator.num_processes, "pid": os.getpid(), "classes": classes})
    )


def test_every_rank_draws_different_classes(tmp_path):
    debug_launcher(lambda: _sampler_worker(str(tmp_path)), num_processes=WORLD)
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD)]
    assert [r["world_size"] for r in results] == [WORLD] * WORLD
    assert len({r["pid"] for r in results}) == WORLD, "two ranks must be two processes"
    for step in zip(*(r["classes"] for r in results), strict=True):
        assert all(len(c) == 4 for c in step)
        assert not set(step[0]) & set(step[1]), "ranks drew the same class in one step"


def _global_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(32, 8, generator=generator, dtype=torch.float64)
    weight = torch.randn(8, 6, generator=generator, dtype=torch.float64)
    return inputs, weight, torch.arange(8).repeat_interleave(4)


LOSSES = ["multi_similarity", "contrastive", "triplet", "circle", "ntxent", "supcon", "align_uniform"]


def _gradient_worker(out: str) -> None:
    import torch.distributed as dist
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    rank, world = accelerator.process_index, accelerator.num_processes
    inputs, weight, labels = _global_batch()
    local = slice(rank * len(inputs) // world, (rank + 1) * len(inputs) // world)
    grads = {}
    for name in LOSSES:
        w = weight.clone().requires_grad_(True)
        embeddings = gather_with_grad(inputs[local] @ w)
        loss = losses.build(name)(embeddings, gather_with_grad(labels[local]))
        loss.backward()
        dist.all_reduce(w.grad)  # what DDP does, followed by its division by the world size
        grads[name] = (w.grad / world).tolist()
    Path(out, f"grads{rank}.json").write_text(json.dumps({"world_size": world, "grads": grads}))


def test_gathered_losses_give_single_process_gradients(tmp_path):
    debug_launcher(lambda: _gradient_worker(str(tmp_path)), num_processes=WORLD)
    inputs, weight, labels = _global_batch()
    for rank in range(WORLD):
        result = json.loads((tmp_path / f"grads{rank}.json").read_text())
        assert result["world_size"] == WORLD
        for name in LOSSES:
            w = weight.clone().requires_grad_(True)
            losses.build(name)(inputs @ w, labels).backward()
            assert w.grad.abs().sum() > 0
            torch.testing.assert_close(torch.tensor(result["grads"][name], dtype=torch.float64), w.grad)

"""Two real CPU processes over gloo (torchrun + Accelerate): distinct classes per rank, and the gathered loss
gives the gradients of one process on the concatenated batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from common import losses
from tests.conftest import REPO
from tests.distributed.workers import GATHERED_LOSSES, global_batch

pytestmark = pytest.mark.distributed
WORLD = 2


def _launch(kind: str, out: Path) -> list[dict]:
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD}"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [*torchrun, str(REPO / "tests" / "distributed" / "workers.py"), kind, str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = [json.loads((out / f"{kind}{rank}.json").read_text()) for rank in range(WORLD)]
    assert [r["world_size"] for r in results] == [WORLD] * WORLD
    assert len({r["pid"] for r in results}) == WORLD, "two ranks must be two processes"
    return results


def test_every_rank_draws_different_classes(tmp_path):
    results = _launch("sampler", tmp_path)
    for step in zip(*(r["classes"] for r in results), strict=True):
        assert all(len(c) == 4 for c in step)
        assert not set(step[0]) & set(step[1]), "ranks drew the same class in one step"


def test_gathered_losses_give_single_process_gradients(tmp_path):
    results = _launch("gradients", tmp_path)
    inputs, weight, labels = global_batch()
    for result in results:
        for name in GATHERED_LOSSES:
            w = weight.clone().requires_grad_(True)
            criterion = losses.build(name).double()
            criterion(inputs @ w, labels).backward()
            params = [w, *criterion.parameters()]
            assert len(result["grads"][name]) == len(params)
            for gathered, param in zip(result["grads"][name], params, strict=True):
                assert param.grad.abs().sum() > 0
                torch.testing.assert_close(torch.tensor(gathered, dtype=torch.float64), param.grad)

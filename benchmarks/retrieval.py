"""Retrieval metrics: ours against pytorch-metric-learning's AccuracyCalculator, same embeddings, same run.

    .venv/bin/python benchmarks/retrieval.py [--n 20000] [--classes 100] [--repeats 3]

Leave-one-out retrieval on ``n`` random 128-d embeddings (clustered around class centres so the metrics are
not trivial). Both compute P@1, R-precision and MAP@R with cosine similarity; PML uses its torch k-NN
(``CustomKNN(CosineSimilarity())``, ``k="max_bin_count"``; faiss is not installed, so PML computes no NMI).
Prints the values side by side (they must agree) and the fastest of ``--repeats`` interleaved timings of each
(PML, ours, ours with NMI, PML, ...), with and without our NMI.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from pytorch_metric_learning.distances import CosineSimilarity
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
from pytorch_metric_learning.utils.inference import CustomKNN

# this checkout's common/, not the copy the virtualenv's editable install points at (another worktree)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common.metrics.retrieval import retrieval_metrics  # noqa: E402

PAIRS = {
    "precision_at_1": "precision_at_1",
    "r_precision": "r_precision",
    "map_at_r": "mean_average_precision_at_r",
}


def interleaved_times(fns: dict[str, Callable[[], dict]], repeats: int) -> tuple[dict, dict]:
    """Each function ``repeats`` times, taking turns, so that a busy spell on the machine hits all of them
    alike; returns the fastest time of each (the least disturbed) and its last result."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    results: dict[str, dict] = {}
    for _ in range(repeats):
        for name, fn in fns.items():
            started = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - started)
    return {name: min(t) for name, t in times.items()}, results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(args.classes, (args.n,), generator=generator)
    centres = torch.randn(args.classes, args.dim, generator=generator)
    embeddings = centres[labels] + 1.5 * torch.randn(args.n, args.dim, generator=generator)

    calculator = AccuracyCalculator(
        include=tuple(PAIRS.values()),
        k="max_bin_count",
        device=torch.device("cpu"),
        knn_func=CustomKNN(CosineSimilarity()),
    )
    seconds, results = interleaved_times(
        {
            "pml": lambda: calculator.get_accuracy(embeddings, labels),
            "ours": lambda: retrieval_metrics(embeddings, labels, nmi_seed=None),
            "ours_nmi": lambda: retrieval_metrics(embeddings, labels),
        },
        args.repeats,
    )
    pml_s, ours_s, ours_nmi_s = seconds["pml"], seconds["ours"], seconds["ours_nmi"]
    pml, ours, ours_nmi = results["pml"], results["ours"], results["ours_nmi"]

    print(
        f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch "
        f"{torch.__version__}; {args.n} x {args.dim} embeddings, {args.classes} classes, fastest of {args.repeats} (interleaved)"
    )
    print(f"{'metric':16s} {'ours':>10s} {'PML':>10s} {'|diff|':>9s}")
    for ours_key, pml_key in PAIRS.items():
        print(
            f"{ours_key:16s} {ours[ours_key]:10.6f} {pml[pml_key]:10.6f} {abs(ours[ours_key] - pml[pml_key]):9.1e}"
        )
    print(f"{'nmi':16s} {ours_nmi['nmi']:10.6f} {'n/a':>10s}")
    print()
    print(f"PML AccuracyCalculator            {pml_s:7.2f} s")
    print(f"ours, same metrics (no NMI)       {ours_s:7.2f} s   {pml_s / ours_s:5.2f}x faster")
    print(f"ours, all metrics incl. NMI       {ours_nmi_s:7.2f} s   {pml_s / ours_nmi_s:5.2f}x faster")


if __name__ == "__main__":
    main()

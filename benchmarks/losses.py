"""Forward + backward time of our losses against pytorch-metric-learning's, on the same inputs, same run.

    .venv/bin/python benchmarks/losses.py [--repeats 7] [--threads 2]

For each loss PML also has, and each (batch, classes) in {256, 1024} x {32, 128} with dim 128 on CPU,
prints the median time of ours and PML's and the ratio PML / ours (> 1: ours is faster), then the geometric
mean of the ratios. Both sides get identical embeddings (and, for margin heads, identical class weights).
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import time
from collections.abc import Callable

import torch
from pytorch_metric_learning import distances
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners

from common import losses

DIM = 128


def _pml_triplet(selection: str) -> Callable:
    loss = pml_losses.TripletMarginLoss(margin=0.1, distance=distances.CosineSimilarity())
    if selection == "all":
        return loss
    miner = (
        pml_miners.BatchHardMiner(distance=distances.CosineSimilarity())
        if selection == "batch_hard"
        else pml_miners.TripletMarginMiner(
            margin=0.1, type_of_triplets="semihard", distance=distances.CosineSimilarity()
        )
    )
    return lambda e, y: loss(e, y, miner(e, y))


def _pml_ms_mined() -> Callable:
    loss = pml_losses.MultiSimilarityLoss(alpha=2, beta=50, base=1.0)
    miner = pml_miners.MultiSimilarityMiner(epsilon=0.1)
    return lambda e, y: loss(e, y, miner(e, y))


def _heads(ours_name: str, pml_cls, **pml_kwargs) -> tuple[Callable, Callable]:
    """Margin heads: built per class count, PML's weights set to ours (PML stores them transposed)."""

    def pair(classes: int) -> tuple[Callable, Callable]:
        ours = losses.build(ours_name, num_classes=classes, embedding_dim=DIM)
        theirs = pml_cls(num_classes=classes, embedding_size=DIM, **pml_kwargs)
        theirs.W.data = ours.weight.detach().T.clone().contiguous()
        return ours, theirs

    return pair


# name -> (our loss factory, PML loss factory)
PAIRS: dict[str, tuple[Callable[[], Callable], Callable[[], Callable]]] = {
    "multi_similarity (mined)": (lambda: losses.build("multi_similarity"), _pml_ms_mined),
    "multi_similarity (no mining)": (
        lambda: losses.build("multi_similarity", mining=False),
        lambda: pml_losses.MultiSimilarityLoss(alpha=2, beta=50, base=1.0),
    ),
    "contrastive": (
        lambda: losses.build("contrastive"),
        lambda: pml_losses.ContrastiveLoss(
            pos_margin=1.0, neg_margin=0.5, distance=distances.CosineSimilarity()
        ),
    ),
    "triplet (all)": (lambda: losses.build("triplet"), lambda: _pml_triplet("all")),
    "triplet (semi-hard)": (
        lambda: losses.build("triplet", triplets="semi_hard"),
        lambda: _pml_triplet("semi_hard"),
    ),
    "triplet (batch-hard)": (
        lambda: losses.build("triplet", triplets="batch_hard"),
        lambda: _pml_triplet("batch_hard"),
    ),
    "circle": (lambda: losses.build("circle"), lambda: pml_losses.CircleLoss(m=0.4, gamma=80)),
    "ntxent": (lambda: losses.build("ntxent"), lambda: pml_losses.NTXentLoss(temperature=0.5)),
    "supcon": (lambda: losses.build("supcon"), lambda: pml_losses.SupConLoss(temperature=0.1)),
}
# margin heads own class weights: built per number of classes
HEADS = {
    "normface": _heads("normface", pml_losses.NormalizedSoftmaxLoss, temperature=0.05),
    "cosface": _heads("cosface", pml_losses.CosFaceLoss, margin=0.35, scale=64),
    "arcface": _heads("arcface", pml_losses.ArcFaceLoss, margin=28.6478897565, scale=64),
    "subcenter_arcface": _heads(
        "subcenter_arcface", pml_losses.SubCenterArcFaceLoss, margin=28.6478897565, scale=64, sub_centers=3
    ),
}


def time_forward_backward(
    loss_fn: Callable, embeddings: torch.Tensor, labels: torch.Tensor, repeats: int
) -> float:
    times = []
    for i in range(repeats + 1):
        x = embeddings.detach().clone().requires_grad_(True)
        started = time.perf_counter()
        loss_fn(x, labels).backward()
        if i:  # the first call warms up
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"# {platform.processor() or platform.machine()}, {args.threads} threads, torch {torch.__version__}, "
        f"median of {args.repeats}, dim {DIM}, float32, CPU"
    )
    print(f"{'loss':30s} {'batch':>5s} {'classes':>7s} {'ours ms':>9s} {'PML ms':>9s} {'PML/ours':>8s}")
    ratios: dict[str, list[float]] = {}
    cases = [(name, factories, False) for name, factories in PAIRS.items()]
    cases += [(name, factory, True) for name, factory in HEADS.items()]
    for name, factories, is_head in cases:
        for batch in (256, 1024):
            for classes in (32, 128):
                if is_head:
                    our_loss, their_loss = factories(classes)
                else:
                    our_loss, their_loss = factories[0](), factories[1]()
                generator = torch.Generator().manual_seed(batch + classes)
                embeddings = torch.randn(batch, DIM, generator=generator)
                labels = torch.arange(classes).repeat(batch // classes)
                if name == "ntxent":  # two views per instance, as SimCLR batches are (classes ignored)
                    labels = torch.arange(batch // 2).repeat(2)
                ours_s = time_forward_backward(our_loss, embeddings, labels, args.repeats)
                theirs_s = time_forward_backward(their_loss, embeddings, labels, args.repeats)
                ratio = theirs_s / ours_s
                ratios.setdefault(name, []).append(ratio)
                print(
                    f"{name:30s} {batch:5d} {classes:7d} {ours_s * 1e3:9.2f} {theirs_s * 1e3:9.2f} {ratio:8.2f}"
                )
    print()
    print(f"{'loss':30s} {'geo-mean PML/ours':>18s} {'slowest case':>13s}")
    for name, values in ratios.items():
        print(f"{name:30s} {math.exp(statistics.fmean(map(math.log, values))):18.2f} {min(values):13.2f}")
    everything = [v for values in ratios.values() for v in values]
    print(
        f"{'all':30s} {math.exp(statistics.fmean(map(math.log, everything))):18.2f} {min(everything):13.2f}"
    )


if __name__ == "__main__":
    main()

"""What is measured after training, on the run's ``eval`` spec: retrieval always, verification, few-shot
episodes and Omniglot's one-shot runs when asked for, and the sub-center analysis for heads with
sub-centers. A classifier (a run whose loss reads logits) is measured by ``common.engine.classification``
instead.

Optional evaluations (and the training views) live in their own modules, imported only by the runs that ask
for them, so a change to one does not rerun papers that never use it: :func:`optional_modules` names them for
the pipeline's stage dependencies, and the trainer and :func:`evaluate` import them from the same table.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from common.config import RunConfig
from common.losses import reads_logits
from common.metrics.retrieval import retrieval_metrics

VERIFICATION = "common.metrics.verification"
FEW_SHOT = "common.engine.few_shot"
CLASSIFICATION = "common.engine.classification"
SHARPNESS = "common.metrics.sharpness"
REPRESENTATION = "common.engine.representation"
CORRUPTIONS = "common.data.corruptions"  # imported by the runner, which corrupts the test images
VIEWS = "common.data.views"  # training, not evaluation: the random views of runs with ``views``


@dataclass
class SplitTensors:
    images: torch.Tensor  # float (N, 1, S, S), standardized
    labels: torch.Tensor  # int64 (N,): what the model trains on (noisy, if the run injects label noise)
    clean_labels: torch.Tensor | None = None  # the true labels where they differ from ``labels``


@dataclass
class OneShotRuns:
    """Lake et al.'s 20-way one-shot runs: per image its run, role (test or training), item and target."""

    images: torch.Tensor
    runs: torch.Tensor
    is_test: torch.Tensor
    items: torch.Tensor
    targets: torch.Tensor


@dataclass
class CorruptedTests:
    """Test images (a fixed subset) under each corruption and severity: ``images["<kind>_s<severity>"]``,
    standardized like the training images, and their labels."""

    images: dict[str, torch.Tensor]
    labels: torch.Tensor


def optional_modules(run: RunConfig) -> list[str]:
    """The optional modules ``run`` imports (a stage dependency): its evaluations, and the training views."""
    modules = [VIEWS] if run.views is not None else []
    if reads_logits(run.loss.name):
        modules.append(CLASSIFICATION)
        if run.eval.sharpness is not None:
            modules.append(SHARPNESS)
    if run.eval.probe is not None:
        modules.append(REPRESENTATION)
    if run.eval.corruptions is not None:
        modules.append(CORRUPTIONS)
    if run.eval.fars:
        modules.append(VERIFICATION)
    if run.eval.few_shot is not None or run.eval.one_shot_runs:
        modules.append(FEW_SHOT)
    return modules


@torch.no_grad()
def embed(
    model: torch.nn.Module, images: torch.Tensor, device: torch.device, batch_size: int = 128
) -> torch.Tensor:
    model.eval()
    return torch.cat(
        [
            model(images[i : i + batch_size].to(device)).float().cpu()
            for i in range(0, len(images), batch_size)
        ]
    )


def similarity_histograms(
    embeddings: torch.Tensor, labels: torch.Tensor, bins: int = 40
) -> dict[str, list[float]]:
    """Densities over [-1, 1] of the cosine similarities of positive and negative test pairs, with the
    mean and standard deviation of each (``s_p``, ``s_n``)."""
    e = F.normalize(embeddings, dim=1)
    sim = e @ e.T
    same = labels[:, None] == labels[None, :]
    off_diagonal = ~torch.eye(len(labels), dtype=torch.bool)
    result = {"edges": torch.linspace(-1, 1, bins + 1).tolist()}
    for name, mask in (("positive", same & off_diagonal), ("negative", ~same)):
        values = sim[mask]
        hist = torch.histc(values, bins=bins, min=-1, max=1)
        result[name] = (hist / hist.sum().clamp_min(1) * bins / 2).tolist()
        result[f"{name}_mean"] = [float(values.mean())] if len(values) else [float("nan")]
        result[f"{name}_std"] = [float(values.std())] if len(values) > 1 else [float("nan")]
    return result


def dominant_subcenter_shares(
    nearest: torch.Tensor, labels: torch.Tensor, clean_labels: torch.Tensor, subcenters: int
) -> dict[str, float]:
    """Sub-center ArcFace's claim (Deng et al., ECCV 2020, Sec. 3): clean samples gather in their class's
    dominant sub-center, noisy ones in the others.

    ``nearest[i]`` is the sub-center of its (possibly noisy) training label ``labels[i]`` nearest to
    sample ``i``; a class's dominant sub-center is the one nearest to most of its samples. Returns the share
    of the clean samples (training label = true label) and of the noisy ones that sit in their class's
    dominant sub-center.
    """
    num_classes = int(labels.max()) + 1
    counts = torch.zeros(num_classes, subcenters, dtype=torch.long).index_put_(
        (labels, nearest), torch.ones(len(labels), dtype=torch.long), accumulate=True
    )
    in_dominant = nearest == counts.argmax(dim=1)[labels]
    clean = labels == clean_labels
    out = {"dominant_share_clean": float(in_dominant[clean].double().mean())}
    if bool((~clean).any()):
        out["dominant_share_noisy"] = float(in_dominant[~clean].double().mean())
    return out


def evaluate(
    run: RunConfig,
    model: torch.nn.Module,
    criterion: torch.nn.Module,
    device: torch.device,
    train: SplitTensors,
    test: SplitTensors,
    one_shot: OneShotRuns | None = None,
    corrupted: CorruptedTests | None = None,
) -> tuple[dict[str, float], dict[str, list[float]]]:
    """The run's metrics and the similarity histograms of (a fixed subset of) the test embeddings."""
    spec = run.eval
    embeddings = embed(model, test.images, device)
    metrics = retrieval_metrics(embeddings, test.labels, ks=spec.ks, chunk_size=spec.chunk_size)
    if spec.probe is not None:
        representation = importlib.import_module(REPRESENTATION)
        probed = representation.representation_metrics(run, model, device, train, test, embeddings, corrupted)
        metrics |= probed | representation.own_readout(probed)
    if spec.fars:
        verification = importlib.import_module(VERIFICATION)
        found = verification.tar_at_far(embeddings, test.labels, spec.fars, spec.chunk_size)
        metrics |= {k: v for k, v in found.items() if k.startswith("tar_at_far")}
    distance = getattr(criterion, "distance", "squared_euclidean")  # what the model was trained for
    if spec.few_shot is not None and spec.few_shot.distance != "from_loss":
        distance = spec.few_shot.distance
    if spec.few_shot is not None:
        few_shot = importlib.import_module(FEW_SHOT)
        fs = spec.few_shot
        metrics |= few_shot.few_shot_metrics(
            embeddings, test.labels, fs.ways, fs.shots, fs.queries, fs.episodes, distance
        )
    if spec.one_shot_runs:
        if one_shot is None:
            raise ValueError(f"{run.key}: eval.one_shot_runs needs the one-shot runs (Omniglot only)")
        few_shot = importlib.import_module(FEW_SHOT)
        run_embeddings = embed(model, one_shot.images, device)
        metrics["one_shot_error"] = few_shot.one_shot_run_error(
            run_embeddings, one_shot.runs, one_shot.is_test, one_shot.items, one_shot.targets, distance
        )
    if getattr(criterion, "subcenters", 1) > 1:
        train_embeddings = embed(model, train.images, device)
        clean = train.labels if train.clean_labels is None else train.clean_labels
        nearest = criterion.dominant_subcenter(train_embeddings.to(device), train.labels.to(device)).cpu()
        metrics |= dominant_subcenter_shares(nearest, train.labels, clean, criterion.subcenters)
    subset = torch.randperm(len(test.labels), generator=torch.Generator().manual_seed(0))
    subset = subset[: spec.histogram_pairs]
    histograms = similarity_histograms(embeddings[subset], test.labels[subset])
    for pair, short in (("positive", "s_p"), ("negative", "s_n")):  # Circle loss's s_p and s_n
        for stat in ("mean", "std"):
            value = histograms[f"{pair}_{stat}"][0]
            if math.isfinite(value):  # a subset without pairs of a kind has none
                metrics[f"{short}_{stat}"] = value
    return metrics, histograms

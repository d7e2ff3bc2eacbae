"""Few-shot evaluation of an embedding: N-way K-shot episodes and Omniglot's 20 one-shot runs.

Both classify each query by its nearest class prototype (the mean of the class's support embeddings;
Snell et al., "Prototypical Networks for Few-shot Learning", NeurIPS 2017, Eq. (1)-(2)), with the distance
the model was trained for. Episodes are drawn by the episodic sampler from a fixed seed, so every method
and every training seed is scored on the same episodes (paired comparisons).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from common.losses.prototypical import PROTOTYPE_DISTANCES, prototype_logits
from common.samplers.episodic import EpisodicBatchSampler, episode_targets

EPISODE_CHUNK = 250  # episodes scored in one batched pass (20-way 15-query: about 20 MB of queries)


@torch.no_grad()
def episode_accuracies(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    ways: int,
    shots: int,
    queries: int,
    episodes: int,
    distance: str,
    seed: int = 0,
) -> torch.Tensor:
    """Accuracy of each of ``episodes`` N-way K-shot Q-query episodes, ``(episodes,)`` float64.

    The episodes are the episodic sampler's (seed ``seed``); they are scored in batches of
    ``EPISODE_CHUNK``: the prototypes are the means of each way's K support embeddings, each query goes to
    the way of the nearest prototype (:func:`common.losses.prototypical.prototype_logits`'s scores, batched;
    a tie goes to the earlier way of the episode)."""
    if distance not in PROTOTYPE_DISTANCES:
        raise ValueError(f"distance must be one of {', '.join(PROTOTYPE_DISTANCES)}; got {distance!r}")
    sampler = EpisodicBatchSampler(
        labels, n_way=ways, k_shot=shots, q_query=queries, batches_per_epoch=episodes, seed=seed
    )
    rows = torch.tensor(list(sampler), device=embeddings.device)  # (episodes, ways * (shots + queries))
    _, query_ways = episode_targets(ways, shots, queries, device=embeddings.device)
    accuracies = []
    for chunk in rows.split(EPISODE_CHUNK):
        # an episode's rows: the support way by way, then the queries way by way (split_episode's order)
        support, query = chunk[:, : ways * shots], chunk[:, ways * shots :]
        prototypes = embeddings[support].view(len(chunk), ways, shots, -1).mean(dim=2)
        query_embeddings = embeddings[query]  # (chunk, ways * queries, dim)
        if distance == "cosine":
            scores = F.normalize(query_embeddings, dim=2) @ F.normalize(prototypes, dim=2).transpose(1, 2)
        else:
            scores = -torch.cdist(query_embeddings, prototypes).square()
        correct = scores.argmax(dim=2) == query_ways
        accuracies.append(correct.double().mean(dim=1))
    return torch.cat(accuracies)


def few_shot_metrics(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    ways: tuple[int, ...],
    shots: tuple[int, ...],
    queries: int,
    episodes: int,
    distance: str,
) -> dict[str, float]:
    """``fewshot_<N>way_<K>shot`` (mean accuracy over the episodes) and ``..._ci95`` (1.96 standard errors,
    the interval the paper reports) for every combination of ``ways`` and ``shots``."""
    out = {}
    for n_way in ways:
        for k_shot in shots:
            acc = episode_accuracies(embeddings, labels, n_way, k_shot, queries, episodes, distance)
            key = f"fewshot_{n_way}way_{k_shot}shot"
            out[key] = float(acc.mean())
            out[f"{key}_ci95"] = 1.96 * float(acc.std()) / math.sqrt(len(acc))
    return out


@torch.no_grad()
def one_shot_run_error(
    embeddings: torch.Tensor,
    runs: torch.Tensor,
    is_test: torch.Tensor,
    items: torch.Tensor,
    targets: torch.Tensor,
    distance: str,
) -> float:
    """Error rate over Lake et al.'s one-shot runs: in each run, every test image is matched to the nearest
    of the run's training images (one per class); it is an error unless that image is its ``target``."""
    errors, total = 0, 0
    for run in torch.unique(runs).tolist():
        support = (runs == run) & ~is_test
        query = (runs == run) & is_test
        logits, classes = prototype_logits(embeddings[query], embeddings[support], items[support], distance)
        errors += int((classes[logits.argmax(dim=1)] != targets[query]).sum())
        total += int(query.sum())
    return errors / total

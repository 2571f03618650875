"""HR@k and NDCG@k with one relevant item per user over a full ranking (paper 3.3).

A user whose target is not among the first k items of its ranking scores 0 (so does a user whose ranking is shorter
than k and misses the target). NDCG with a single relevant item at 0-based rank r is ``1 / log2(r + 2)``.
"""
from __future__ import annotations

import math
from typing import Hashable, Sequence

DEFAULT_KS = (5, 10)


def target_rank(ranked: Sequence[Hashable], target: Hashable) -> int | None:
    """0-based position of ``target`` in ``ranked``, None if absent."""
    for i, item in enumerate(ranked):
        if item == target:
            return i
    return None


def hr_ndcg(
    ranked_lists: Sequence[Sequence[Hashable]], targets: Sequence[Hashable], ks: Sequence[int] = DEFAULT_KS
) -> dict[str, float]:
    """Mean ``HR@k`` and ``NDCG@k`` over users; ``ranked_lists[u]`` is user u's ranking (best first)."""
    if len(ranked_lists) != len(targets):
        raise ValueError(f"{len(ranked_lists)} rankings for {len(targets)} targets")
    if not targets:
        raise ValueError("no users to evaluate")
    if any(k < 1 for k in ks):
        raise ValueError(f"cut-offs must be >= 1, got {list(ks)}")
    ranks = [target_rank(r, t) for r, t in zip(ranked_lists, targets)]
    out: dict[str, float] = {}
    for k in ks:
        hits = [r for r in ranks if r is not None and r < k]
        out[f"HR@{k}"] = len(hits) / len(ranks)
        out[f"NDCG@{k}"] = sum(1.0 / math.log2(r + 2) for r in hits) / len(ranks)
    return out

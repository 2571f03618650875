"""Popularity baseline: rank items by how often they are a training target.

The simplest recommender a new method must beat. Counting *targets* (not every interaction) matches what the
sequential models are trained to predict. Optionally the user's own history is excluded from the ranking.
"""
from __future__ import annotations

from collections import Counter
from typing import Iterable, Sequence

from genrec.splits import Sample


class Popularity:
    """Items ordered by training-target frequency (ties: item key order), then all never-seen items."""

    def __init__(self, counts: Counter[str], items: Iterable[str] = ()):
        self.counts = counts
        ranked = sorted(counts, key=lambda key: (-counts[key], key))
        unseen = sorted(set(items) - counts.keys())
        self.order: list[str] = ranked + unseen

    @classmethod
    def fit(cls, samples: Iterable[Sample], items: Iterable[str] = ()) -> "Popularity":
        """Count the targets of ``samples``; ``items`` (all item keys) are appended with count 0 so the ranking is full."""
        return cls(Counter(s.target for s in samples), items)

    def rank(self, history: Sequence[str] = (), k: int = 10, exclude_history: bool = False) -> list[str]:
        """The ``k`` most popular items, skipping ``history`` when ``exclude_history`` is set."""
        if not exclude_history:
            return self.order[:k]
        seen = set(history)
        out: list[str] = []
        for key in self.order:
            if key not in seen:
                out.append(key)
                if len(out) == k:
                    break
        return out

    def recommend(self, samples: Iterable[Sample], k: int = 10, exclude_history: bool = False) -> list[list[str]]:
        """One top-``k`` list per sample."""
        return [self.rank(s.history, k, exclude_history) for s in samples]

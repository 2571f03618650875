"""In-memory leave-one-out ``SampleSource`` for single-dataset training (finetune).

The trainer reads data only through the ``SampleSource`` protocol (documented in ``pretrain/engine.py`` and
docs/architecture.md); this module holds the protocol and its in-memory implementation. Sources yield ``Sample``s
(item keys, never IDs): the trainer renders prompts with the *current* IdTable, through the ``transform`` it gives
``epoch`` (a streaming source applies it in its DataLoader workers).
"""
from __future__ import annotations

import random
from typing import Any, Callable, Iterator, Protocol

from genrec.dataset import Dataset, Item
from genrec.splits import Sample, leave_one_out


class SampleSource(Protocol):
    items: dict[str, Item]

    def epoch(self, epoch: int, rank: int, world: int, seed: int,
              transform: Callable[[Sample], Any] | None = None) -> Iterator[Any]: ...

    def state(self) -> dict: ...

    def restore(self, state: dict) -> None: ...


class LeaveOneOutSource:
    """Training prefixes of every user (``genrec.splits.leave_one_out``), shuffled per epoch and sharded by rank.

    ``prefixes_per_user`` caps how many of a user's prefixes an epoch visits (a fresh random subset each epoch), which
    keeps long-sequence users from dominating an epoch's compute.
    """

    def __init__(self, dataset: Dataset, max_history: int = 20, prefixes_per_user: int | None = None):
        self.dataset = dataset
        self.items = dataset.items
        self.samples = leave_one_out(dataset, "train", max_history)
        self.prefixes_per_user = prefixes_per_user
        self._start = 0
        self._position = 0

    def _order(self, epoch: int, seed: int) -> list[int]:
        rng = random.Random(f"{seed}/{epoch}")
        if self.prefixes_per_user:
            by_user: dict[str, list[int]] = {}
            for i, s in enumerate(self.samples):
                by_user.setdefault(s.user, []).append(i)
            order = [
                i for idx in by_user.values()
                for i in (idx if len(idx) <= self.prefixes_per_user else rng.sample(idx, self.prefixes_per_user))
            ]
        else:
            order = list(range(len(self.samples)))
        rng.shuffle(order)
        return order

    def epoch(self, epoch: int, rank: int, world: int, seed: int,
              transform: Callable[[Sample], Any] | None = None) -> Iterator[Any]:
        """This rank's samples of ``epoch`` (deterministic in ``seed``/``epoch``), continuing a restored position;
        ``transform(sample)`` instead of the sample when given."""
        mine = self.share(epoch, rank, world, seed)
        start, self._start = self._start, 0
        # set eagerly: a caller may ask state() before taking the first sample (that is the start position, not where
        # the previous epoch() iterator stopped)
        self._position = start
        return self._iterate(mine, start, transform)

    def _iterate(self, mine: list[Sample], start: int, transform: Callable[[Sample], Any] | None) -> Iterator[Any]:
        for sample in mine[start:]:
            self._position += 1
            yield sample if transform is None else transform(sample)

    def share(self, epoch: int, rank: int, world: int, seed: int) -> list[Sample]:
        """This rank's samples of ``epoch`` in order, from the start (no position involved)."""
        return [self.samples[i] for i in self._order(epoch, seed)[rank::world]]

    def __len__(self) -> int:
        return len(self.samples) if not self.prefixes_per_user else len(self._order(0, 0))

    def state(self) -> dict:
        return {"position": self._position}

    def restore(self, state: dict) -> None:
        self._start = int(state.get("position", 0))

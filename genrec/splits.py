"""Leave-one-out splits (paper 3.3): last item = test, second-to-last = validation, every prefix of the rest = train."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Literal

from .dataset import Dataset

Split = Literal["train", "valid", "test"]


@dataclass(frozen=True)
class Sample:
    """One recommendation example: the history (oldest first, capped) and the next item to predict."""

    user: str
    history: tuple[str, ...]
    target: str
    dataset: str = ""


def user_samples(user: str, seq: list[str], split: Split, max_history: int = 20, dataset: str = "") -> Iterator[Sample]:
    """Samples of one user for ``split``. Users too short for a split contribute nothing to it."""
    n = len(seq)
    if split == "test":
        ends = [n - 1] if n >= 2 else []
    elif split == "valid":
        ends = [n - 2] if n >= 3 else []
    elif split == "train":
        ends = list(range(1, n - 2))
    else:
        raise ValueError(f"unknown split {split!r} (train, valid or test)")
    for i in ends:
        yield Sample(user, tuple(seq[max(0, i - max_history):i]), seq[i], dataset)


def leave_one_out(dataset: Dataset, split: Split, max_history: int = 20) -> list[Sample]:
    """All samples of ``split`` in user order (the order of the dataset file)."""
    return [s for user, seq in dataset.users.items() for s in user_samples(user, seq, split, max_history, dataset.name)]


def visible_items(seq: list[str], split: Split) -> list[str]:
    """Items a model may see for a user in ``split`` (everything before that split's target(s))."""
    n = len(seq)
    return {"train": seq[: max(0, n - 2)], "valid": seq[: max(0, n - 2)], "test": seq[: max(0, n - 1)]}[split]

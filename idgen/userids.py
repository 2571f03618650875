"""User IDs (paper 2.1): the ID generator applied to the items a user's prompt may see in a split, never its target.

One user ID per split: the input text of a user is built from ``genrec.splits.visible_items`` for that split only
(most recent first, so truncation drops the oldest), from the items' IDs when an IdTable is given, else their
plain text. The same Algorithm 1 makes the user IDs unique.
"""
from __future__ import annotations

from typing import Any

from genrec.dataset import Dataset
from genrec.splits import Split, visible_items

from .config import IdGenConfig
from .idtable import IdTable


def user_texts(dataset: Dataset, split: Split, idtable: IdTable | None = None, max_items: int = 20) -> dict[str, str]:
    """The generator input of every user for ``split``; users with nothing visible are left out."""
    out: dict[str, str] = {}
    for user, seq in dataset.users.items():
        seen = visible_items(seq, split)[-max_items:]
        if seen:
            out[user] = "; ".join(idtable[k] if idtable else dataset.items[k].text for k in reversed(seen))
    return out


def user_ids(model, tokenizer, dataset: Dataset, split: Split, cfg: IdGenConfig | dict[str, Any] | None = None,
             idtable: IdTable | None = None, max_items: int = 20, workers: int = 0,
             ray_address: str | None = None) -> IdTable:
    """Unique user IDs for ``split`` (an IdTable keyed by user)."""
    from . import generate

    return generate(model, tokenizer, user_texts(dataset, split, idtable, max_items), cfg, workers, ray_address)

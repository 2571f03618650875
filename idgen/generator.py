"""The ID generator (paper 2.2): a T5 encoder-decoder that reads an item's plain text and writes its textual ID.

It shares the recommender's tokenizer. Item text is truncated to ``max_text_tokens`` (paper: 256). The encoder
states of every item are computed once, kept unpadded per item in host memory (dropped once the item has its ID),
and re-padded into any later batch, so the diverse beam search of a retry never re-encodes an item's text.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from genrec.dist import device as default_device
from genrec.modeling import load_t5, model_from_config
from genrec.t5step import encode


@dataclass
class EncodedBatch:
    """Encoder states of a batch, right-padded: ``states`` [B, L, d], ``mask`` [B, L]."""

    states: torch.Tensor
    mask: torch.Tensor


@dataclass
class Generator:
    """A T5 ID generator with its tokenizer, text truncation and a per-item encoder-state cache."""

    model: Any
    tokenizer: Any
    max_text_tokens: int = 256
    device: torch.device = field(default_factory=default_device)
    _cache: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.model.to(self.device).eval()

    @classmethod
    def load(cls, model: str | Path | dict[str, Any], tokenizer: Any, max_text_tokens: int = 256) -> "Generator":
        """``model`` is a ``save_pretrained`` folder / hub name, or a size spec for a fresh T5 (``genrec.modeling``)."""
        t5 = model_from_config(model, len(tokenizer)) if isinstance(model, dict) else load_t5(model)
        return cls(t5, tokenizer, max_text_tokens)

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text, truncated to ``max_text_tokens`` (the last one kept for ``</s>``)."""
        enc = self.tokenizer(texts, truncation=True, max_length=self.max_text_tokens)["input_ids"]
        return [list(e) for e in enc]

    @torch.no_grad()
    def encode(self, items: dict[str, str], batch_size: int = 64) -> None:
        """Run the encoder over the items not cached yet (each item once, ever)."""
        todo = [k for k in items if k not in self._cache]
        for start in range(0, len(todo), batch_size):
            keys = todo[start:start + batch_size]
            ids = self.tokenize([items[k] for k in keys])
            lengths = [len(x) for x in ids]
            width = max(lengths)
            input_ids = torch.tensor([x + [self.tokenizer.pad_token_id] * (width - len(x)) for x in ids], device=self.device)
            mask = (torch.arange(width, device=self.device)[None, :] < torch.tensor(lengths, device=self.device)[:, None]).long()
            states = encode(self.model, input_ids, mask)
            for key, n, s in zip(keys, lengths, states):
                self._cache[key] = s[:n].to("cpu", copy=True)

    def batch(self, keys: list[str]) -> EncodedBatch:
        """Cached encoder states of ``keys`` (which must be encoded), padded to the longest."""
        states = [self._cache[k] for k in keys]
        width = max(s.shape[0] for s in states)
        out = states[0].new_zeros(len(states), width, states[0].shape[1])
        mask = torch.zeros(len(states), width, dtype=torch.long, device=out.device)
        for i, s in enumerate(states):
            out[i, : s.shape[0]] = s
            mask[i, : s.shape[0]] = 1
        return EncodedBatch(out.to(self.device), mask.to(self.device))

    def forget(self, keys: list[str] | None = None) -> None:
        """Drop cached encoder states (all of them, or those of ``keys``): items that got their ID, or all after training."""
        if keys is None:
            self._cache.clear()
        for k in keys or ():
            self._cache.pop(k, None)

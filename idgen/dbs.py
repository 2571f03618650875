"""Batched diverse beam search (Vijayakumar et al., 2016) on a T5 encoder-decoder with a KV cache.

Transformers 5.x no longer ships group beam search offline, so it is implemented here. ``groups`` groups of one
beam each decode side by side; at every step, group ``g`` picks its token from the log-probabilities minus the
Hamming diversity penalty ``lambda * count``, where ``count`` is how many earlier groups (0..g-1) of the same item
chose that token at this step. With one beam per group a group's beam never reorders, so row ``b * groups + g``
keeps its own KV cache for the whole search; the cache is only narrowed when items finish all their groups. The
decoder is :class:`genrec.t5step.T5StepDecoder`: the groups of an item share its cross-attention keys and values,
and the first step (where all groups are identical) runs once per item. Many items share one forward pass;
each item may have its own penalty and length window. A group finishes when it emits ``</s>``: ``</s>`` is banned
before ``min_len`` content tokens and forced once ``max_len - 1`` are written, so every ID has
``min_len <= len < max_len`` tokens. ``banned`` tokens (the tokenizer's other special tokens, e.g. the span-corruption
sentinels, which a generator started from a language model favours) are never chosen.
"""
from __future__ import annotations

from typing import Sequence

import torch

from genrec.t5step import T5StepDecoder

from .generator import EncodedBatch


@torch.no_grad()
def diverse_beam_search(
    model,
    enc: EncodedBatch,
    penalty: torch.Tensor,
    min_len: torch.Tensor,
    max_len: torch.Tensor,
    groups: int = 10,
    banned: Sequence[int] = (),
) -> list[list[list[int]]]:
    """For each of the B items of ``enc``: ``groups`` token lists (no ``</s>``), in group order.

    ``penalty`` (float [B]) is each item's diversity penalty lambda; ``min_len`` / ``max_len`` (long [B]) its length
    window [min_len, max_len) in tokens.
    """
    cfg = model.config
    eos, pad, start = cfg.eos_token_id, cfg.pad_token_id, cfg.decoder_start_token_id
    n_items = enc.states.shape[0]
    dev = enc.states.device
    penalty = penalty.to(dev, torch.float32)[:, None]
    min_len, max_len = min_len.to(dev), max_len.to(dev)
    steps = int(max_len.max())
    banned = torch.tensor(sorted(set(banned) - {eos}), dtype=torch.long, device=dev)
    alive = torch.arange(n_items, device=dev)  # items with a group still decoding
    decoder = T5StepDecoder(model, enc.states, enc.mask, beams=groups, max_steps=steps)
    cur = torch.full((n_items,), start, dtype=torch.long, device=dev)  # the groups start identical: one row per item
    finished = torch.zeros(n_items, groups, dtype=torch.bool, device=dev)
    out = torch.full((n_items, groups, steps), pad, dtype=torch.long, device=dev)
    for t in range(steps):
        logits = decoder.logits(decoder.step(cur)).float()
        if t == 0:
            logits = logits.repeat_interleave(groups, dim=0)
        # log_softmax only shifts each row by a constant: the argmax under the penalty is the same on raw logits
        scores = logits.view(len(alive), groups, -1)
        scores[..., pad] = float("-inf")
        scores[..., banned] = float("-inf")
        scores[..., eos] = torch.where((t < min_len)[:, None], float("-inf"), scores[..., eos])
        forced = t >= max_len - 1
        if forced.any():
            only_eos = torch.full_like(scores[0, 0], float("-inf"))
            only_eos[eos] = 0.0
            scores = torch.where(forced[:, None, None], only_eos, scores)
        counts = torch.zeros(len(alive), scores.shape[-1], device=dev)
        chosen = torch.empty(len(alive), groups, dtype=torch.long, device=dev)
        for g in range(groups):
            tok = (scores[:, g] - penalty * counts).argmax(-1)
            tok = torch.where(finished[:, g], pad, tok)
            counts.scatter_add_(1, tok[:, None], (~finished[:, g]).float()[:, None])
            chosen[:, g] = tok
        out[alive, :, t] = chosen
        finished |= chosen == eos
        done = finished.all(dim=1)
        if bool(done.all()):
            break
        if bool(done.any()):  # drop finished items from the batch and their rows from the KV cache
            keep = (~done).nonzero().squeeze(1)
            decoder.select(keep)
            penalty, min_len, max_len = penalty[keep], min_len[keep], max_len[keep]
            finished, chosen, alive = finished[keep], chosen[keep], alive[keep]
        cur = chosen.view(-1)
    return [[seq[: seq.index(eos)] for seq in item] for item in out.tolist()]

"""Soft ID embeddings for the generator stage of alternating training (paper 2.5).

In the generator stage the recommender is frozen and the loss must reach the ID generator through the prompt. For
every distinct history item of a batch the generator is run on the item's plain text, teacher-forced on the item's
*current* ID tokens (or free-running: fed its own greedy tokens, a config choice). Its per-step distribution
``softmax(logits / tau)`` (optionally made hard with the straight-through estimator) multiplies the recommender's
input embedding matrix, giving one soft embedding per ID token. These replace the item's token embeddings in the
prompt by index (``Prompt.item_spans`` of ``genrec.prompts``), with one ``index_put`` for the whole batch.

Steps that are padding (beyond the item's ID length) or, when free-running, come after the generator emitted EOS
keep the prompt's hard token embedding and carry no gradient.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from genrec.modeling import head_input


@dataclass
class SoftIdConfig:
    """Soft ID embeddings of the generator stage (paper 2.5)."""

    tau: float = 1.0  # softmax temperature
    straight_through: bool = False  # forward = one-hot argmax, backward = gradient of the softmax
    free_running: bool = False  # feed the generator its own greedy tokens instead of the current ID tokens

    @classmethod
    def from_dict(cls, cfg: dict | None) -> "SoftIdConfig":
        cfg = dict(cfg or {})
        return cls(**{k: cfg[k] for k in ("tau", "straight_through", "free_running") if k in cfg})


@dataclass
class SpanIndex:
    """Where each history-item occurrence sits in a batch of prompts.

    ``batch[o]``, ``start[o]``, ``length[o]``: prompt row, first position and token count of occurrence ``o``;
    ``item[o]``: its row among the batch's distinct items (the rows of ``id_ids``).
    """

    batch: torch.Tensor
    start: torch.Tensor
    length: torch.Tensor
    item: torch.Tensor

    def to(self, device: torch.device) -> "SpanIndex":
        return SpanIndex(*(t.to(device) for t in (self.batch, self.start, self.length, self.item)))


def _distribution(logits: torch.Tensor, cfg: SoftIdConfig) -> torch.Tensor:
    logits = logits.float()
    probs = F.softmax(logits if cfg.tau == 1.0 else logits / cfg.tau, dim=-1)
    if not cfg.straight_through:
        return probs
    hard = F.one_hot(probs.argmax(-1), probs.shape[-1]).to(probs.dtype)
    return hard + probs - probs.detach()


def soft_id_embeddings(
    generator,
    text_ids: torch.Tensor,
    text_mask: torch.Tensor,
    id_ids: torch.Tensor,
    id_mask: torch.Tensor,
    embedding: torch.Tensor,
    cfg: SoftIdConfig,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft embeddings ``[U, L, d]`` of ``U`` items' ID tokens and the mask ``[U, L]`` of steps that may be used.

    ``text_ids/text_mask [U, T]``: the items' plain text (generator input); ``id_ids/id_mask [U, L]``: their current
    ID tokens (no EOS), padded; ``embedding [V, d]``: the recommender's input embedding matrix. Teacher-forced, the
    generator's head, the softmax over the vocabulary and the product with ``embedding`` run on the ``id_mask``
    steps only (a batch's IDs are padded to its longest); the other steps of the result are zero.
    """
    start = torch.full_like(id_ids[:, :1], generator.config.decoder_start_token_id)
    if cfg.free_running:
        logits, step_mask = _free_running(generator, text_ids, text_mask, start, id_ids.shape[1], id_mask)
        return _distribution(logits[..., : embedding.shape[0]], cfg).to(embedding.dtype) @ embedding, step_mask
    dec_in = torch.cat([start, id_ids[:, :-1]], dim=1)
    hidden = head_input(generator, text_ids, text_mask, dec_in)[id_mask]
    weights = _distribution(generator.lm_head(hidden)[:, : embedding.shape[0]], cfg)
    soft = embedding.new_zeros(*id_ids.shape, embedding.shape[1])
    soft[id_mask] = weights.to(embedding.dtype) @ embedding
    return soft, id_mask


def _free_running(generator, text_ids, text_mask, start, steps, id_mask):
    """Greedy decoding with gradients through the logits; steps after an emitted EOS are masked out."""
    enc = generator.get_encoder()(input_ids=text_ids, attention_mask=text_mask)
    tok, cache, out = start, None, []
    for _ in range(steps):
        o = generator(encoder_outputs=enc, attention_mask=text_mask, decoder_input_ids=tok, cache=cache, use_cache=True)
        cache = o.cache
        out.append(o.logits[:, -1])
        tok = o.logits[:, -1:].argmax(-1)
    logits = torch.stack(out, dim=1)
    is_eos = logits.argmax(-1) == generator.config.eos_token_id
    before_eos = torch.cumsum(is_eos.long(), dim=1) == 0
    return logits, id_mask & before_eos


def splice(
    inputs_embeds: torch.Tensor, soft: torch.Tensor, step_mask: torch.Tensor, spans: SpanIndex
) -> torch.Tensor:
    """Prompt embeddings ``[B, P, d]`` with every occurrence's ID-token embeddings replaced by the soft ones."""
    width = soft.shape[1]
    offset = torch.arange(width, device=soft.device)
    item = spans.item[:, None].expand(-1, width)
    off = offset[None, :].expand(spans.item.shape[0], -1)
    keep = (off < spans.length[:, None]) & step_mask[item, off]
    rows = spans.batch[:, None].expand(-1, width)[keep]
    cols = (spans.start[:, None] + off)[keep]
    return inputs_embeds.index_put((rows, cols), soft[item[keep], off[keep]].to(inputs_embeds.dtype))


def soft_prompt_embeds(
    generator,
    table: torch.Tensor,
    input_ids: torch.Tensor,
    text_ids: torch.Tensor,
    text_mask: torch.Tensor,
    id_ids: torch.Tensor,
    id_mask: torch.Tensor,
    spans: SpanIndex,
    cfg: SoftIdConfig,
) -> torch.Tensor:
    """The recommender's encoder input embeddings for ``input_ids`` with soft IDs spliced in at ``spans``.

    ``table`` is the recommender's input embedding matrix; pass it detached, the recommender is frozen in this stage.
    """
    soft, step_mask = soft_id_embeddings(generator, text_ids, text_mask, id_ids, id_mask, table, cfg)
    return splice(table[input_ids], soft, step_mask, spans)

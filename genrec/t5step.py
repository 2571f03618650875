"""Incremental T5 decoding for search, with the beams of an input sharing its cross-attention keys and values.

Hugging Face's T5 decodes beams as independent rows: the encoder states are repeated once per beam, the
cross-attention keys/values are projected and stored per beam, and every step reads them once per beam. In the
recommender's constrained beam search (paper 2.4, 20 beams) and the generator's diverse beam search (Algorithm 1,
10 groups) all beams of one input attend to the same encoder states, so :class:`T5StepDecoder` projects them once
per input and lets the input's ``beams`` queries attend together (one ``[beams x L]`` product per head). The
self-attention cache is kept contiguous. A step returns the decoder output of the new token;
:meth:`T5StepDecoder.log_probs_at` turns it into the log-probabilities of just the tokens a search asks for, with the
softmax normaliser computed a hundred-odd rows at a time in one reused buffer: a fresh ``[1280 x 8000]`` logit
matrix per step costs more in page faults (allocations above glibc's 32 MiB mmap threshold) than in arithmetic on a
CPU.

Same weights and the same arithmetic as ``T5ForConditionalGeneration.forward`` (the model's own embedding, norms,
projections, feed-forward and head modules; relative position bias; no query scaling; the tied-embedding rescale of
the decoder output), so searches built on it rank as ``generate`` does (tests compare the two).
"""
from __future__ import annotations

import torch

ATTENTION_ELEMENTS = 1 << 20  # scores per encoder chunk in :func:`encode` (4 MiB of float32)


@torch.no_grad()
def encode(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The T5 encoder's last hidden states ``[n, L, d]``, computed a few rows at a time.

    Hugging Face's SDPA path merges the padding mask into the position bias as a ``[rows, heads, L, L]`` tensor
    (a broadcast ``where`` and a copy that cost ten times the attention on a CPU); here the bias ``[heads, L, L]``
    and an additive mask ``[rows, 1, 1, L]`` are added to the scores directly. Rows are independent, so chunks of at
    most ``ATTENTION_ELEMENTS`` scores keep every tensor below glibc's mmap threshold.
    """
    stack = model.get_encoder()
    blocks = list(stack.block)
    cfg = model.config
    length = input_ids.shape[1]
    rows = max(1, ATTENTION_ELEMENTS // (cfg.num_heads * length * length))
    bias = blocks[0].layer[0].SelfAttention.compute_bias(length, length, device=input_ids.device)  # [1, H, L, L]
    out = []
    for ids, mask in zip(input_ids.split(rows), attention_mask.split(rows)):
        h = stack.embed_tokens(ids)
        scores_bias = bias.to(h.dtype) + ((1.0 - mask.to(h.dtype)) * torch.finfo(h.dtype).min)[:, None, None, :]
        for blk in blocks:
            attn = blk.layer[0].SelfAttention
            x = blk.layer[0].layer_norm(h)
            q, k, v = (_heads(proj(x), cfg.num_heads) for proj in (attn.q, attn.k, attn.v))
            weights = torch.softmax(q @ k.transpose(-1, -2) + scores_bias, dim=-1)
            h = h + attn.o((weights @ v).transpose(1, 2).flatten(2))
            h = blk.layer[-1](h)
        out.append(stack.final_layer_norm(h))
    return torch.cat(out)


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """``[..., T, H * d_kv]`` -> ``[..., H, T, d_kv]``."""
    return x.unflatten(-1, (heads, -1)).transpose(-3, -2)


class T5StepDecoder:
    """One decoder token per :meth:`step` for ``n`` inputs x ``beams`` rows, beam ``j`` of input ``i`` at row
    ``i * beams + j``.

    Inference only (no gradients). The first step may be fed one token per input (all beams start identical): its
    output is then ``[n, d]`` and its cache entries are copied to every beam of the input.
    """

    CHUNK_ELEMENTS = {"cpu": 1 << 20, "cuda": 1 << 26}  # logits per chunk in :meth:`log_probs_at`, by device type

    @torch.no_grad()
    def __init__(self, model, hidden: torch.Tensor, attention_mask: torch.Tensor, beams: int, max_steps: int):
        """``hidden``/``attention_mask``: the encoder output ``[n, L, d]`` and its mask ``[n, L]``."""
        cfg = model.config
        self.model, self.beams, self.max_steps = model, beams, max_steps
        self.decoder = model.get_decoder()
        self.blocks = list(self.decoder.block)
        self.heads, self.d_kv = cfg.num_heads, cfg.d_kv
        self.rescale = cfg.d_model ** -0.5 if getattr(cfg, "scale_decoder_outputs", cfg.tie_word_embeddings) else None
        n, dtype = hidden.shape[0], hidden.dtype
        cross = [blk.layer[1].EncDecAttention for blk in self.blocks]
        self.cross_k = [self._heads(a.k(hidden)).transpose(-1, -2).contiguous() for a in cross]  # [n, H, d_kv, L]
        self.cross_v = [self._heads(a.v(hidden)).contiguous() for a in cross]  # [n, H, L, d_kv]
        self.cross_bias = ((1.0 - attention_mask.to(dtype)) * torch.finfo(dtype).min)[:, None, None, :]
        self.self_k: list[torch.Tensor] = [hidden.new_empty(0)] * len(self.blocks)  # [n * beams, H, steps, d_kv]
        self.self_v: list[torch.Tensor] = [hidden.new_empty(0)] * len(self.blocks)
        bias = self.blocks[0].layer[0].SelfAttention.compute_bias(max_steps, max_steps, device=hidden.device)
        self.position_bias = bias[0].to(dtype)  # [H, query position, key position]
        self.head = model.lm_head.weight.t().contiguous()  # [d, vocab]: T5's head has no bias
        vocab = self.head.shape[1]
        self.chunk = max(1, self.CHUNK_ELEMENTS.get(hidden.device.type, 1 << 24) // vocab)
        self.chunk_logits = hidden.new_empty(self.chunk, vocab)
        self.chunk_log_probs = torch.empty(self.chunk, vocab, dtype=torch.float32, device=hidden.device)
        self.length = 0  # tokens already in the self-attention cache

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return _heads(x, self.heads)

    @torch.no_grad()
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed ``tokens`` (``[n * beams]``, or ``[n]`` on the first step); returns the decoder output ``[rows, d]``
        that the LM head reads (see :meth:`logits`, :meth:`log_probs_at`)."""
        t = self.length
        if t >= self.max_steps:
            raise RuntimeError(f"the decoder was sized for {self.max_steps} steps")
        n = self.cross_k[0].shape[0]
        b = tokens.shape[0] // n
        if tokens.shape[0] != n * b or b not in (1, self.beams) or (b == 1 and t > 0 and self.beams > 1):
            raise ValueError(f"{tokens.shape[0]} tokens for {n} inputs x {self.beams} beams at step {t}")
        h = self.decoder.embed_tokens(tokens)[:, None, :]  # [rows, 1, d]
        bias = self.position_bias[:, t: t + 1, : t + 1]
        for i, blk in enumerate(self.blocks):
            attn = blk.layer[0].SelfAttention
            x = blk.layer[0].layer_norm(h)
            q, k, v = self._heads(attn.q(x)), self._heads(attn.k(x)), self._heads(attn.v(x))  # [rows, H, 1, d_kv]
            if t == 0:  # every beam of an input starts from this cache entry
                keys, values = k, v
                self.self_k[i] = k.repeat_interleave(self.beams // b, 0)
                self.self_v[i] = v.repeat_interleave(self.beams // b, 0)
            else:  # a contiguous cache: batched products over a strided slice cost twice as much on a CPU
                keys = self.self_k[i] = torch.cat((self.self_k[i], k), dim=2)
                values = self.self_v[i] = torch.cat((self.self_v[i], v), dim=2)
            scores = torch.softmax(q @ keys.transpose(-1, -2) + bias, dim=-1)
            h = h + attn.o((scores @ values).transpose(1, 2).flatten(2))
            cross = blk.layer[1].EncDecAttention
            x = blk.layer[1].layer_norm(h)
            q = cross.q(x).view(n, b, self.heads, self.d_kv).transpose(1, 2)  # [n, H, b, d_kv]
            scores = torch.softmax(q @ self.cross_k[i] + self.cross_bias, dim=-1)
            h = h + cross.o((scores @ self.cross_v[i]).transpose(1, 2).reshape(n * b, 1, -1))
            h = blk.layer[-1](h)
        h = self.decoder.final_layer_norm(h[:, 0])
        if self.rescale is not None:
            h = h * self.rescale
        self.length = t + 1
        return h

    @torch.no_grad()
    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """``[rows, vocab]`` logits of a :meth:`step` output."""
        return h @ self.head

    @torch.no_grad()
    def log_probs_at(self, h: torch.Tensor, rows: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """``log_softmax(logits(h)).float()[rows, tokens]`` for ``rows`` sorted ascending, chunk by chunk of rows."""
        chunk = self.chunk
        bounds = torch.searchsorted(rows, torch.arange(0, len(h) + chunk, chunk, device=rows.device)).tolist()
        out = torch.empty(rows.shape, dtype=torch.float32, device=h.device)
        for c, start in enumerate(range(0, len(h), chunk)):
            lo, hi = bounds[c], bounds[c + 1]
            part = h[start: start + chunk]
            logits = torch.mm(part, self.head, out=self.chunk_logits[: len(part)]).float()
            # log_softmax's fused row kernel into a reused buffer: 4x faster here than amax/sub/exp/sum passes
            log_probs = torch.log_softmax(logits, dim=-1, out=self.chunk_log_probs[: len(part)])
            out[lo:hi] = log_probs[rows[lo:hi] - start, tokens[lo:hi]]
        return out

    def reorder(self, rows: torch.Tensor) -> None:
        """Row ``r`` continues from row ``rows[r]`` (beam search picked its parent)."""
        self.self_k = [k.index_select(0, rows) for k in self.self_k]
        self.self_v = [v.index_select(0, rows) for v in self.self_v]

    def select(self, inputs: torch.Tensor) -> None:
        """Keep only ``inputs`` (indices of the current inputs, in order) and their beams."""
        rows = (inputs[:, None] * self.beams + torch.arange(self.beams, device=inputs.device)).view(-1)
        self.cross_k = [k[inputs] for k in self.cross_k]
        self.cross_v = [v[inputs] for v in self.cross_v]
        self.cross_bias = self.cross_bias[inputs]
        self.self_k = [k[rows] for k in self.self_k]
        self.self_v = [v[rows] for v in self.self_v]

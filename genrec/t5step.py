"""Incremental T5 decoding for search, with the beams of an input sharing its cross-attention keys and values.

Hugging Face's T5 decodes beams as independent rows: the encoder states are repeated once per beam, the
cross-attention keys/values are projected and stored per beam, and every step reads them once per beam. In the
recommender's constrained beam search (paper 2.4, 20 beams) and the generator's diverse beam search (Algorithm 1,
10 groups) all beams of one input attend to the same encoder states, so :class:`T5StepDecoder` projects them once
per input and lets the input's ``beams`` queries attend together (one ``[beams x L]`` product per head). The
self-attention cache is time-major and preallocated, so reordering beams is one gather per layer and a step writes
one slice. A step returns the decoder output of the new token;
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
    bias = blocks[0].layer[0].SelfAttention.compute_bias(length, length, device=input_ids.device)
    bias = bias.contiguous()  # [1, H, L, L], so that bias + mask is contiguous and views as [rows * H, L, L]
    out = []
    for ids, mask in zip(input_ids.split(rows), attention_mask.split(rows)):
        h = stack.embed_tokens(ids)
        scores_bias = bias.to(h.dtype) + ((1.0 - mask.to(h.dtype)) * torch.finfo(h.dtype).min)[:, None, None, :]
        scores_bias = scores_bias.view(-1, length, length)  # [rows * H, L, L]
        for blk in blocks:
            attn = blk.layer[0].SelfAttention
            x = blk.layer[0].layer_norm(h)
            q, k, v = (_heads(proj(x), cfg.num_heads) for proj in (attn.q, attn.k, attn.v))
            # the bias enters the product as its accumulator (one pass over the scores fewer than ``q @ k + bias``)
            q, k = q.reshape(-1, length, cfg.d_kv), k.reshape(-1, length, cfg.d_kv)
            scores = torch.baddbmm(scores_bias, q, k.transpose(1, 2))
            weights = torch.softmax(scores, dim=-1).view(len(ids), cfg.num_heads, length, length)
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
        # self-attention cache, time-major: [capacity, n * beams, H, d_kv] per layer (see :meth:`_append`)
        self.self_k: list[torch.Tensor] = []
        self.self_v: list[torch.Tensor] = []
        self.spare: list[torch.Tensor] = []  # buffers :meth:`reorder` gathers into, then swaps with the cache
        bias = self.blocks[0].layer[0].SelfAttention.compute_bias(max_steps, max_steps, device=hidden.device)
        self.position_bias = bias[0].to(dtype)  # [H, query position, key position]
        # under autocast (genrec.precision) the head product runs in the autocast dtype, into a buffer of that dtype
        device_type = hidden.device.type
        self.compute = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else dtype
        self.head = model.lm_head.weight.t().to(self.compute).contiguous()  # [d, vocab]: T5's head has no bias
        vocab = self.head.shape[1]
        self.chunk = max(1, self.CHUNK_ELEMENTS.get(device_type, 1 << 24) // vocab)
        self.chunk_logits = hidden.new_empty(self.chunk, vocab, dtype=self.compute)
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
        h = self.decoder.embed_tokens(tokens)  # [rows, d]
        bias = self.position_bias[:, t, : t + 1].t()[:, None, :]  # [key position, 1, H]
        for i, blk in enumerate(self.blocks):
            attn = blk.layer[0].SelfAttention
            x = blk.layer[0].layer_norm(h)
            q, k, v = (proj(x).view(-1, self.heads, self.d_kv) for proj in (attn.q, attn.k, attn.v))  # [rows, H, d_kv]
            keys, values = self._append(i, k, v, b)  # [t + 1, n * beams, H, d_kv]
            if b == 1 and self.beams > 1:  # the first step: every beam of an input holds this one key
                keys, values = keys[:, :: self.beams], values[:, :: self.beams]
            # one query per row against t + 1 keys: elementwise products beat a batched matmul of [1 x t] slices
            scores = torch.softmax((keys * q).sum(-1) + bias, dim=0)  # [t + 1, rows, H]
            h = h + attn.o((scores[..., None] * values).sum(0).flatten(1))
            cross = blk.layer[1].EncDecAttention
            x = blk.layer[1].layer_norm(h)
            q = cross.q(x).view(n, b, self.heads, self.d_kv).transpose(1, 2)  # [n, H, b, d_kv]
            scores = torch.softmax(q @ self.cross_k[i] + self.cross_bias, dim=-1)
            h = h + cross.o((scores @ self.cross_v[i]).transpose(1, 2).reshape(n * b, -1))
            h = blk.layer[-1](h)
        h = self.decoder.final_layer_norm(h)
        if self.rescale is not None:
            h = h * self.rescale
        self.length = t + 1
        return h

    def _append(self, layer: int, k: torch.Tensor, v: torch.Tensor, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Write this step's keys/values into the layer's cache (copied to every beam when ``b == 1``) and return
        the cache up to this step. Time-major, so steps ``0..t`` of all rows are one contiguous block that
        :meth:`reorder` gathers with a single copy; capacity doubles as needed (no tensor per step)."""
        t, rows = self.length, k.shape[0] * (self.beams // b)
        if layer == len(self.self_k) or self.self_k[layer].shape[0] == t:  # first step, or full
            capacity = min(self.max_steps, max(8, 2 * t))
            grown = [k.new_empty(capacity, rows, self.heads, self.d_kv) for _ in range(2)]
            if t:
                grown[0][:t], grown[1][:t] = self.self_k[layer][:t], self.self_v[layer][:t]
                self.self_k[layer], self.self_v[layer] = grown
                self.spare = []
            else:
                self.self_k.append(grown[0])
                self.self_v.append(grown[1])
        keys, values = self.self_k[layer], self.self_v[layer]
        keys[t].view(-1, self.beams // b, self.heads, self.d_kv).copy_(k[:, None])
        values[t].view(-1, self.beams // b, self.heads, self.d_kv).copy_(v[:, None])
        return keys[: t + 1], values[: t + 1]

    @torch.no_grad()
    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """``[rows, vocab]`` logits of a :meth:`step` output."""
        return h.to(self.compute) @ self.head

    @torch.no_grad()
    def log_probs_at(self, h: torch.Tensor, rows: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """``log_softmax(logits(h)).float()[rows, tokens]`` for ``rows`` sorted ascending, chunk by chunk of rows."""
        chunk = self.chunk
        bounds = torch.searchsorted(rows, torch.arange(0, len(h) + chunk, chunk, device=rows.device)).tolist()
        out = torch.empty(rows.shape, dtype=torch.float32, device=h.device)
        for c, start in enumerate(range(0, len(h), chunk)):
            lo, hi = bounds[c], bounds[c + 1]
            part = h[start: start + chunk]
            logits = torch.mm(part.to(self.compute), self.head, out=self.chunk_logits[: len(part)]).float()
            # log_softmax's fused row kernel into a reused buffer: 4x faster here than amax/sub/exp/sum passes
            log_probs = torch.log_softmax(logits, dim=-1, out=self.chunk_log_probs[: len(part)])
            out[lo:hi] = log_probs[rows[lo:hi] - start, tokens[lo:hi]]
        return out

    @torch.no_grad()
    def reorder(self, rows: torch.Tensor) -> None:
        """Row ``r`` continues from row ``rows[r]`` (beam search picked its parent): one gather per cache, into a
        spare buffer that then becomes the cache."""
        t, caches = self.length, self.self_k + self.self_v
        if not self.spare:
            self.spare = [torch.empty_like(c) for c in caches]
        for cache, spare in zip(caches, self.spare):
            torch.index_select(cache[:t], 1, rows, out=spare[:t])
        layers = len(self.blocks)
        self.self_k, self.self_v, self.spare = self.spare[:layers], self.spare[layers:], caches

    @torch.no_grad()
    def select(self, inputs: torch.Tensor) -> None:
        """Keep only ``inputs`` (indices of the current inputs, in order) and their beams."""
        rows = (inputs[:, None] * self.beams + torch.arange(self.beams, device=inputs.device)).view(-1)
        self.cross_k = [k[inputs] for k in self.cross_k]
        self.cross_v = [v[inputs] for v in self.cross_v]
        self.cross_bias = self.cross_bias[inputs]
        self.self_k = [k.index_select(1, rows) for k in self.self_k]
        self.self_v = [v.index_select(1, rows) for v in self.self_v]
        self.spare = []

"""Training-time fast paths for Hugging Face T5 on a CPU: dropout masks and attention.

Profiled on a recommender step of the tiny T5 (d_model 128, 2+2 layers, Beauty prompts, fp32, 2 threads), a
quarter of the time went to ``bernoulli_``, the kernel behind every ``nn.Dropout`` and the attention-weight dropout:
PyTorch draws one Bernoulli sample per element at about 8 ns each on this CPU, more than the matrix products of the
step. :func:`fast_dropout` draws the mask from raw generator bits instead, two 15-bit uniforms from each 32-bit draw
(``random_`` on int32 keeps the low 31 bits of a Mersenne-Twister output, all uniform), so the drop probability is
``round(p * 2**15) / 2**15`` (0.1 -> 0.100006) and the kept values are scaled by the inverse of the exact keep
probability; the draws come from the default generator, so ``torch.manual_seed`` and the checkpointed RNG state
make masks reproducible. Off the CPU it is ``F.dropout`` (fast Philox kernels there).

:func:`attention` is T5's eager attention (no query scaling, the relative position bias and the additive mask added
to the scores) with the bias and mask added in place to the score product and :func:`fast_dropout` on the weights; it is
registered with transformers' attention interface as ``"genrec"``, with the eager (additive) mask, and replaces the
SDPA path, which on a CPU merges the padding mask into the position bias with a broadcast ``where`` per layer.
Both compute the same function as Hugging Face's code (``tests/test_t5fast.py`` compares losses and gradients).

:func:`flush_denormals` makes the CPU treat subnormal floats (below 1.2e-38 in fp32) as zero. A trained T5 can
produce them (activations and gradients that underflow), and x86 cores compute each one tens of times slower: the
recommender stage started from a span-corruption LM (d_model 128) ran 1.9x faster with them flushed
(``bench/train_throughput.py --denormals keep flush``). :mod:`genrec.modeling` calls it when imported, before any
model exists, so that the intra-op threads started later inherit it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ATTENTION = "genrec"
MASK_BITS = 15  # uniform bits per dropout decision: two per 32-bit draw


def flush_denormals() -> bool:
    """Flush subnormal floats to zero on this thread and the threads it starts from now on (the CPU's FTZ/DAZ
    flags). Results change only below fp32's smallest normal number; returns False on a CPU without the flags."""
    return torch.set_flush_denormal(True)


def fast_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Inverted dropout of ``x`` with drop probability ``p`` (``p`` rounded to a multiple of ``2**-15`` on a CPU)."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, True)
    if p >= 1.0:
        return x * 0.0
    n = x.numel()
    threshold = round(p * (1 << MASK_BITS))
    bits = torch.empty((n + 1) // 2, dtype=torch.int32).random_().view(torch.int16)[:n]
    keep = bits.bitwise_and_(0x7FFF) >= threshold
    scale = (1 << MASK_BITS) / ((1 << MASK_BITS) - threshold)
    return x * keep.view(x.shape).to(x.dtype).mul_(scale)


class Dropout(nn.Dropout):
    """``nn.Dropout`` drawing its mask with :func:`fast_dropout`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fast_dropout(x, self.p, self.training)


def attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
              attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
              position_bias: torch.Tensor | None = None, **_: object) -> tuple[torch.Tensor, None]:
    """T5 attention for transformers' attention interface: ``query``/``key``/``value`` ``[B, H, T, d_kv]``,
    ``position_bias`` ``[1 or B, H, Q, K]``, ``attention_mask`` additive ``[B, 1, Q, K]``; returns ``[B, Q, H, d_kv]``."""
    scores = torch.matmul(query, key.transpose(-1, -2))
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    if scaling != 1.0:
        scores.mul_(scaling)
    if position_bias is not None:
        scores.add_(position_bias)
    if attention_mask is not None:
        scores.add_(attention_mask)
    weights = fast_dropout(torch.softmax(scores, dim=-1), dropout, module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), None


def _register() -> bool:
    """Register :func:`attention` (and the eager additive mask) under :data:`ATTENTION`; False where this
    transformers' T5 predates the attention interface."""
    try:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, eager_mask
        from transformers.models.t5 import modeling_t5
    except ImportError:
        return False
    if not hasattr(modeling_t5, "ALL_ATTENTION_FUNCTIONS"):
        return False
    AttentionInterface.register(ATTENTION, attention)
    AttentionMaskInterface.register(ATTENTION, eager_mask)
    return True


REGISTERED = _register()


def install(model: nn.Module) -> nn.Module:
    """Swap every ``nn.Dropout`` of ``model`` for :class:`Dropout` and select :func:`attention` (where this
    transformers supports it). The weights and the function computed are unchanged."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is nn.Dropout:
                setattr(module, name, Dropout(child.p))
    if REGISTERED:
        model.set_attn_implementation(ATTENTION)
    return model

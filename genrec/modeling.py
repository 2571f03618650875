"""T5 model builders: tiny configs trained from scratch (tests, demo, CPU) or a local folder / hub name.

Every model is a :class:`GenRecT5`: Hugging Face's ``T5ForConditionalGeneration`` (same modules, weights, config
and ``save_pretrained`` folders) with the CPU fast paths of :mod:`genrec.t5fast` installed and a training loss
computed on the label positions only.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import T5Config, T5ForConditionalGeneration
from transformers.modeling_outputs import Seq2SeqLMOutput

from . import t5fast
from .recipe import training_choices

t5fast.flush_denormals()  # before any model or intra-op thread exists: trained T5s underflow into slow subnormals

TINY = {"d_model": 128, "d_ff": 512, "d_kv": 32, "num_layers": 2, "num_decoder_layers": 2, "num_heads": 4}
IGNORE = -100  # label of a padding position


def head_input(model: T5ForConditionalGeneration, input_ids: torch.Tensor | None, attention_mask: torch.Tensor,
               decoder_input_ids: torch.Tensor, inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
    """What the LM head of a T5 reads at every decoder position ``[batch, length, d_model]`` (the stock forward up
    to the head), so that callers project only the positions they use."""
    encoded = model.encoder(input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds)[0]
    decoded = model.decoder(input_ids=decoder_input_ids, encoder_hidden_states=encoded,
                            encoder_attention_mask=attention_mask)[0]
    return decoded * (model.model_dim ** -0.5) if model.config.scale_decoder_outputs else decoded


class GenRecT5(T5ForConditionalGeneration):
    """T5 whose training forward ``forward(input_ids | inputs_embeds, attention_mask, labels)`` (in train mode)
    returns the mean cross-entropy over the label positions that are not ``-100``, with the LM head applied to those
    positions only.

    The stock forward projects every decoder position onto the vocabulary: a batch's IDs are padded to its longest,
    so the head product, the vocabulary-wide log-softmax and their gradients ran on pads as well. In this path
    ``logits`` is ``[real label tokens, vocab]``; in eval mode, and for any other call (decoder inputs given, no
    labels, caches), the forward is the stock one with ``[batch, length, vocab]`` logits.
    """

    def __init__(self, config: T5Config):
        super().__init__(config)
        t5fast.install(self)

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                inputs_embeds: torch.Tensor | None = None, labels: torch.Tensor | None = None, **kwargs: Any):
        if labels is None or kwargs or not self.training:
            return super().forward(input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
                                   labels=labels, **kwargs)
        real = labels != IGNORE
        hidden = head_input(self, input_ids, attention_mask, self._shift_right(labels), inputs_embeds)
        logits = self.lm_head(hidden[real])
        loss = F.cross_entropy(logits.float(), labels[real])
        return Seq2SeqLMOutput(loss=loss, logits=logits)


def build_t5(vocab_size: int, **size: Any) -> GenRecT5:
    """A randomly initialised T5 with T5's special-token layout (pad 0, eos 1; decoding starts from pad)."""
    cfg = T5Config(
        vocab_size=vocab_size,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
        dropout_rate=size.pop("dropout_rate", 0.1),
        feed_forward_proj=size.pop("feed_forward_proj", "relu"),
        tie_word_embeddings=size.pop("tie_word_embeddings", True),
        **{**TINY, **size},
    )
    return GenRecT5(cfg)


def load_t5(name_or_path: str | Path, **config: Any) -> GenRecT5:
    """Load a ``save_pretrained`` folder of any T5 (or a hub name where a network exists); ``config`` overrides keys
    of its ``T5Config`` that do not change the weights' shapes (``dropout_rate``)."""
    return GenRecT5.from_pretrained(str(name_or_path), **config)


def model_from_config(spec: dict[str, Any], vocab_size: int) -> GenRecT5:
    """``{"init": PATH_OR_NAME}`` loads weights (and the training choices given with it, e.g. ``dropout_rate``;
    sizes come from the folder); otherwise the remaining keys size a fresh model."""
    spec = dict(spec or {})
    init = spec.pop("init", None)
    if init:
        return load_t5(init, **training_choices(spec))
    return build_t5(vocab_size, **spec)

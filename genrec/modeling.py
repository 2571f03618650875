"""T5 model builders: tiny configs trained from scratch (tests, demo, CPU) or a local folder / hub name."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import T5Config, T5ForConditionalGeneration

TINY = {"d_model": 128, "d_ff": 512, "d_kv": 32, "num_layers": 2, "num_decoder_layers": 2, "num_heads": 4}


def build_t5(vocab_size: int, **size: Any) -> T5ForConditionalGeneration:
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
    return T5ForConditionalGeneration(cfg)


def load_t5(name_or_path: str | Path) -> T5ForConditionalGeneration:
    """Load a ``save_pretrained`` folder (or a hub name where a network exists)."""
    return T5ForConditionalGeneration.from_pretrained(str(name_or_path))


def model_from_config(spec: dict[str, Any], vocab_size: int) -> T5ForConditionalGeneration:
    """``{"init": PATH_OR_NAME}`` loads weights; otherwise the remaining keys size a fresh model."""
    spec = dict(spec or {})
    init = spec.pop("init", None)
    if init:
        return load_t5(init)
    return build_t5(vocab_size, **spec)

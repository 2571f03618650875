"""The SentencePiece tokenizer (trained on item text + prompt words, T5 layout, optional sentinels)."""
from .spm import load_tokenizer, train_tokenizer

__all__ = ["load_tokenizer", "train_tokenizer"]

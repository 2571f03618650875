"""Item-metadata normalisation and the SentencePiece tokenizer (trained on item text + prompt words, T5 layout)."""
from .spm import load_tokenizer, train_tokenizer
from .text import plain_text

__all__ = ["load_tokenizer", "plain_text", "train_tokenizer"]

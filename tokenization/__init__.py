"""Item-metadata normalisation and the SentencePiece tokenizer (trained on item text + prompt words, T5 layout)."""

"""Shared core of idgenrec: dataset schema and readers, splits, prompts, models, trie, decoding, metrics, config."""

"""Session fixtures shared by every test: a small synthetic dataset in canonical form and a tokenizer trained on it."""
from __future__ import annotations

from pathlib import Path

import pytest

SYNTH_USERS, SYNTH_ITEMS, SYNTH_SEED = 120, 60, 0
TOKENIZER_VOCAB = 600


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """A folder in the canonical IDGenRec text form (user_sequence.txt, item_plain_text.txt, items.jsonl, stats.json)."""
    from genrec.synth import synthesize

    out = tmp_path_factory.mktemp("synth") / "retail"
    synthesize(SYNTH_USERS, SYNTH_ITEMS, SYNTH_SEED).save(out)
    return out


@pytest.fixture(scope="session")
def synth_dataset(synth_dir):
    from genrec.dataset import Dataset

    return Dataset.load(synth_dir)


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory, synth_dataset) -> Path:
    """A SentencePiece T5-layout tokenizer folder trained on the synthetic item text + template words."""
    from genrec.prompts import template_words
    from tokenization.spm import train_tokenizer

    out = tmp_path_factory.mktemp("tokenizer") / "spm"
    train_tokenizer([it.text for it in synth_dataset.items.values()], out, TOKENIZER_VOCAB, extra_texts=template_words())
    return out


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir):
    from tokenization.spm import load_tokenizer

    return load_tokenizer(tokenizer_dir)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small decoding ops are latency-bound: on a shared, oversubscribed CPU extra intra-op threads only spin."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

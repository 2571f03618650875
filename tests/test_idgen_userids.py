"""User IDs come from the history a prompt shows: the item the prompt asks for never enters their input."""
from __future__ import annotations

import pytest

from genrec.dataset import Dataset, Item
from genrec.splits import leave_one_out
from idgen.userids import history_key, profile_ids, prompt_texts

from test_idgen_algorithm import tiny_generator


@pytest.fixture(scope="module")
def marked() -> Dataset:
    """Every item's text is a unique marker word, so leaks are visible as substrings."""
    items = {f"i{n}": Item(f"i{n}", f"title: marker{n}x widget") for n in range(12)}
    users = {"u0": ["i0", "i1", "i2", "i3", "i4"], "u1": ["i5", "i6", "i7"], "u2": ["i8", "i9"], "u3": ["i10", "i11", "i0"]}
    return Dataset(items, users, "marked")


@pytest.mark.parametrize("split", ["train", "valid", "test"])
def test_targets_never_enter_the_user_input(marked, split):
    """Not a prompt's target, nor (for training prefixes) any later item of the user."""
    samples = leave_one_out(marked, split)
    texts = prompt_texts(samples, marked.items)
    assert samples and set(texts) == {history_key(s.history) for s in samples}
    for s in samples:
        seq = marked.users[s.user]
        for later in seq[len(s.history):]:
            assert f"marker{later[1:]}x" not in texts[history_key(s.history)]
    if split == "test":
        assert texts["i0 i1 i2 i3"].startswith("title: marker3x")  # most recent first


def test_user_ids_name_every_history_and_same_history_reads_alike(marked, tokenizer):
    """One pass of the item-ID decoder, no uniqueness loop: every history gets a non-empty ID, and two users who
    saw the same items get the same one."""
    twin = Dataset(marked.items, {**marked.users, "u4": list(marked.users["u0"])}, "twin")
    samples = leave_one_out(twin, "test")
    ids = profile_ids(tiny_generator(tokenizer), tokenizer, prompt_texts(samples, twin.items), {"max_text_tokens": 48},
                      progress=False)
    assert set(ids.ids) == {history_key(s.history) for s in samples} and all(t.strip() for t in ids.ids.values())
    assert len(ids.ids) == len(samples) - 1  # u4's history is u0's

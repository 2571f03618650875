"""User IDs are built only from the items visible for their split: the split's target never enters the input."""
from __future__ import annotations

import pytest

from genrec.dataset import Dataset, Item
from idgen import IdTable
from idgen.userids import user_ids, user_texts

from test_idgen_algorithm import tiny_generator


@pytest.fixture(scope="module")
def marked() -> Dataset:
    """Every item's text is a unique marker word, so leaks are visible as substrings."""
    items = {f"i{n}": Item(f"i{n}", f"title: marker{n}x widget") for n in range(12)}
    users = {"u0": ["i0", "i1", "i2", "i3", "i4"], "u1": ["i5", "i6", "i7"], "u2": ["i8", "i9"], "u3": ["i10", "i11", "i0"]}
    return Dataset(items, users, "marked")


@pytest.mark.parametrize("split,offset", [("valid", 2), ("test", 1)])
def test_targets_never_enter_the_user_input(marked, split, offset):
    texts = user_texts(marked, split)
    for user, seq in marked.users.items():
        if len(seq) <= offset or user not in texts:
            continue
        target = seq[-offset]
        assert f"marker{target[1:]}x" not in texts[user]
        for later in seq[-offset:]:
            assert f"marker{later[1:]}x" not in texts[user]
    assert texts["u0"].startswith("title: marker" + ("2x" if split == "valid" else "3x"))  # most recent first


def test_user_input_uses_item_ids_and_skips_users_without_history(marked):
    table = IdTable({k: f"id {k}" for k in marked.items})
    texts = user_texts(marked, "valid", table)
    assert texts["u1"] == "id i5"
    assert "u2" not in texts  # two items: nothing visible before the validation target


def test_user_ids_are_unique_per_split(marked, tokenizer):
    ids = user_ids(tiny_generator(tokenizer), tokenizer, marked, "test", {"max_text_tokens": 48})
    ids.check()
    assert set(ids.ids) == {"u0", "u1", "u2", "u3"}

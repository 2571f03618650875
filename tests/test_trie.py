"""PrefixTrie: masks allow exactly the continuations of real IDs, prefixes of other IDs work, insertion, errors."""
import random

import pytest
import torch

from genrec.trie import PrefixTrie

EOS, PAD = 1, 0


def random_ids(n: int, vocab: int, seed: int) -> dict[str, tuple[int, ...]]:
    rng = random.Random(seed)
    out: dict[str, tuple[int, ...]] = {}
    seen = set()
    while len(out) < n:
        s = tuple(rng.randrange(2, vocab) for _ in range(rng.randint(1, 5)))
        if s not in seen:
            seen.add(s)
            out[f"item{len(out)}"] = s
    return out


def reference_allowed(seqs, prefix):
    nxt = {s[len(prefix)] for s in (tuple(v) + (EOS,) for v in seqs.values()) if len(s) > len(prefix) and s[:len(prefix)] == tuple(prefix)}
    return sorted(nxt) or [PAD]


def test_masks_equal_brute_force_for_every_prefix():
    seqs = random_ids(200, 30, seed=1)
    trie = PrefixTrie(seqs, EOS, PAD)
    prefixes = {s[:i] for s in seqs.values() for i in range(len(s) + 1)} | {(29, 29, 29, 29)}
    prefixes = sorted(prefixes)
    nodes = torch.tensor([trie.walk(p) for p in prefixes])
    mask = trie.allowed_mask(nodes, 32)
    for row, p in enumerate(prefixes):
        assert mask[row].nonzero().flatten().tolist() == reference_allowed(seqs, p), p
        assert trie.allowed(p) == reference_allowed(seqs, p)


def test_every_path_through_the_trie_is_an_item():
    seqs = random_ids(150, 20, seed=2)
    trie = PrefixTrie(seqs, EOS, PAD)
    rng = random.Random(0)
    for _ in range(300):  # random walks over allowed tokens end in a terminal node naming a real item
        node, toks = torch.tensor([trie.ROOT]), []
        while True:
            allowed = trie.allowed_mask(node, 20)[0].nonzero().flatten().tolist()
            tok = rng.choice(allowed)
            toks.append(tok)
            node = trie.advance(node, torch.tensor([tok]))
            if tok == EOS:
                break
        item = int(trie.items_at(node))
        assert item >= 0 and trie.sequence(item) == toks
    assert trie.max_depth == max(len(s) for s in seqs.values()) + 1


def test_id_that_is_prefix_of_another():
    trie = PrefixTrie({"short": [5, 6], "long": [5, 6, 7], "other": [8]}, EOS, PAD)
    assert trie.allowed([5, 6]) == [EOS, 7]
    assert trie.keys[int(trie.items_at(torch.tensor(trie.walk([5, 6, EOS]))))] == "short"
    assert trie.keys[int(trie.items_at(torch.tensor(trie.walk([5, 6, 7, EOS]))))] == "long"
    assert trie.allowed([5, 6, EOS]) == [PAD]  # complete ID: parked
    assert trie.walk([9]) == trie.dead and trie.allowed([9]) == [PAD]
    assert trie.walk([5, 40]) == trie.dead  # token beyond every ID token


def test_batched_advance_matches_walk():
    seqs = random_ids(100, 25, seed=3)
    trie = PrefixTrie(seqs, EOS, PAD)
    starts = [s[:1] for s in seqs.values()][:50]
    nodes = torch.tensor([trie.walk(p) for p in starts])
    toks = torch.tensor([s[1] if len(s) > 1 else EOS for s in list(seqs.values())[:50]])
    expect = [trie.walk(list(p) + [int(t)]) for p, t in zip(starts, toks)]
    assert trie.advance(nodes, toks).tolist() == expect


def test_insert_cold_start_items():
    trie = PrefixTrie({"a": [3, 4]}, EOS, PAD)
    trie.insert({"b": [3, 5], "c": [3, 4, 6]})
    assert trie.keys == ["a", "b", "c"]
    assert trie.allowed([3]) == [4, 5]
    assert trie.allowed([3, 4]) == [EOS, 6]
    assert trie.item_parent.tolist() == [trie.walk([3, 4]), trie.walk([3, 5]), trie.walk([3, 4, 6])]


def test_errors():
    with pytest.raises(ValueError, match="empty"):
        PrefixTrie({"a": []}, EOS, PAD)
    with pytest.raises(ValueError, match="'a' and 'b'"):
        PrefixTrie({"a": [3], "b": [3]}, EOS, PAD)
    trie = PrefixTrie({"a": [3]}, EOS, PAD)
    with pytest.raises(ValueError, match="already"):
        trie.insert({"a": [4]})
    with pytest.raises(ValueError, match="</s>"):
        trie.insert({"z": [4, EOS]})

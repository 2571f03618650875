"""Synthetic data: deterministic, realistic text, learnable (transition counts beat random), leak-free splits."""
from __future__ import annotations

import random
from collections import Counter, defaultdict

import pytest

from idgenrec.cli import main
from genrec.dataset import Dataset
from genrec.splits import leave_one_out, visible_items
from genrec.synth import PLATFORMS, synthesize


def test_deterministic_per_seed_and_platform():
    a, b = synthesize(80, 40, seed=3), synthesize(80, 40, seed=3)
    assert a.users == b.users and {k: v.text for k, v in a.items.items()} == {k: v.text for k, v in b.items.items()}
    assert synthesize(80, 40, seed=4).users != a.users


def test_item_text_has_category_path_brand_noun_attributes_description():
    ds = synthesize(10, 30, seed=0)
    item = next(iter(ds.items.values()))
    for field in ("title: ", "brand: ", "categories: Retail, ", "attributes: color: ", "price: $", "description: "):
        assert field in item.text
    assert item.fields["brand"] in item.fields["title"]
    assert len({it.text for it in ds.items.values()}) == len(ds.items)  # no two items share a text


def test_second_platform_has_its_own_vocabulary():
    retail, outdoor = synthesize(30, 40, 0, "retail"), synthesize(30, 40, 0, "outdoor")
    words = lambda ds: {w for it in ds.items.values() for w in it.fields["title"].split()}  # noqa: E731
    brands = lambda ds: {it.fields["brand"] for it in ds.items.values()}  # noqa: E731
    assert not brands(retail) & brands(outdoor)
    assert len(words(retail) & words(outdoor)) < 0.1 * len(words(outdoor))
    assert not set(retail.items) & set(outdoor.items) and not set(retail.users) & set(outdoor.users)
    with pytest.raises(ValueError, match="unknown platform"):
        synthesize(5, 10, 0, "moon")
    assert set(PLATFORMS) == {"retail", "outdoor"}


def test_sequences_valid_no_repeats_and_min_length():
    ds = synthesize(200, 50, seed=1)
    ds.validate()
    for seq in ds.users.values():
        assert len(seq) >= 5 and len(set(seq)) == len(seq)


def _transition_hr(ds: Dataset, k: int = 10) -> float:
    """HR@k of 'most frequent successor of the last history item' (popularity breaks ties) on the test split."""
    trans: dict[str, Counter] = defaultdict(Counter)
    pop: Counter = Counter()
    for seq in ds.users.values():
        seen = visible_items(seq, "test")
        pop.update(seen)
        for a, b in zip(seen, seen[1:]):
            trans[a][b] += 1
    hits = 0
    samples = leave_one_out(ds, "test")
    for s in samples:
        ranked = sorted(ds.items, key=lambda i: (-trans[s.history[-1]][i], -pop[i], i))
        ranked = [i for i in ranked if i not in s.history][:k]
        hits += s.target in ranked
    return hits / len(samples)


def test_transition_baseline_beats_random_clearly():
    ds = synthesize(600, 200, seed=0)
    hr = _transition_hr(ds)
    rng = random.Random(0)
    samples = leave_one_out(ds, "test")
    keys = list(ds.items)
    rand = sum(s.target in rng.sample(keys, 10) for s in samples) / len(samples)
    assert rand < 0.1  # 10 of 200 items
    assert hr > 3 * rand and hr > 0.3, (hr, rand)


def test_leave_one_out_has_no_leakage(synth_dataset):
    train = leave_one_out(synth_dataset, "train")
    valid = {s.user: s for s in leave_one_out(synth_dataset, "valid")}
    test = {s.user: s for s in leave_one_out(synth_dataset, "test")}
    train_targets: dict[str, list[str]] = defaultdict(list)
    for split in (train, valid.values(), test.values()):
        for s in split:
            assert s.history and s.history[-1] != s.target
            assert s.target not in s.history
            assert len(s.history) <= 20
    for s in train:
        train_targets[s.user].append(s.target)
    for user, seq in synth_dataset.users.items():
        assert test[user].target == seq[-1] and test[user].history == tuple(seq[:-1][-20:])
        assert valid[user].target == seq[-2] and valid[user].history == tuple(seq[:-2][-20:])
        assert seq[-1] not in train_targets[user] and seq[-2] not in train_targets[user]
        assert train_targets[user] == seq[1:-2]
        assert seq[-1] not in visible_items(seq, "test") and seq[-2] not in visible_items(seq, "valid")


def test_history_is_capped_to_the_most_recent_items():
    ds = Dataset(items={}, users={"u": [f"i{n}" for n in range(30)]})
    (s,) = leave_one_out(ds, "test", max_history=5)
    assert s.history == ("i24", "i25", "i26", "i27", "i28") and s.target == "i29"


def test_synth_cli_writes_canonical_form(tmp_path, capsys):
    out = tmp_path / "syn"
    assert main(["data", "synth", "--users", "30", "--items", "20", "--seed", "2", "--platform", "outdoor", "--out", str(out)]) == 0
    ds = Dataset.load(out)
    ref = synthesize(30, 20, 2, "outdoor")
    assert ds.users == ref.users and ds.items["outi00000"].text == ref.items["outi00000"].text
    assert ds.items["outi00000"].fields == ref.items["outi00000"].fields
    assert "users" in capsys.readouterr().out
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary leftovers

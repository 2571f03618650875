"""Popularity and SASRec baselines: exact popularity ranking, SASRec learning a sequential pattern, the benchmark."""
from __future__ import annotations

import json
import random
import sys
from pathlib import Path

from genrec.baselines.popularity import Popularity
from genrec.baselines.sasrec import SASRecConfig, SASRecRecommender
from genrec.dataset import Dataset, Item
from genrec.metrics import hr_ndcg
from genrec.splits import Sample, leave_one_out

ROOT = Path(__file__).resolve().parents[1]


def _dataset(users: dict[str, list[str]], n_items: int) -> Dataset:
    items = {f"i{j}": Item(f"i{j}", f"title: item {j}") for j in range(n_items)}
    return Dataset(items, users, "constructed")


def test_popularity_counts_training_targets_exactly():
    # Training targets (every item after the first, before the last two): u1 -> b c b, u2 -> b d, u3 -> c.
    ds = Dataset(
        {k: Item(k, f"title: {k}") for k in "abcdefxyz"},
        {"u1": list("abcbxy"), "u2": list("abdxy"), "u3": list("acxy")},
        "toy",
    )
    pop = Popularity.fit(leave_one_out(ds, "train"), ds.items)
    assert pop.counts == {"b": 3, "c": 2, "d": 1}
    # Ties among never-seen items break by key; every item is ranked.
    assert pop.order == ["b", "c", "d", "a", "e", "f", "x", "y", "z"]
    assert pop.rank(k=3) == ["b", "c", "d"]
    assert pop.rank(["b", "a", "c"], k=3, exclude_history=True) == ["d", "e", "f"]
    samples = [Sample("u", ("b",), "c"), Sample("v", (), "z")]
    ranked = pop.recommend(samples, k=2)
    assert ranked == [["b", "c"], ["b", "c"]]
    assert hr_ndcg(ranked, [s.target for s in samples], ks=(2,))["HR@2"] == 0.5


def _chain_dataset(n_users: int = 300, n_items: int = 60, seed: int = 0) -> Dataset:
    """Users walk a chain i -> i+1 with 10% random jumps: the next item is predictable from the last one."""
    rng = random.Random(seed)
    users = {}
    for u in range(n_users):
        j, seq = rng.randrange(n_items), []
        for _ in range(rng.randint(5, 12)):
            seq.append(f"i{j}")
            j = rng.randrange(n_items) if rng.random() < 0.1 else (j + 1) % n_items
        users[f"u{u}"] = seq
    return _dataset(users, n_items)


SMALL = dict(hidden=32, layers=1, heads=1, max_len=20, batch_size=64, dropout=0.1, lr=5e-3)


def test_sasrec_learns_sequential_pattern_above_popularity():
    ds = _chain_dataset(n_users=200)
    model = SASRecRecommender(list(ds.items), SASRecConfig(**SMALL))
    valid, test = leave_one_out(ds, "valid", 20), leave_one_out(ds, "test", 20)
    fit = model.fit(ds, valid, hr_ndcg, max_epochs=8, progress=False)
    targets = [s.target for s in test]
    sasrec = hr_ndcg(model.recommend(test, k=10), targets)
    pop = hr_ndcg(Popularity.fit(leave_one_out(ds, "train"), ds.items).recommend(test, k=10), targets)
    assert sasrec["HR@10"] > 0.7 > 3 * pop["HR@10"]
    assert sasrec["NDCG@10"] > 0.5
    assert fit["history"][0]["loss"] > fit["history"][-1]["loss"]
    assert fit["best_valid"] == max(r["valid"]["NDCG@10"] for r in fit["history"])


def test_sasrec_windows_cover_each_training_target_once():
    ds = _chain_dataset(n_users=40)
    model = SASRecRecommender(list(ds.items), SASRecConfig(**{**SMALL, "max_len": 4}))
    windows = model.training_windows(ds)
    assert all(1 <= len(t) <= 4 and len(i) == len(t) for i, t in windows)
    assert sum(len(t) for _, t in windows) == len(leave_one_out(ds, "train"))


def test_sasrec_is_deterministic_and_respects_budget():
    ds = _chain_dataset(n_users=60)
    test = leave_one_out(ds, "test", 20)
    runs = []
    for _ in range(2):
        model = SASRecRecommender(list(ds.items), SASRecConfig(**SMALL))
        fit = model.fit(ds, max_epochs=2, progress=False)
        runs.append(model.recommend(test, k=10))
    assert runs[0] == runs[1]
    assert fit["samples_seen"] == 2 * len(leave_one_out(ds, "train"))
    model = SASRecRecommender(list(ds.items), SASRecConfig(**{**SMALL, "batch_size": 8}))
    fit = model.fit(ds, budget_s=0.0, max_epochs=50, progress=False)
    assert fit["epochs"] == 1 and fit["samples_seen"] <= 8 * 20


def test_sasrec_exclude_history_never_recommends_history():
    ds = _chain_dataset(n_users=60)
    model = SASRecRecommender(list(ds.items), SASRecConfig(**SMALL))
    model.fit(ds, max_epochs=1, progress=False)
    test = leave_one_out(ds, "test", 20)
    for sample, ranked in zip(test, model.recommend(test, k=10, exclude_history=True)):
        assert not set(ranked) & set(sample.history) and len(set(ranked)) == 10


def test_quality_bench_writes_json_with_command(synth_dir, tmp_path):
    sys.path.insert(0, str(ROOT / "bench"))
    import quality

    out = tmp_path / "quality-popularity.json"
    assert quality.main(["--method", "popularity", "--data", str(synth_dir), "--out", str(out)]) == 0
    rec = json.loads(out.read_text())
    assert rec["command"].startswith("python3 bench/quality.py --method popularity")
    assert set(quality.METRICS) <= rec["test"].keys() and rec["samples_seen"] > 0
    out = tmp_path / "quality-sasrec.json"
    assert quality.main(["--method", "sasrec", "--data", str(synth_dir), "--out", str(out), "--budget-min", "0.02",
                         "hidden=16", "layers=1", "heads=1", "max_len=20"]) == 0
    rec = json.loads(out.read_text())
    assert rec["config"]["hidden"] == 16 and rec["train_s"] < 10

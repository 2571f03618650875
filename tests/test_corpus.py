"""Fusion corpus: namespacing, deterministic downsampling, leave-one-out per user, Table 3 stats that add up."""
from __future__ import annotations

import collections
import json
from pathlib import Path

import pytest

from genrec.dataset import Dataset, Item
from genrec.io import DataError
from genrec.splits import leave_one_out
from genrec.synth import synthesize
from pretrain.corpus import build_corpus, downsample_users, format_table, load_corpus_info, merge_datasets
from pretrain.shards import ShardSource, read_manifest


@pytest.fixture(scope="module")
def domains() -> dict[str, Dataset]:
    return {"retail": synthesize(90, 50, 1, "retail"), "outdoor": synthesize(70, 40, 2, "outdoor")}


def test_stats_add_up_and_keys_are_namespaced(domains, tmp_path):
    info = build_corpus(domains, tmp_path / "fusion", max_users=60, seed=7, samples_per_shard=50)
    per = info["datasets"]
    assert per["retail"]["users"] == 60 and per["outdoor"]["users"] == 60
    assert per["retail"]["original"]["users"] == 90
    for col in ("users", "items", "interactions"):
        assert info["overall"][col] == sum(d[col] for d in per.values())
    o = info["overall"]
    assert o["density"] == pytest.approx(o["interactions"] / (o["users"] * o["items"]))

    merged = Dataset.load(tmp_path / "fusion")
    assert merged.stats()["interactions"] == o["interactions"]
    assert all(u.split(":")[0] in domains for u in merged.users)
    for user, seq in merged.users.items():
        name, _, raw = user.partition(":")
        assert seq == [f"{name}:{k}" for k in domains[name].users[raw]]  # whole sequences kept, in order
        assert all(merged.items[k].text == domains[name].items[k.partition(":")[2]].text for k in seq)
    assert load_corpus_info(tmp_path / "fusion") == json.loads(json.dumps(info))
    assert "Fusion" in format_table(info)


def test_shards_hold_exactly_the_leave_one_out_training_samples(domains, tmp_path):
    info = build_corpus(domains, tmp_path / "fusion", max_users=60, seed=7, max_history=5, samples_per_shard=50)
    merged = Dataset.load(tmp_path / "fusion")
    expected = {(s.user, s.history, s.target) for s in leave_one_out(merged, "train", 5)}
    manifest = read_manifest(tmp_path / "fusion" / "shards")
    assert manifest["samples"] == info["train_samples"] == len(expected)
    assert manifest["datasets"] == {
        name: sum(max(0, len(seq) - 3) for u, seq in merged.users.items() if u.startswith(f"{name}:")) for name in domains
    }
    got = list(ShardSource.from_corpus(tmp_path / "fusion", num_workers=0).epoch(0))
    assert {(s.user, s.history, s.target) for s in got} == expected and len(got) == len(expected)
    assert all(s.dataset == s.user.partition(":")[0] for s in got)
    per_user = collections.Counter(s.user for s in got)
    assert all(per_user[u] == len(seq) - 3 for u, seq in merged.users.items() if len(seq) > 3)

def test_downsampling_is_deterministic_and_order_independent(domains):
    users = domains["retail"].users
    a = downsample_users(users, 30, seed=3, name="retail")
    b = downsample_users(dict(reversed(list(users.items()))), 30, seed=3, name="retail")
    assert set(a) == set(b) and len(a) == 30
    assert list(a) == [u for u in users if u in a]  # original order kept
    assert set(downsample_users(users, 30, seed=4, name="retail")) != set(a)
    assert downsample_users(users, None, seed=3, name="retail") == users


def test_build_is_reproducible_byte_for_byte(domains, tmp_path):
    build_corpus(domains, tmp_path / "a", max_users=40, seed=1, samples_per_shard=30)
    build_corpus(domains, tmp_path / "b", max_users=40, seed=1, samples_per_shard=30)
    ma, mb = (read_manifest(tmp_path / x / "shards") for x in "ab")
    assert [s["sha256"] for s in ma["shards"]] == [s["sha256"] for s in mb["shards"]]
    assert (tmp_path / "a" / "user_sequence.txt").read_text() == (tmp_path / "b" / "user_sequence.txt").read_text()


def test_merge_items_shares_keys_and_counts_text_conflicts():
    a = Dataset({"X": Item("X", "title: x"), "Y": Item("Y", "title: y")}, {"u1": ["X", "Y", "X"]}, "a")
    b = Dataset({"X": Item("X", "title: other x"), "Z": Item("Z", "title: z")}, {"u1": ["Z", "X", "Z"]}, "b")
    merged, stats = merge_datasets({"a": a, "b": b}, None, 0, merge_items=True)
    assert set(merged.items) == {"X", "Y", "Z"} and merged.items["X"].text == "title: x"
    assert set(merged.users) == {"a:u1", "b:u1"} and merged.users["b:u1"] == ["Z", "X", "Z"]
    assert stats["merged_item_text_conflicts"] == 1
    separate, _ = merge_datasets({"a": a, "b": b}, None, 0)
    assert set(separate.items) == {"a:X", "a:Y", "b:X", "b:Z"}


def test_bad_dataset_name_is_a_data_error(domains, tmp_path):
    with pytest.raises(DataError, match="dataset name"):
        build_corpus({"bad name": domains["retail"]}, tmp_path / "x")
    assert not (tmp_path / "x").exists()


DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


@pytest.mark.realdata
@pytest.mark.skipif(not (DATASETS / "derived" / "Sports").exists(), reason="../shared/datasets not present")
def test_real_sports_phones_fusion(tmp_path):
    sources = {n.lower(): Dataset.load(DATASETS / "derived" / n, n.lower()) for n in ("Sports", "Phones")}
    info = build_corpus(sources, tmp_path / "fusion", max_users=300, seed=0)
    assert info["datasets"]["sports"]["original"]["users"] == 35598  # the paper's Sports (Table 3)
    assert info["overall"]["users"] == 600
    assert info["overall"]["interactions"] == sum(d["interactions"] for d in info["datasets"].values())
    assert read_manifest(tmp_path / "fusion" / "shards")["datasets"].keys() == {"sports", "phones"}

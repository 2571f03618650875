"""Webdataset shards: exact round trip across ranks x workers, IdTable-independent shards, resume, corrupt shards."""
from __future__ import annotations

import collections
import json
import logging
import random

import pytest

from genrec.dataset import Item
from genrec.io import DataError
from genrec.prompts import PromptBuilder
from genrec.splits import Sample
from idgen.idtable import IdTable
from pretrain.batching import Renderer, RenderTransform
from pretrain.shards import (
    ShardSource,
    _interleave,
    next_worker,
    plan_epoch,
    read_manifest,
    read_shard,
    round_robin_skips,
    write_shards,
)

N_ITEMS = 30
pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")


def make_samples(n: int, seed: int = 0) -> list[Sample]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        hist = tuple(f"d:i{rng.randrange(N_ITEMS)}" for _ in range(rng.randint(1, 6)))
        out.append(Sample(f"d:u{i}", hist, f"d:i{rng.randrange(N_ITEMS)}", "d"))
    return out


ITEMS = {f"d:i{i}": Item(f"d:i{i}", f"title: thing {i}") for i in range(N_ITEMS)}


@pytest.fixture()
def shard_dir(tmp_path):
    samples = make_samples(96)
    write_shards(samples, tmp_path / "shards", samples_per_shard=12, shard_multiple=4)
    return tmp_path / "shards", samples


def key(s: Sample) -> tuple:
    return (s.user, s.history, s.target, s.dataset)


def test_manifest_counts_and_hashes(shard_dir):
    folder, samples = shard_dir
    m = read_manifest(folder)
    assert m["samples"] == 96 and len(m["shards"]) == 8 and {s["samples"] for s in m["shards"]} == {12}
    assert m["datasets"] == {"d": 96}
    decoded = [s for sh in m["shards"] for _, s in read_shard(folder / sh["name"], sh)]
    assert decoded == samples  # written in the given order, exact round trip
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", *(f"shard-{i:06d}.tar" for i in range(8))]


def test_every_sample_exactly_once_per_epoch_across_2_ranks_x_2_workers(shard_dir):
    folder, samples = shard_dir
    src = ShardSource(folder, ITEMS, num_workers=2, shuffle_buffer=20)
    orders = {}
    for epoch in (0, 1):
        per_rank = [list(src.epoch(epoch, rank, 2, seed=5)) for rank in range(2)]
        assert [len(r) for r in per_rank] == [48, 48] == [src.epoch_length(epoch, 2, 5)] * 2
        seen = collections.Counter(key(s) for r in per_rank for s in r)
        assert seen == collections.Counter(key(s) for s in samples)
        orders[epoch] = [key(s) for r in per_rank for s in r]
    assert orders[0] != orders[1]  # a new shard permutation and shuffle per epoch
    again = ShardSource(folder, ITEMS, num_workers=2, shuffle_buffer=20)
    assert [key(s) for r in range(2) for s in again.epoch(1, r, 2, seed=5)] == orders[1]  # deterministic
    in_process = ShardSource(folder, ITEMS, num_workers=0, shuffle_buffer=20)
    assert sorted(key(s) for r in range(2) for s in in_process.epoch(1, r, 2, seed=5)) == sorted(orders[1])


def test_unbalanced_ranks_are_padded_to_the_same_length(tmp_path):
    samples = make_samples(50)
    write_shards(samples, tmp_path / "s", samples_per_shard=10, shard_multiple=1)  # 5 shards over 2 ranks
    src = ShardSource(tmp_path / "s", ITEMS, num_workers=0, shuffle_buffer=8)
    per_rank = [list(src.epoch(0, rank, 2, seed=1)) for rank in range(2)]
    assert len(per_rank[0]) == len(per_rank[1]) == 30
    assert {key(s) for r in per_rank for s in r} == {key(s) for s in samples}  # everything at least once
    with pytest.raises(DataError, match="cannot feed 6 ranks"):
        list(src.epoch(0, 0, 6, seed=1))


def test_changing_the_idtable_changes_prompts_not_shards(shard_dir, tokenizer):
    folder, _ = shard_dir
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    builder = PromptBuilder(tokenizer)
    src = ShardSource(folder, ITEMS, num_workers=2, shuffle_buffer=20)

    def render(table: IdTable):
        ids = table.token_ids(tokenizer)
        return lambda s: tuple(builder.build([ids[k] for k in s.history]).input_ids)

    t1 = IdTable({k: f"thing {k.split('i')[-1]}" for k in ITEMS}, version=1)
    t2 = IdTable({k: f"other {k.split('i')[-1]} piece" for k in ITEMS}, version=2)
    p1 = list(src.epoch(0, 0, 1, seed=3, transform=render(t1)))
    p2 = list(src.epoch(0, 0, 1, seed=3, transform=render(t2)))
    plain = list(src.epoch(0, 0, 1, seed=3))
    assert len(p1) == len(p2) == 96 and all(a != b for a, b in zip(p1, p2))
    assert p1 == [render(t1)(s) for s in plain]  # same samples, same order, rendered in the workers
    # the trainer's transform (template chosen by a hash of the sample) gives the same Examples in the workers
    transform = RenderTransform(Renderer(builder, t1.token_ids(tokenizer)), seed=3, epoch=0)
    assert list(src.epoch(0, 0, 1, seed=3, transform=transform)) == [transform(s) for s in plain]
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


@pytest.mark.parametrize("workers,world,stop", [(2, 2, 0), (2, 2, 31), (2, 2, 48), (0, 2, 40), (3, 1, 79)])
def test_resume_continues_from_the_stored_position(shard_dir, workers, world, stop):
    """(3, 1, 79): 8 shards over 3 workers, so the workers' streams differ in length."""
    folder, _ = shard_dir
    rank = world - 1
    full = [key(s) for s in ShardSource(folder, ITEMS, num_workers=workers, shuffle_buffer=16).epoch(2, rank, world, seed=9)]
    first = ShardSource(folder, ITEMS, num_workers=workers, shuffle_buffer=16)
    it = first.epoch(2, rank, world, seed=9)
    taken = [key(next(it)) for _ in range(stop)]
    state = json.loads(json.dumps(first.state()))  # what a checkpoint stores
    assert state["epoch"] == 2 and state["consumed"] == stop
    assert stop == 0 or state["shard"].startswith("shard-")  # the last consumed shard/sample
    del it
    second = ShardSource(folder, ITEMS, num_workers=workers, shuffle_buffer=16)
    second.restore(state)
    assert second.state()["consumed"] == stop
    rest = [key(s) for s in second.epoch(2, rank, world, seed=9)]
    assert taken + rest == full
    assert second.state()["consumed"] == len(full)
    assert len(list(second.epoch(3, rank, world, seed=9))) == len(full)  # the next epoch starts from its beginning


def test_resume_inside_the_padding(tmp_path):
    write_shards(make_samples(50), tmp_path / "s", samples_per_shard=10, shard_multiple=1)
    src = ShardSource(tmp_path / "s", ITEMS, num_workers=2, shuffle_buffer=8)
    plan = plan_epoch(src.manifest["shards"], 0, 1, 2, 2, 4)
    short = 1 if plan.rank_samples < plan.length else 0
    full = [key(s) for s in src.epoch(0, short, 2, seed=4)]
    resumed = ShardSource(tmp_path / "s", ITEMS, num_workers=2, shuffle_buffer=8)
    resumed.restore({"epoch": 0, "consumed": 25, "world": 2, "workers": 2, "seed": 4})
    assert [key(s) for s in resumed.epoch(0, short, 2, seed=4)] == full[25:]


def test_round_robin_skips_match_the_interleaved_order():
    rng = random.Random(0)
    for _ in range(200):
        lengths = [rng.randrange(0, 7) for _ in range(rng.randint(1, 4))]
        order = list(_interleave([iter([w] * n) for w, n in enumerate(lengths)]))
        c = rng.randint(0, len(order))
        skips = round_robin_skips(lengths, c)
        assert skips == [order[:c].count(w) for w in range(len(lengths))]
        k = next_worker(lengths, skips)
        rest = [(w + k) % len(lengths) for w in _interleave([iter([w] * (lengths[(w + k) % len(lengths)] - skips[(w + k) % len(lengths)])) for w in range(len(lengths))])]
        assert rest == order[c:]


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_corrupted_shard_fails_naming_it(shard_dir, workers, damage):
    folder, _ = shard_dir
    bad = folder / "shard-000003.tar"
    data = bytearray(bad.read_bytes())
    if damage == "flip":
        data[700] ^= 0xFF
    else:
        del data[len(data) // 2:]
    bad.write_bytes(bytes(data))
    src = ShardSource(folder, ITEMS, num_workers=workers, shuffle_buffer=10, timeout=60)
    with pytest.raises(DataError, match="shard-000003.tar") as exc:
        for rank in range(2):
            list(src.epoch(0, rank, 2, seed=0))
    assert "corrupted" in str(exc.value) or "truncated" in str(exc.value)


def test_corrupted_shard_without_manifest_check_still_names_it(shard_dir):
    folder, _ = shard_dir
    bad = folder / "shard-000001.tar"
    bad.write_bytes(bad.read_bytes()[:900])
    with pytest.raises(DataError, match="shard-000001.tar: corrupted shard"):
        read_shard(bad)


def test_skip_corrupt_warns_and_keeps_the_epoch_length(shard_dir, caplog):
    folder, samples = shard_dir
    (folder / "shard-000005.tar").write_bytes(b"not a tar file")
    src = ShardSource(folder, ITEMS, num_workers=0, shuffle_buffer=10, skip_corrupt=True)
    with caplog.at_level(logging.WARNING, logger="pretrain.shards"):
        out = [list(src.epoch(0, rank, 2, seed=0)) for rank in range(2)]
    assert [len(r) for r in out] == [48, 48]
    assert "shard-000005.tar" in caplog.text
    lost = {key(s) for s in samples[60:72]}  # shard 5 holds samples 60..71
    assert not lost & {key(s) for r in out for s in r}


def test_folder_without_manifest_is_a_data_error(tmp_path):
    (tmp_path / "s").mkdir()
    with pytest.raises(DataError, match="no shard manifest"):
        ShardSource(tmp_path / "s", ITEMS)

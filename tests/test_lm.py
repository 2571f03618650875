"""Language pretraining (``pretrain.lm``): T5's noise mask and span corruption, text shards, the ``lm`` stage of the
trainer (loss, exact resume), the LM folder as the one init path, and ``idgenrec pretrain lm`` end to end."""
from __future__ import annotations

import collections
import json
import random
import signal

import pytest
import torch

from genrec import stop
from finetune.cli import apply_init
from idgenrec.cli import main
from genrec.config import load_config
from genrec.dataset import Dataset
from genrec.io import DataError
from genrec.modeling import load_t5, model_from_config
from genrec.synth import synthesize
from pretrain.lm import (
    LMConfig,
    SpanCorruption,
    TextSource,
    apply_init_lm,
    build_text_corpus,
    corruption,
    random_segmentation,
    random_spans_noise_mask,
    span_corrupt,
    train_lm,
)
from pretrain.shards import TextRecord, read_manifest
from tokenization.spm import load_tokenizer, sentinel_ids

pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")
TINY = "{d_model: 32, d_ff: 64, d_kv: 8, num_heads: 4, num_layers: 1, num_decoder_layers: 1, dropout_rate: 0.1}"


def spans(mask: list[bool]) -> list[tuple[int, int]]:
    out, start = [], None
    for i, m in enumerate([*mask, False]):
        if m and start is None:
            start = i
        elif not m and start is not None:
            out.append((start, i))
            start = None
    return out


@pytest.mark.parametrize("length", [1, 2, 3, 7, 20, 57, 200, 512])
def test_noise_mask_follows_t5(length):
    rng = random.Random(length)
    for _ in range(50):
        mask = random_spans_noise_mask(length, 0.15, 3.0, rng)
        assert len(mask) == length
        padded = max(length, 2)
        noise = min(max(round(padded * 0.15), 1), padded - 1)
        if length >= 2:
            assert sum(mask) == noise
            assert len(spans(mask)) == max(round(noise / 3.0), 1)
        assert not mask[0]  # T5 interleaves kept-first: the text starts with a kept span


def test_noise_mask_statistics_over_many_texts():
    rng = random.Random(0)
    masks = [random_spans_noise_mask(rng.randint(20, 300), 0.15, 3.0, rng) for _ in range(2000)]
    density = sum(map(sum, masks)) / sum(map(len, masks))
    lengths = [e - s for m in masks for s, e in spans(m)]
    assert abs(density - 0.15) < 0.005
    assert abs(sum(lengths) / len(lengths) - 3.0) < 0.1
    assert collections.Counter(lengths)[1] > 0 and max(lengths) > 6  # random segmentation, not fixed spans


def test_random_segmentation_is_a_partition():
    rng = random.Random(1)
    for items, segments in [(1, 1), (5, 5), (10, 3), (40, 7)]:
        lengths = random_segmentation(items, segments, rng)
        assert len(lengths) == segments and sum(lengths) == items and min(lengths) >= 1
    with pytest.raises(ValueError, match="non-empty"):
        random_segmentation(3, 4, rng)


def reconstruct(inputs: list[int], targets: list[int], sentinels: list[int], eos: int) -> list[int]:
    spans_of, current = {}, None
    for t in targets[:-1]:
        if t in sentinels:
            current = t
            spans_of[t] = []
        else:
            spans_of[current].append(t)
    out = []
    for t in inputs[:-1]:
        out += spans_of[t] if t in sentinels else [t]
    return out


def test_span_corruption_sentinels_in_order_and_reconstructs():
    sentinels, eos = [99, 98, 97, 96, 95, 94, 93, 92], 1
    rng = random.Random(3)
    for _ in range(200):
        tokens = [rng.randrange(2, 90) for _ in range(rng.randint(1, 60))]
        mask = random_spans_noise_mask(len(tokens), 0.15, 3.0, rng)
        inputs, targets = span_corrupt(tokens, mask, sentinels, eos)
        n = len(spans(mask))
        assert [t for t in inputs if t in sentinels] == sentinels[:n] == [t for t in targets if t in sentinels]
        assert inputs[-1] == targets[-1] == eos
        assert len(inputs) + len(targets) == len(tokens) + 2 * n + 2
        assert reconstruct(inputs, targets, sentinels, eos) == tokens
    with pytest.raises(ValueError, match="sentinels"):
        span_corrupt(list(range(2, 12)), [False, True] * 5, sentinels[:2], eos)


@pytest.fixture(scope="module")
def lm_tokenizer(tmp_path_factory, synth_dataset):
    from genrec.prompts import template_words
    from tokenization.spm import train_tokenizer

    return train_tokenizer([it.text for it in synth_dataset.items.values()], tmp_path_factory.mktemp("lmtok") / "t",
                           600, extra_texts=template_words(), extra_ids=100)


def test_corruption_is_deterministic_per_seed_and_epoch(lm_tokenizer, synth_dataset):
    records = [TextRecord(f"d:{k}", it.text, "d") for k, it in synth_dataset.items.items()]
    a, b = corruption(lm_tokenizer, None, 0, 0), corruption(lm_tokenizer, None, 0, 0)
    assert [a(r) for r in records] == [b(r) for r in records]
    other_epoch, other_seed = corruption(lm_tokenizer, None, 0, 1), corruption(lm_tokenizer, None, 1, 0)
    assert sum(a(r) != other_epoch(r) for r in records) > len(records) // 2  # a fresh mask each epoch
    assert sum(a(r) != other_seed(r) for r in records) > len(records) // 2
    sentinels = sentinel_ids(lm_tokenizer)
    for r in records:
        ex = a(r)
        original = lm_tokenizer(r.text, add_special_tokens=False)["input_ids"]
        assert reconstruct(ex.input_ids, ex.labels, sentinels, lm_tokenizer.eos_token_id) == original
        assert ex.labels[0] == sentinels[0] == len(lm_tokenizer) - 1  # <extra_id_0>, T5's last id


def test_corruption_needs_sentinels(tokenizer):
    with pytest.raises(ValueError, match="extra_ids"):
        corruption(tokenizer, None, 0, 0)  # the shared test tokenizer has none
    with pytest.raises(ValueError, match="unknown config key 'lm.density'; did you mean lm.noise_density"):
        LMConfig.from_dict({"density": 0.2})


def test_text_corpus_shards_hold_every_item_once(tmp_path, synth_dataset, lm_tokenizer):
    other = synthesize(40, 30, 5, "outdoor")
    info = build_text_corpus({"shop": synth_dataset, "trail": other}, tmp_path / "text",
                             LMConfig(valid_items=5, samples_per_shard=16), seed=0)
    assert info["valid_items"] == 5 and info["train_items"] == len(synth_dataset.items) + len(other.items) - 5
    assert read_manifest(tmp_path / "text" / "shards")["datasets"].keys() == {"shop", "trail"}
    src = TextSource(tmp_path / "text", num_workers=2, shuffle_buffer=8)
    seen = list(src.epoch(0, 0, 1, seed=0))
    keys = {r.key for r in seen} | {r.key for r in src.valid}
    assert len(seen) == info["train_items"] and not {r.key for r in seen} & {r.key for r in src.valid}
    assert keys == {f"shop:{k}" for k in synth_dataset.items} | {f"trail:{k}" for k in other.items}
    assert next(r for r in seen if r.key.startswith("shop:")).text in {it.text for it in synth_dataset.items.values()}
    corrupt = corruption(lm_tokenizer, None, 0, 4)
    in_workers = list(src.epoch(4, 0, 1, seed=0, transform=corrupt))
    assert in_workers == [corrupt(r) for r in src.epoch(4, 0, 1, seed=0)]  # the same masks in DataLoader workers


def lm_cfg(tmp_path, *extra: str) -> dict:
    return load_config("lm", [f"model.recommender={TINY}", "tokenizer.vocab_size=600", "train.stage_seconds=null",
                              "train.threads=1", "train.max_batch=16", "train.checkpoint_every=0", "train.log_every=1",
                              "data.workers=0", "lm.valid_items=6", "lm.samples_per_shard=16",
                              "optim.recommender={lr: 3.0e-3, warmup_steps: 5}", *extra])


def read_losses(run) -> list[float]:
    return [json.loads(ln)["loss"] for ln in (run / "losses.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory, synth_dataset):
    out = tmp_path_factory.mktemp("lm") / "lm"
    summary = train_lm({"shop": synth_dataset}, out, lm_cfg(out, "train.lm_epochs=12"))
    return out, summary


def test_lm_stage_trains_and_writes_the_lm_folder(lm_run):
    out, summary = lm_run
    losses = read_losses(out)
    assert len(losses) == summary["global_steps"] > 30
    assert sum(losses[-8:]) / 8 < sum(losses[:8]) / 8 - 0.5  # the span-corruption loss decreases
    (stage,) = summary["stages"]
    assert stage["stage"] == "lm" and 0 < stage["valid"]["loss"] < losses[0] and stage["valid"]["tokens"] > 0
    tok = load_tokenizer(out / "model")
    assert sentinel_ids(tok)[:3] == [len(tok) - 1, len(tok) - 2, len(tok) - 3]
    assert load_t5(out / "model").config.vocab_size == len(tok)
    assert not (out / "checkpoints" / "latest" / "idtable.tsv").exists()


def test_lm_stage_resumes_exactly(tmp_path, synth_dataset, monkeypatch):
    from pretrain import engine

    cfg = ["train.lm_epochs=3", "train.checkpoint_every=4"]
    full = tmp_path / "full"
    train_lm({"shop": synth_dataset}, full, lm_cfg(full, *cfg))
    expected = read_losses(full)

    run = tmp_path / "run"
    step = engine.Trainer._rec_step

    def stop_after_10(self, batch):  # a signal arrives during step 10: the trainer checkpoints after it
        if self.global_step == 9:
            stop._flag(signal.SIGTERM, None)
        return step(self, batch)

    monkeypatch.setattr(engine.Trainer, "_rec_step", stop_after_10)
    with pytest.raises(stop.Stop):
        train_lm({"shop": synth_dataset}, run, lm_cfg(run, *cfg))
    stop.reset()
    monkeypatch.setattr(engine.Trainer, "_rec_step", step)
    assert len(read_losses(run)) == 10
    train_lm({"shop": synth_dataset}, run, lm_cfg(run, *cfg), resume=True)
    assert read_losses(run) == expected
    assert load_t5(run / "model").state_dict().keys() == load_t5(full / "model").state_dict().keys()
    for k, v in load_t5(run / "model").state_dict().items():
        assert torch.equal(v, load_t5(full / "model").state_dict()[k]), k


def test_init_lm_starts_both_models_and_the_warm_start_from_the_lm(lm_run, tmp_path):
    out, _ = lm_run
    cfg = load_config("standard", [f"init_lm={out}"])  # the run folder; its model/ is the LM
    apply_init_lm(cfg)
    folder = str(out / "model")
    assert cfg["tokenizer"]["path"] == folder and cfg["warmstart"]["init"] == folder
    lm = load_t5(folder).state_dict()
    for part in ("recommender", "generator"):
        model = model_from_config(cfg["model"][part], 0).state_dict()
        assert model.keys() == lm.keys() and all(torch.equal(model[k], lm[k]) for k in lm)
    # the recipe's dropout (a training choice) survives the swap to {init: ...}; its sizes do not
    cfg = load_config("standard-cpu", [f"init_lm={out}"])
    apply_init_lm(cfg)
    assert cfg["model"]["recommender"] == {"init": folder, "dropout_rate": 0.0}
    assert cfg["model"]["generator"] == {"init": folder}
    assert model_from_config(cfg["model"]["recommender"], 0).config.dropout_rate == 0.0
    for part in ("recommender", "generator", "tokenizer"):  # an export folder (init: EXPORT) takes the same rule
        (tmp_path / part).mkdir()
        (tmp_path / part / ("tokenizer_config.json" if part == "tokenizer" else "config.json")).write_text("{}")
    export = {"init": str(tmp_path),
              "model": {"recommender": {"d_model": 64, "dropout_rate": 0.0}, "generator": {"d_model": 64}}}
    apply_init(export)
    assert export["model"] == {"recommender": {"init": str(tmp_path / "recommender"), "dropout_rate": 0.0},
                               "generator": {"init": str(tmp_path / "generator")}}
    with pytest.raises(ValueError, match="not both"):
        apply_init_lm({"init": "export", "init_lm": folder})
    with pytest.raises(DataError, match="not a language-model folder"):
        apply_init_lm({"init_lm": str(out / "text")})


def test_pretrain_lm_command(tmp_path, synth_dir, capsys):
    other = tmp_path / "trail"
    synthesize(40, 30, 5, "outdoor").save(other)
    out = tmp_path / "lm"
    assert main(["pretrain", "lm", "--dataset", f"shop={synth_dir}", "--dataset", f"trail={other}", "--out", str(out),
                 f"model.recommender={TINY}", "tokenizer.vocab_size=600", "train.stage_seconds=3", "train.threads=1",
                 "data.workers=1", "lm.samples_per_shard=32", "train.max_batch=16"]) == 0
    assert "held-out loss" in capsys.readouterr().out
    assert json.loads((out / "text" / "text.json").read_text())["items"] == {
        "shop": len(Dataset.load(synth_dir).items), "trail": 30}
    assert len(sentinel_ids(load_tokenizer(out / "model"))) == 100
    with pytest.raises(SystemExit):  # unknown options stay errors (only trailing key=value words are overrides)
        main(["pretrain", "lm", "--dataset", f"shop={synth_dir}", "--out", str(tmp_path / "x"), "--bogus"])
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="at least one --dataset"):
        main(["pretrain", "lm", "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match="train.order"):
        main(["pretrain", "lm", "--dataset", f"shop={synth_dir}", "--out", str(tmp_path / "y"), "--config", "standard"])


@pytest.mark.slow
def test_fusion_recipe_runs_the_lm_stage_first(tmp_path, synth_dir):
    """``pretrain.lm.minutes`` > 0: RUN/lm is trained on the corpus text, then the tokenizer, the recommender and
    the tag warm-start of the generator start from it."""
    import yaml

    corpus, run = tmp_path / "corpus", tmp_path / "run"
    assert main(["pretrain", "build-corpus", "--dataset", f"shop={synth_dir}", "--samples-per-shard", "64",
                 "--out", str(corpus)]) == 0
    assert main(["pretrain", "--corpus", str(corpus), "--out", str(run), f"model.recommender={TINY}",
                 "tokenizer.vocab_size=600", "pretrain.lm.minutes=0.05",
                 "pretrain.lm.overrides=[data.workers=0, lm.samples_per_shard=16, train.max_batch=16]",
                 "pretrain.valid_users=16", "warmstart.steps=5", "train.rounds=1", "train.threads=1",
                 "train.max_batch=32", "train.max_steps_per_epoch=3", "data.workers=0", "prompt.max_length=128", "idgen.max_text_tokens=48",
                 "eval.num_beams=10"]) == 0
    lm = run / "lm" / "model"
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["init_lm"] == str(lm) and cfg["tokenizer"]["path"] == str(lm)
    assert cfg["model"]["recommender"] == {"init": str(lm), "dropout_rate": 0.1}  # the recipe's dropout is kept
    assert cfg["warmstart"]["init"] == str(lm)
    assert cfg["model"]["generator"] == {"init": str(run / "warmstart")}
    assert load_t5(run / "warmstart").config.d_model == load_t5(lm).config.d_model == 32
    assert len(sentinel_ids(load_tokenizer(run / "export" / "tokenizer"))) == 100


def test_a_generator_started_from_the_lm_never_writes_sentinels(lm_run, synth_dataset):
    """The LM predicts ``<extra_id_0>`` first; diverse beam search bans sentinels, so IDs are words."""
    from idgen.algorithm import propose, sentinels
    from idgen.config import IdGenConfig
    from idgen.dbs import diverse_beam_search
    from idgen.generator import Generator

    out, _ = lm_run
    tok = load_tokenizer(out / "model")
    gen = Generator(load_t5(out / "model"), tok, 48)
    items = {it.key: it.text for it in list(synth_dataset.items.values())[:4]}
    gen.encode(items)
    banned = set(sentinels(tok))
    assert banned == set(sentinel_ids(tok))
    args = (gen.model, gen.batch(list(items)), torch.ones(4), torch.ones(4, dtype=torch.long), torch.full((4,), 6))
    assert any(t in banned for item in diverse_beam_search(*args) for seq in item for t in seq)  # unbanned: it would
    assert not any(t in banned for item in diverse_beam_search(*args, banned=banned) for seq in item for t in seq)
    candidates = propose(gen, items, list(items), [0] * 4, IdGenConfig(max_text_tokens=48))
    assert all(c.strip() for cands in candidates.values() for c in cands)


@pytest.mark.slow
def test_two_process_lm_stage(tmp_path, synth_dir):
    """``idgenrec pretrain lm`` under torchrun: each rank streams its shards, the held-out loss is gathered."""
    import os
    import subprocess
    import sys

    out = tmp_path / "lm"
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "idgenrec.cli",
           "pretrain", "lm", "--dataset", f"shop={synth_dir}", "--out", str(out), f"model.recommender={TINY}",
           "tokenizer.vocab_size=600", "train.stage_seconds=null", "train.lm_epochs=3", "train.threads=1",
           "train.max_batch=8", "train.checkpoint_every=2", "data.workers=1", "lm.samples_per_shard=8"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    (stage,) = summary["stages"]
    assert summary["world_size"] == 2 and stage["valid"]["tokens"] > 0
    assert stage["samples"] >= 3 * 54  # every training item once per epoch, over both ranks (54 of 60; 6 held out)
    assert load_t5(out / "model").config.vocab_size == len(load_tokenizer(out / "model"))

"""Trainer building blocks: schedule, sources, token-budget batching, resumable epochs, DeepSpeed config resolution."""
from __future__ import annotations

import random

import pytest
import torch

from genrec.io import DataError
from genrec.prompts import PromptBuilder
from idgen.idtable import IdTable
from pretrain.batching import (CopyRelabel, EpochBatches, Example, ItemTextBudget, Renderer, RenderTransform, collate,
                               collate_generator, token_budget_batches)
from pretrain.dsconfig import resolve
from pretrain.engine import GEN, REC, schedule
from pretrain.sources import LeaveOneOutSource


def test_budget_is_shared_by_epochs_after_setting_aside_the_work_after_each_stage(tmp_path):
    """train.budget_minutes: stage i trains left x e_i / sum(e); left sets aside validation + export after every stage
    still to run and ID regeneration after a generator stage (the longest of each recorded so far)."""
    import time

    from pretrain.engine import Trainer

    plan = [(0, REC), (1, GEN), (1, REC)]
    cfg = {"train": {"budget_minutes": 10, "rec_epochs": 3, "id_epochs": 1}}
    trainer = Trainer(cfg, object(), tmp_path, tokenizer=object(), started_at=time.time() - 60)
    trainer.state = {"phases": [["ids v0", 120.0], ["valid 0 (recommender, round 0)", 30.0], ["export", 1.0]]}
    assert trainer._stage_cap(plan, 0) == pytest.approx((540 - 31 - 151 - 31) * 3 / 7, abs=1.0)
    cfg["train"]["stage_seconds"] = {"recommender": 50}
    assert trainer._stage_cap(plan, 0) == 50
    trainer.started_at = time.time() - 450  # 150 s left: new IDs (151 s) would not fit, the generator gets nothing
    assert trainer._stage_cap(plan, 1) == 0.0
    assert Trainer({"train": {}}, object(), tmp_path, tokenizer=object())._stage_cap(plan, 0) is None


def test_schedule_order_skip_and_fixed_ids():
    assert schedule({"train": {"rounds": 2}}) == [(0, REC), (1, GEN), (1, REC)]
    assert schedule({"train": {"rounds": 2, "skip_first_generator": False}}) == [(0, GEN), (0, REC), (1, GEN), (1, REC)]
    assert schedule({"train": {"rounds": 2, "order": [REC, GEN], "skip_first_generator": False}}) == [(0, REC), (0, GEN), (1, REC), (1, GEN)]
    assert schedule({"train": {"rounds": 2}, "ids": {"regenerate": False}}) == [(0, REC), (1, REC)]
    with pytest.raises(ValueError):
        schedule({"train": {"order": ["recommender", "critic"]}})


def test_source_shards_cover_each_sample_once_and_restore(synth_dataset):
    src = LeaveOneOutSource(synth_dataset)
    per_rank = [list(src.epoch(3, r, 2, seed=7)) for r in range(2)]
    assert sorted(map(repr, per_rank[0] + per_rank[1])) == sorted(map(repr, src.samples))
    assert per_rank[0] == list(src.epoch(3, 0, 2, seed=7))  # deterministic
    assert per_rank[0] != list(src.epoch(4, 0, 2, seed=7))  # reshuffled per epoch
    it = src.epoch(3, 0, 2, seed=7)
    head = [next(it) for _ in range(5)]
    state = src.state()
    src.restore(state)
    assert head + list(src.epoch(3, 0, 2, seed=7)) == per_rank[0]


def test_source_caps_prefixes_per_user(synth_dataset):
    src = LeaveOneOutSource(synth_dataset, prefixes_per_user=2)
    seen = list(src.epoch(0, 0, 1, seed=0))
    counts: dict[str, int] = {}
    for s in seen:
        counts[s.user] = counts.get(s.user, 0) + 1
    assert max(counts.values()) <= 2 and len(counts) == len({s.user for s in src.samples})


@pytest.fixture
def renderer(synth_dataset, tokenizer):
    table = IdTable({k: f"{it.text.split()[1]} {i}" for i, (k, it) in enumerate(synth_dataset.items.items())})
    return Renderer(PromptBuilder(tokenizer, max_length=96), table.token_ids(tokenizer))


def test_token_budget_batches_respect_budget_and_keep_every_example(synth_dataset, renderer):
    src = LeaveOneOutSource(synth_dataset)
    examples = [renderer(s, i % 10) for i, s in enumerate(src.samples)]
    batches = token_budget_batches(examples, max_tokens=1500, max_batch=16, rng=random.Random(0))
    assert sum(len(b) for b in batches) == len(examples)
    for b in batches:
        assert len(b) <= 16
        assert len(b) == 1 or len(b) * max(len(e.input_ids) + len(e.labels) for e in b) <= 1500
    t = collate(batches[0])
    assert t["input_ids"].shape == t["attention_mask"].shape
    assert (t["labels"] == -100).sum() == sum(t["labels"].shape[1] - len(e.labels) for e in batches[0])
    # length bucketing: padding waste is small compared to one batch of everything
    padded = sum(len(b) * max(len(e.input_ids) for e in b) for b in batches)
    assert padded < 1.15 * sum(len(e.input_ids) for e in examples)


def test_generator_collate_spans_point_at_item_tokens(synth_dataset, renderer, tokenizer):
    src = LeaveOneOutSource(synth_dataset)
    batch = [renderer(s) for s in src.samples[:6]]
    text = {k: tokenizer(it.text)["input_ids"] for k, it in synth_dataset.items.items()}
    t = collate_generator(batch, renderer.id_tokens, text)
    sp = t["spans"]
    for o in range(len(sp.item)):
        row, start, n, u = int(sp.batch[o]), int(sp.start[o]), int(sp.length[o]), int(sp.item[o])
        assert t["input_ids"][row, start:start + n].tolist() == t["id_ids"][u, :n].tolist()
        assert int(t["id_mask"][u].sum()) == n


def test_generator_batches_bound_the_item_text_of_the_soft_id_pass(synth_dataset, renderer, tokenizer):
    """The generator stage's batches keep distinct history items * longest text (collate_generator's text_ids)
    within the text budget, which the prompt budget alone leaves unbounded; every example is still batched once."""
    src = LeaveOneOutSource(synth_dataset)
    examples = [renderer(s) for s in src.samples]
    text = {k: tokenizer(it.text)["input_ids"] for k, it in synth_dataset.items.items()}
    budget = ItemTextBudget({k: len(v) for k, v in text.items()}, max_tokens=600)
    plain = token_budget_batches(examples, max_tokens=100_000, max_batch=64, rng=random.Random(0))
    assert max(collate_generator(b, renderer.id_tokens, text)["text_ids"].numel() for b in plain) > 600
    bounded = token_budget_batches(examples, max_tokens=100_000, max_batch=64, rng=random.Random(0), text_budget=budget)
    assert sorted(map(id, (e for b in bounded for e in b))) == sorted(map(id, examples))
    for b in bounded:
        assert len(b) == 1 or collate_generator(b, renderer.id_tokens, text)["text_ids"].numel() <= 600
    assert len(bounded) > len(plain)
    counted = EpochBatches(src, renderer, epoch=0, rank=0, world=1, seed=0, chunk_size=10_000, max_tokens=100_000,
                           max_batch=64, text_budget=budget)
    epoch = list(counted)  # the trainer's path: rendered with the training templates, counted for the progress bar
    assert counted.count() == len(epoch)
    assert all(len(b) == 1 or collate_generator(b, renderer.id_tokens, text)["text_ids"].numel() <= 600 for b in epoch)


def test_render_transform_depends_only_on_the_sample(synth_dataset, renderer):
    samples = LeaveOneOutSource(synth_dataset).samples[:300]
    transform = RenderTransform(renderer, seed=3, epoch=1)
    forward = [transform(s) for s in samples]
    assert forward == [RenderTransform(renderer, 3, 1)(s) for s in reversed(samples)][::-1]  # order-free
    templates = [transform.template(s) for s in samples]
    assert len(set(templates)) == renderer.n_templates  # every template is used
    assert templates != [RenderTransform(renderer, 3, 2).template(s) for s in samples]  # redrawn per epoch
    assert {RenderTransform(renderer, 3, 1, train=False).template(s) for s in samples} == {0}


def _copy_example(tokenizer, history: list[str], target: str) -> Example:
    builder = PromptBuilder(tokenizer, max_length=96)
    enc = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in history]
    prompt = builder.build(enc, template=1)
    items = tuple(f"i{j}" for j in range(len(history)))
    return Example(prompt.input_ids, prompt.item_spans, items, [*tokenizer(target, add_special_tokens=False)["input_ids"], builder.eos])


def test_copy_relabel_replaces_shared_target_words_consistently_and_nothing_else(tokenizer):
    """train.copy_relabel: each word of the target that occurs in the history's IDs becomes one made-up word (as the
    tokenizer spells it), the same in every history span and in the target; template text, the target's other words,
    numbers, EOS and the items stay, and the spans cover the relabelled IDs."""
    relabel = CopyRelabel.from_tokenizer(tokenizer, 1.0)
    assert len(relabel.bank) > 1000 and all(w[0] in relabel.word_start for w in relabel.bank)
    history = ["acme red lamp 2", "zenith blue sofa", "acme blue chair 2"]
    ex = _copy_example(tokenizer, history, "acme green lamp 2")
    shared = {"acme", "lamp"}  # "2" is shared too, but a number: kept
    decode = tokenizer.decode
    outs = [relabel(ex, random.Random(seed)) for seed in range(20)]
    for out in outs:
        assert out.items == ex.items and out.labels[-1] == ex.labels[-1]
        assert out.input_ids[:ex.spans[0][0]] == ex.input_ids[:ex.spans[0][0]]  # the template before the history
        assert out.input_ids[out.spans[-1][1]:] == ex.input_ids[ex.spans[-1][1]:]  # ... and after it
        ids = [decode(out.input_ids[s:e]).split() for s, e in out.spans]
        target = decode(out.labels[:-1]).split()
        new = {w: n for w, n in zip("acme green lamp 2".split(), target)}
        assert new["green"] == "green" and new["2"] == "2"
        assert all(new[w] != w for w in shared) and new["acme"] != new["lamp"]
        for before, after in zip(history, ids):
            assert after == [new.get(w, w) if w in shared else w for w in before.split()]  # consistent, and only shared
    assert len({decode(o.labels[:-1]) for o in outs}) >= 15  # a fresh made-up word per draw
    assert relabel(ex, random.Random(0)) == relabel(ex, random.Random(0))
    assert CopyRelabel.from_tokenizer(tokenizer, 0.0)(ex, random.Random(0)) is ex
    unshared = _copy_example(tokenizer, ["zenith blue sofa 2"], "acme red lamp 2")
    assert relabel(unshared, random.Random(0)) == unshared
    with pytest.raises(ValueError, match="copy_relabel"):
        CopyRelabel.from_tokenizer(tokenizer, 1.5)


def test_copy_relabel_applies_to_training_renders_only_and_depends_only_on_the_sample(synth_dataset, renderer):
    samples = LeaveOneOutSource(synth_dataset).samples[:300]
    relabelled = Renderer(renderer.builder, renderer.id_tokens, relabel=CopyRelabel.from_tokenizer(renderer.builder.tokenizer, 0.5))
    train = RenderTransform(relabelled, seed=3, epoch=1)
    plain = [RenderTransform(renderer, 3, 1)(s) for s in samples]
    out = [train(s) for s in samples]
    assert out == [RenderTransform(relabelled, 3, 1)(s) for s in reversed(samples)][::-1]  # order-free
    differ = sum(a != b for a, b in zip(out, plain))
    assert 0 < differ < len(samples)  # about half of the samples that share a word with their history
    assert [RenderTransform(relabelled, 3, 1, train=False)(s) for s in samples] == [
        RenderTransform(renderer, 3, 1, train=False)(s) for s in samples]  # evaluation never relabels
    assert out != [RenderTransform(relabelled, 3, 2)(s) for s in samples]  # redrawn per epoch


def test_trainer_relabels_in_the_recommender_stage_only(tmp_path, synth_dataset, tokenizer):
    from pretrain.engine import Trainer

    table = IdTable({k: f"{it.text.split()[1]} {i}" for i, (k, it) in enumerate(synth_dataset.items.items())})
    def trainer(train: dict) -> Trainer:
        made = Trainer({"train": train}, object(), tmp_path, tokenizer=tokenizer)
        made.builder, made.idtable = PromptBuilder(tokenizer, max_length=96), table
        return made

    relabelling = trainer({"copy_relabel": 0.5})
    assert relabelling._renderer(REC).relabel.prob == 0.5 and relabelling._renderer(GEN).relabel is None
    assert trainer({})._renderer(REC).relabel is None  # off by default: the paper's training
    with pytest.raises(ValueError, match="copy_relabel"):
        trainer({"copy_relabel": -0.1})._renderer(REC)  # checked when the trainer is made, before any work


def test_epoch_batches_resume_mid_epoch(synth_dataset, renderer):
    def make(resume=None):
        return EpochBatches(LeaveOneOutSource(synth_dataset), renderer, epoch=1, rank=1, world=2, seed=3,
                            chunk_size=40, max_tokens=800, max_batch=8, resume=resume)

    full = [[e.input_ids for e in b] for b in make()]
    first = make()
    it = iter(first)
    for _ in range(7):  # crosses a chunk boundary
        next(it)
    rest = [[e.input_ids for e in b] for b in make(resume=first.position)]
    assert rest == full[7:]
    assert make().count() == len(full)  # the progress bar's total, counted without touching the source's position
    counted = make(resume=first.position)
    assert counted.count() == len(full) and len(list(counted)) == len(full) - 7


def test_deepspeed_config_resolution():
    cfg = resolve("zero2", lr=3e-4, weight_decay=0.1, micro_batch=8, grad_accum=4, clipping=0.5)
    assert cfg["optimizer"]["params"]["lr"] == 3e-4
    assert "scheduler" not in cfg  # the trainer sets the lr (pretrain.optim)
    assert not cfg["bf16"]["enabled"] and not cfg["fp16"]["enabled"]  # float32 weights; precision is autocast
    assert "torch_autocast" not in cfg
    bf16 = resolve("zero2", lr=1e-3, autocast_dtype=torch.bfloat16)["torch_autocast"]  # else the engine turns it off
    assert bf16 == {"enabled": True, "dtype": "torch.bfloat16", "lower_precision_safe_modules": []}
    assert cfg["gradient_accumulation_steps"] == 4 and cfg["gradient_clipping"] == 0.5
    assert cfg["zero_optimization"]["stage"] == 2
    assert "auto" not in repr(cfg)
    assert resolve("zero3", lr=1e-8, zero_stage=1)["zero_optimization"]["stage"] == 1
    with pytest.raises(DataError):
        resolve("zero9", lr=1.0)


def test_user_ids_need_the_training_samples_in_memory(tokenizer):
    """Every training prompt's user ID is named before its stage, which a streaming (Fusion shard) source cannot
    offer."""
    from pretrain.engine import Trainer

    class Streaming:
        items: dict = {}

    with pytest.raises(ValueError, match="training samples in memory"):
        Trainer({"prompt": {"user_ids": True}}, Streaming(), "unused", tokenizer=tokenizer)


def test_source_state_before_the_first_sample_is_the_epoch_start(synth_dataset):
    """EpochBatches records the source's state at a chunk start before taking a sample: after a full pass (the
    trainer counts a stage's batches first) it must not report where that pass stopped."""
    src = LeaveOneOutSource(synth_dataset)
    list(src.epoch(0, 0, 1, seed=0))
    src.epoch(1, 0, 1, seed=0)
    assert src.state() == {"position": 0}

"""pretrain.optim: warm-up then decay to a floor over a stage's steps or time cap, and the weight-decay groups; the
trainer plans a stage's steps from its batches and applies the schedule."""
from __future__ import annotations

import math

import pytest

from pretrain.optim import LrSchedule, param_groups

TINY = {"d_model": 32, "d_ff": 64, "d_kv": 8, "num_heads": 4, "num_layers": 1, "num_decoder_layers": 1}


def test_warmup_then_decay_to_floor():
    lin = LrSchedule(lr=1.0, warmup_steps=4, schedule="linear", min_lr_ratio=0.1)
    assert [lin.lr_at(s, 104) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lin.lr_at(4, 104) == 1.0 and lin.lr_at(54, 104) == pytest.approx(0.55) and lin.lr_at(104, 104) == pytest.approx(0.1)
    assert lin.lr_at(500, 104) == pytest.approx(0.1)  # never below the floor
    cos = LrSchedule(lr=2.0, schedule="cosine")
    assert cos.lr_at(0, 100) == 2.0 and cos.lr_at(50, 100) == pytest.approx(1.0) and cos.lr_at(100, 100) == pytest.approx(0.0)
    assert LrSchedule(lr=1.0, schedule="constant").lr_at(99, 100) == 1.0
    # time-capped: progress is the larger of the step and the time fractions
    assert lin.lr_at(10, 10_000, seconds=30.0, seconds_cap=60.0) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lin.lr_at(10, None, seconds=60.0, seconds_cap=60.0) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        LrSchedule.from_config({"schedule": "step"}, 1e-3)
    with pytest.raises(ValueError):
        LrSchedule.from_config({"min_lr_ratio": 2.0}, 1e-3)
    assert LrSchedule.from_config({"lr": 0.5, "warmup_steps": 3}, 1e-3) == LrSchedule(0.5, 3, "linear", 0.0)


def test_no_weight_decay_on_norms_biases_and_embeddings():
    from torch import nn

    from genrec.modeling import build_t5

    model = build_t5(100, **TINY)
    decay, no_decay = param_groups(model, 0.01)
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    exempt = {names[id(p)] for p in no_decay["params"]}
    assert "shared.weight" in exempt  # the tied input/output embedding
    assert any("relative_attention_bias" in n for n in exempt) and any("layer_norm" in n for n in exempt)
    assert all(n.endswith(("q.weight", "k.weight", "v.weight", "o.weight", "wi.weight", "wo.weight"))
               for n in (names[id(p)] for p in decay["params"]))
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    plain = nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3))
    groups = param_groups(plain, 0.1)
    assert [len(g["params"]) for g in groups] == [1, 3]  # linear weight | linear bias, norm weight and bias


def test_trainer_decays_over_the_planned_steps(synth_dataset, tokenizer, tmp_path, one_torch_thread):
    """One recommender stage of 2 epochs x 5 steps: 10 planned steps, the lr ends at the floor after the last one."""
    from pretrain.engine import REC, Trainer
    from pretrain.sources import LeaveOneOutSource

    cfg = {"seed": 0, "model": {"recommender": TINY, "generator": TINY}, "prompt": {"max_length": 128},
           "ids": {"scheme": "title"},
           "train": {"rounds": 1, "order": ["recommender"], "rec_epochs": 2, "max_steps_per_epoch": 5, "max_tokens": 3000,
                     "max_batch": 32, "threads": 1, "checkpoint_every": 0, "log_every": 1, "precision": "fp32"},
           "optim": {"recommender": {"lr": 1e-2, "warmup_steps": 2, "schedule": "cosine", "min_lr_ratio": 0.2,
                                     "weight_decay": 0.1}},
           "deepspeed": {"config": "zero0"}}
    trainer = Trainer(cfg, LeaveOneOutSource(synth_dataset), tmp_path / "run", tokenizer=tokenizer)
    trainer.fit()
    assert trainer.stage["planned"] == 10 and trainer.stage["steps"] == 10
    last = 1e-2 * (0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi * 7 / 8)))  # step 9 of 10, 2 of them warm-up
    assert trainer.engines[REC].get_lr() == pytest.approx([last, last])
    groups = trainer.engines[REC].optimizer.param_groups
    assert sorted(g["weight_decay"] for g in groups) == [0.0, 0.1]

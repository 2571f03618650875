"""train.precision (genrec.precision): how auto resolves, ID generation stays fp32 unless asked, bf16 training agrees with fp32 over the first steps, and
bf16 decoding ranks with float32 scores."""
from __future__ import annotations

import json
import warnings

import pytest
import torch

from genrec import precision
from idgen.config import IdGenConfig

TINY = {"d_model": 32, "d_ff": 64, "d_kv": 8, "num_heads": 4, "num_layers": 1, "num_decoder_layers": 1}


def test_resolve_settings(monkeypatch):
    assert precision.resolve("fp32", "cpu") == torch.float32
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: True)
    assert precision.resolve("auto", "cpu") == torch.bfloat16 == precision.resolve(None, "cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert precision.resolve("bf16", "cpu") == torch.bfloat16
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: False)
    assert precision.from_config({"train": {}}, "cpu") == torch.float32
    with pytest.warns(UserWarning, match="bf16 is emulated here and slower than fp32"):  # asked for: kept, not silent
        assert precision.resolve("bf16", "cpu") == torch.bfloat16
    with pytest.raises(ValueError, match="precision"):
        precision.resolve("fp16", "cpu")
    with pytest.raises(ValueError, match="train.precision"):
        precision.setting({"train": {"precision": "half"}})
    # ID generation decodes in idgen.precision (fp32 unless set), not train.precision: bf16 rounding makes IDs churn
    assert IdGenConfig.from_dict({"groups": 4}).precision == "fp32"
    assert IdGenConfig.from_dict({"precision": "bf16"}).precision == "bf16"
    with precision.autocast(torch.bfloat16, "cpu"):
        assert torch.is_autocast_enabled("cpu")
    with precision.autocast(torch.float32, "cpu"):
        assert not torch.is_autocast_enabled("cpu")


def test_bf16_recommender_losses_agree_with_fp32(synth_dataset, tokenizer, tmp_path, one_torch_thread):
    """The first 6 recommender steps of a tiny T5 under bf16 autocast: every loss within 1 % of fp32's (measured:
    3e-4), with float32 weights and optimizer state either way."""
    from idgen.schemes import title_table
    from pretrain.engine import REC, Trainer
    from pretrain.sources import LeaveOneOutSource

    losses = {}
    for prec in ("fp32", "bf16"):
        cfg = {"seed": 0, "model": {"recommender": TINY, "generator": TINY}, "prompt": {"max_length": 128},
               "train": {"max_tokens": 3000, "max_batch": 32, "threads": 1, "max_steps_per_epoch": 6,
                         "checkpoint_every": 0, "log_every": 1000, "precision": prec},
               "optim": {"recommender": {"lr": 3e-3, "warmup_steps": 2}}, "deepspeed": {"config": "zero0"}}
        trainer = Trainer(cfg, LeaveOneOutSource(synth_dataset), tmp_path / prec, tokenizer=tokenizer)
        trainer.setup()
        assert trainer.dtype == precision.DTYPES[prec]
        seen = set()  # the products really run in the precision (DeepSpeed's forward would switch autocast off)
        trainer.engines[REC].module.lm_head.register_forward_hook(lambda m, i, out: seen.add(out.dtype))
        trainer.train_epoch(REC, title_table(synth_dataset.items))
        assert seen == {precision.DTYPES[prec]}
        assert all(p.dtype == torch.float32 for p in trainer.engines[REC].module.parameters())
        losses[prec] = [json.loads(line)["loss"] for line in (tmp_path / prec / "losses.jsonl").read_text().splitlines()]
    assert len(losses["fp32"]) == 6
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=1e-2)
    assert losses["fp32"][-1] < losses["fp32"][0]


def test_bf16_beam_search_scores_are_float32_and_rank_alike(synth_dataset, tokenizer, one_torch_thread):
    from idgen.schemes import title_table
    from genrec.decoding import rank_prompts
    from genrec.modeling import build_t5
    from genrec.prompts import PromptBuilder
    from genrec.splits import leave_one_out
    from genrec.trie import PrefixTrie

    torch.manual_seed(0)
    model = build_t5(len(tokenizer), **TINY).eval()
    ids = title_table(synth_dataset.items).token_ids(tokenizer)
    trie = PrefixTrie(ids, tokenizer.eos_token_id, tokenizer.pad_token_id)
    builder = PromptBuilder(tokenizer, max_length=128)
    prompts = [builder.build([ids[h] for h in s.history], 0).input_ids for s in leave_one_out(synth_dataset, "test")[:16]]
    fp32 = rank_prompts(model, prompts, trie, num_beams=10, k=10, workers=1)
    bf16 = rank_prompts(model, prompts, trie, num_beams=10, k=10, workers=2, dtype=torch.bfloat16)
    assert all(isinstance(score, float) for ranking in bf16 for _, score in ranking)
    overlap = sum(len({k for k, _ in a} & {k for k, _ in b}) for a, b in zip(fp32, bf16)) / sum(len(a) for a in fp32)
    assert overlap >= 0.8
    for a, b in zip(fp32, bf16):  # the same item scores alike (bf16 products, float32 log-softmax and sums)
        common = dict(a).keys() & dict(b).keys()
        assert all(abs(dict(a)[k] - dict(b)[k]) < 0.1 for k in common)

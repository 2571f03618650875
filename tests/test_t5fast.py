"""The CPU fast paths of the trainer's T5 (genrec.t5fast, genrec.modeling.GenRecT5) compute what Hugging Face's
T5 computes: the same loss and gradients, dropout with the asked probability, stock folders loading into them."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import T5ForConditionalGeneration

from genrec import t5fast
from genrec.modeling import GenRecT5, build_t5, load_t5, model_from_config


def _batch(vocab: int = 300) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(2, vocab, (6, 13), generator=g)
    mask = torch.ones_like(ids)
    mask[:3, 9:] = 0  # padded prompts
    ids[mask == 0] = 0
    labels = torch.randint(2, vocab, (6, 5), generator=g)
    labels[2:, 3:] = -100  # padded IDs
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _pair(dropout: float = 0.0) -> tuple[GenRecT5, T5ForConditionalGeneration]:
    torch.manual_seed(0)
    fast = build_t5(300, dropout_rate=dropout)
    stock = T5ForConditionalGeneration(fast.config.__class__.from_dict(fast.config.to_dict()))
    stock.load_state_dict(fast.state_dict())
    return fast.train(), stock.train()


@pytest.mark.parametrize("embeds", [False, True], ids=["input-ids", "inputs-embeds"])
def test_training_loss_and_gradients_equal_hugging_faces(embeds: bool) -> None:
    fast, stock = _pair()
    assert fast.config._attn_implementation == t5fast.ATTENTION and stock.config._attn_implementation != t5fast.ATTENTION
    batch = _batch()
    losses = []
    for model in (fast, stock):
        b = dict(batch)
        if embeds:  # the soft-ID stage's call
            b["inputs_embeds"] = model.get_input_embeddings()(b.pop("input_ids"))
        losses.append(model(**b).loss)
        losses[-1].backward()
    assert losses[0].item() == pytest.approx(losses[1].item(), rel=1e-6)
    for (name, p), q in zip(fast.named_parameters(), stock.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-6, rtol=1e-5), name


def test_training_path_projects_only_real_label_positions() -> None:
    fast, _ = _pair()
    batch = _batch()
    out = fast(**batch)
    assert out.logits.shape == (int((batch["labels"] != -100).sum()), 300)
    fast.eval()  # eval keeps Hugging Face's contract: logits for every position
    assert fast(**batch).logits.shape == (6, 5, 300)


def test_fast_dropout_drops_p_scales_the_rest_and_is_seeded() -> None:
    x = torch.ones(1_000_000, requires_grad=True)
    torch.manual_seed(3)
    y = t5fast.fast_dropout(x, 0.1)
    dropped = (y == 0).float().mean().item()
    assert dropped == pytest.approx(0.1, abs=0.002)  # 1e6 draws: sd 3e-4
    assert y.mean().item() == pytest.approx(1.0, abs=0.005)  # inverted dropout keeps the expectation
    assert torch.unique(y).tolist() == pytest.approx([0.0, 2**15 / (2**15 - round(0.1 * 2**15))])
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # the gradient is the mask times the scale
    torch.manual_seed(3)
    assert torch.equal(t5fast.fast_dropout(x.detach(), 0.1), y.detach())
    assert t5fast.fast_dropout(x, 0.1, training=False) is x
    assert torch.equal(t5fast.fast_dropout(x.detach(), 1.0), torch.zeros_like(x))


def test_dropout_in_the_model_is_the_fast_one_and_eval_is_deterministic() -> None:
    fast, stock = _pair(dropout=0.1)
    assert not any(type(m) is torch.nn.Dropout for m in fast.modules())
    assert sum(isinstance(m, t5fast.Dropout) for m in fast.modules()) == sum(
        isinstance(m, torch.nn.Dropout) for m in stock.modules())
    batch = _batch()
    torch.manual_seed(5)
    a = fast(**batch).loss
    torch.manual_seed(5)
    assert fast(**batch).loss.item() == a.item()
    fast.eval(), stock.eval()
    with torch.no_grad():
        assert fast(**batch).loss.item() == pytest.approx(stock(**batch).loss.item(), rel=1e-6)


def test_a_stock_t5_folder_loads_with_the_fast_paths(tmp_path) -> None:
    _, stock = _pair(dropout=0.1)
    stock.save_pretrained(tmp_path)
    model = load_t5(tmp_path)
    assert isinstance(model, GenRecT5) and model.config._attn_implementation == t5fast.ATTENTION
    assert all(torch.equal(p, q) for p, q in zip(model.state_dict().values(), stock.state_dict().values()))


def test_an_init_folder_takes_the_recipes_dropout_and_keeps_its_own_otherwise(tmp_path) -> None:
    fast, _ = _pair(dropout=0.1)
    fast.save_pretrained(tmp_path)
    off = model_from_config({"init": str(tmp_path), "dropout_rate": 0.0}, 0).train()
    assert {m.p for m in off.modules() if isinstance(m, t5fast.Dropout)} == {0.0}
    kept = model_from_config({"init": str(tmp_path)}, 0)
    assert kept.config.dropout_rate == 0.1 and {m.p for m in kept.modules() if isinstance(m, t5fast.Dropout)} == {0.1}
    batch = _batch()
    assert off(**batch).loss.item() == pytest.approx(fast.eval()(**batch).loss.item(), rel=1e-6)


def test_importing_the_models_flushes_subnormals_in_every_intra_op_thread() -> None:
    """A fresh process that imports genrec.modeling computes 1e-30 * 1e-10 (a subnormal in fp32) as 0, on the main
    thread and in the intra-op threads of a large elementwise product; plain torch keeps the subnormal."""
    probe = ("import torch{imp}; torch.set_num_threads(2); x = torch.full((1 << 20,), 1e-30); "
             "print(int(((x * 1e-10) == 0).sum()), int(torch.set_flush_denormal(True)))")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    flushed = subprocess.run([sys.executable, "-c", probe.format(imp="; import genrec.modeling")], env=env,
                             capture_output=True, text=True, check=True).stdout.split()
    if flushed[1] == "0":  # set_flush_denormal answers False on a CPU without flush-to-zero flags
        pytest.skip("no FTZ/DAZ on this CPU")
    plain = subprocess.run([sys.executable, "-c", probe.format(imp="")], env=env, capture_output=True, text=True,
                           check=True).stdout.split()
    assert flushed[0] == str(1 << 20) and plain[0] == "0"

"""Soft ID embeddings: gradient routing, exactness in the hard limit, and the splice by index."""
from __future__ import annotations

import pytest
import torch

from genrec.modeling import build_t5
from idgen.softid import SoftIdConfig, SpanIndex, soft_id_embeddings, soft_prompt_embeds, splice

SIZE = {"d_model": 32, "d_ff": 64, "d_kv": 8, "num_heads": 4, "num_layers": 1, "num_decoder_layers": 1, "dropout_rate": 0.0}
V = 64


def models(seed: int = 0):
    torch.manual_seed(seed)
    return build_t5(V, **SIZE), build_t5(V, **SIZE)


def greedy_ids(gen, text: torch.Tensor, steps: int) -> list[list[int]]:
    """Each item's greedy ID (stopping before EOS), decoded one step at a time without cache."""
    dec = torch.zeros(text.shape[0], 1, dtype=torch.long)
    with torch.no_grad():
        for _ in range(steps):
            nxt = gen(input_ids=text, decoder_input_ids=dec).logits[:, -1].argmax(-1, keepdim=True)
            dec = torch.cat([dec, nxt], 1)
    out = []
    for row in dec[:, 1:].tolist():
        out.append(row[: row.index(1)] if 1 in row else row)
    return out


def batch_for(ids: list[list[int]]):
    """Two prompts over items 0..U-1: prompt 0 = [7, item0, 9, item1, 1], prompt 1 = [7, item1, 9, item2..., 1]."""
    width = max(len(x) for x in ids)
    id_ids = torch.tensor([x + [0] * (width - len(x)) for x in ids])
    id_mask = torch.arange(width)[None] < torch.tensor([len(x) for x in ids])[:, None]
    prompts, occ = [], ([], [], [], [])
    for b, items in enumerate([(0, 1), (1, 2, 0)]):
        seq = [7]
        for j, u in enumerate(items):
            if j:
                seq.append(9)
            for lst, v in zip(occ, (b, len(seq), len(ids[u]), u)):
                lst.append(v)
            seq += ids[u]
        prompts.append(seq + [1])
    plen = max(len(p) for p in prompts)
    input_ids = torch.tensor([p + [0] * (plen - len(p)) for p in prompts])
    return input_ids, id_ids, id_mask, SpanIndex(*(torch.tensor(v) for v in occ))


@pytest.fixture
def items():
    torch.manual_seed(1)
    text = torch.randint(3, V, (3, 6))
    text[:, -1] = 1
    return text, torch.ones_like(text)


def test_gradients_reach_generator_not_recommender(items):
    gen, rec = models()
    text, mask = items
    ids = [[5, 6, 7], [8, 9], [10, 11, 12, 13]]
    input_ids, id_ids, id_mask, spans = batch_for(ids)
    rec.eval()
    rec.requires_grad_(False)
    table = rec.get_input_embeddings().weight.detach()
    embeds = soft_prompt_embeds(gen, table, input_ids, text, mask, id_ids, id_mask, spans, SoftIdConfig(tau=0.5))
    labels = torch.tensor([[20, 21, 1], [22, 1, -100]])
    loss = rec(inputs_embeds=embeds, attention_mask=(input_ids != 0).long(), labels=labels).loss
    loss.backward()
    assert all(p.grad is None for p in rec.parameters())
    grads = [p.grad for p in gen.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


@pytest.mark.parametrize("free_running", [False, True])
def test_hard_limit_equals_hard_prompt(items, free_running):
    gen, rec = models(2)
    text, mask = items
    ids = greedy_ids(gen, text, 4)
    assert all(ids), "a random generator emitted EOS first; pick another seed"
    input_ids, id_ids, id_mask, spans = batch_for(ids)
    table = rec.get_input_embeddings().weight.detach()
    cfg = SoftIdConfig(tau=1e-6, straight_through=True, free_running=free_running)
    soft = soft_prompt_embeds(gen, table, input_ids, text, mask, id_ids, id_mask, spans, cfg)
    assert torch.equal(soft, table[input_ids])
    soft_only, _ = soft_id_embeddings(gen, text, mask, id_ids, id_mask, table, SoftIdConfig(tau=1.0))
    assert not torch.allclose(soft_only[id_mask], table[id_ids][id_mask])  # without the limit they differ


def test_splice_replaces_only_spans_and_valid_steps():
    ids = [[5, 6, 7], [8, 9], [10]]
    input_ids, id_ids, id_mask, spans = batch_for(ids)
    base = torch.zeros(*input_ids.shape, 4)
    soft = torch.arange(1, 3 * 3 * 4 + 1, dtype=torch.float).view(3, 3, 4)
    step_mask = id_mask.clone()
    step_mask[0, 2] = False  # e.g. a step after an emitted EOS
    out = splice(base, soft, step_mask, spans)
    # prompt 0: [7, 5, 6, 7, 9, 8, 9, 1]: item 0 at 1..3 (step 2 masked), item 1 at 5..6
    assert torch.equal(out[0, 1], soft[0, 0]) and torch.equal(out[0, 2], soft[0, 1])
    assert torch.equal(out[0, 3], torch.zeros(4))
    assert torch.equal(out[0, 5], soft[1, 0]) and torch.equal(out[0, 6], soft[1, 1])
    touched = torch.zeros(input_ids.shape, dtype=torch.bool)
    touched[spans.batch.repeat_interleave(spans.length), torch.cat([torch.arange(s, s + n) for s, n in zip(spans.start.tolist(), spans.length.tolist())])] = True
    assert (out[~touched] == 0).all()
    assert int((out.abs().sum(-1) > 0).sum()) == int(touched.sum()) - 2  # item 0 occurs twice


@pytest.mark.parametrize("tau", [1.0, 0.5])
def test_teacher_forced_soft_ids_are_the_full_forward_at_the_id_steps(items, tau):
    gen, rec = models(3)
    text, mask = items
    input_ids, id_ids, id_mask, spans = batch_for([[5, 6, 7], [8, 9], [10, 11, 12, 13]])
    table = rec.get_input_embeddings().weight.detach()
    soft, step_mask = soft_id_embeddings(gen, text, mask, id_ids, id_mask, table, SoftIdConfig(tau=tau))
    dec_in = torch.cat([torch.zeros_like(id_ids[:, :1]), id_ids[:, :-1]], 1)
    logits = gen(input_ids=text, attention_mask=mask, decoder_input_ids=dec_in).logits  # every step projected
    full = torch.softmax(logits / tau, -1) @ table
    assert torch.equal(step_mask, id_mask)
    assert torch.allclose(soft[id_mask], full[id_mask], atol=1e-6)
    assert (soft[~id_mask] == 0).all()  # padding steps are never read (splice keeps the hard embedding there)

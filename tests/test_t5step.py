"""The search decoder and chunked encoder compute what ``T5ForConditionalGeneration`` computes."""
import pytest
import torch

from genrec.modeling import build_t5
from genrec.t5step import T5StepDecoder, encode

pytestmark = pytest.mark.usefixtures("one_torch_thread")
VOCAB, BEAMS = 50, 3


def model_of(**kw):
    torch.manual_seed(0)
    size = dict(d_model=32, d_ff=64, d_kv=8, num_layers=2, num_decoder_layers=2, num_heads=4, **kw)
    return build_t5(VOCAB, **size).eval()


def inputs(n: int = 4, length: int = 11):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(2, VOCAB, (n, length), generator=g)
    mask = torch.ones_like(ids)
    for i in range(n):
        mask[i, length - 2 * i:] = 0  # different amounts of padding
    return ids.masked_fill(mask == 0, 0), mask


@pytest.mark.parametrize("kw", [{}, {"feed_forward_proj": "gated-gelu", "tie_word_embeddings": False}],
                         ids=["relu-tied", "gated-untied"])
def test_encode_equals_hf_encoder(kw, monkeypatch):
    import genrec.t5step

    model = model_of(**kw)
    ids, mask = inputs()
    monkeypatch.setattr(genrec.t5step, "ATTENTION_ELEMENTS", 4 * 11 * 11)  # one row per chunk
    with torch.no_grad():
        ref = model.get_encoder()(input_ids=ids, attention_mask=mask).last_hidden_state
    mine = encode(model, ids, mask)
    assert torch.allclose(mine[mask.bool()], ref[mask.bool()], atol=1e-5)


@pytest.mark.parametrize("kw,steps", [({}, 5), ({"feed_forward_proj": "gated-gelu", "tie_word_embeddings": False}, 5),
                                      ({}, 11)], ids=["relu-tied", "gated-untied", "cache-grows"])
def test_steps_with_reordered_beams_equal_a_full_forward(kw, steps):
    """Feed beams whose parents get shuffled between steps; each step's logits must equal HF's logits for the
    whole prefix each beam ended up with (decoded without a cache). 11 steps outgrow the cache's first capacity."""
    model = model_of(**kw)
    ids, mask = inputs()
    n = ids.shape[0]
    hidden = encode(model, ids, mask)
    dec = T5StepDecoder(model, hidden, mask, beams=BEAMS, max_steps=steps)
    g = torch.Generator().manual_seed(2)
    start = model.config.decoder_start_token_id
    prefixes = torch.full((n * BEAMS, 1), start)
    logits = dec.logits(dec.step(torch.full((n,), start)))  # first step: one row per input
    assert logits.shape == (n, VOCAB)
    logits = logits.repeat_interleave(BEAMS, 0)
    for _ in range(steps - 1):
        with torch.no_grad():
            ref = model(input_ids=ids.repeat_interleave(BEAMS, 0), attention_mask=mask.repeat_interleave(BEAMS, 0),
                        decoder_input_ids=prefixes).logits[:, -1]
        assert torch.allclose(logits, ref, atol=1e-4), (logits - ref).abs().max()
        rows = (torch.arange(n)[:, None] * BEAMS + torch.randint(0, BEAMS, (n, BEAMS), generator=g)).view(-1)
        tokens = torch.randint(2, VOCAB, (n * BEAMS,), generator=g)
        dec.reorder(rows)
        prefixes = torch.cat([prefixes[rows], tokens[:, None]], dim=1)
        logits = dec.logits(dec.step(tokens))


def test_log_probs_at_chunks_and_select():
    model = model_of()
    ids, mask = inputs()
    n = ids.shape[0]
    dec = T5StepDecoder(model, encode(model, ids, mask), mask, beams=BEAMS, max_steps=3)
    dec.chunk = 5  # rows per chunk, so the rows span several chunks
    dec.step(torch.zeros(n, dtype=torch.long))
    out = dec.step(torch.arange(2, 2 + n * BEAMS))
    rows = torch.tensor([0, 0, 4, 6, 7, 11])
    tokens = torch.tensor([3, 9, 1, 0, 49, 20])
    full = torch.log_softmax(dec.logits(out).float(), dim=-1)
    assert torch.allclose(dec.log_probs_at(out, rows, tokens), full[rows, tokens], atol=1e-5)
    keep = torch.tensor([1, 3])
    before = dec.logits(dec.step(torch.arange(n * BEAMS)))
    dec = T5StepDecoder(model, encode(model, ids, mask), mask, beams=BEAMS, max_steps=3)
    dec.step(torch.zeros(n, dtype=torch.long))
    dec.step(torch.arange(2, 2 + n * BEAMS))
    dec.select(keep)
    kept_rows = (keep[:, None] * BEAMS + torch.arange(BEAMS)).view(-1)
    after = dec.logits(dec.step(torch.arange(n * BEAMS)[kept_rows]))
    assert torch.allclose(after, before[kept_rows], atol=1e-5)


def test_bad_step_shapes_are_refused():
    model = model_of()
    ids, mask = inputs()
    dec = T5StepDecoder(model, encode(model, ids, mask), mask, beams=BEAMS, max_steps=1)
    with pytest.raises(ValueError, match="tokens for 4 inputs"):
        dec.step(torch.zeros(5, dtype=torch.long))
    dec.step(torch.zeros(4, dtype=torch.long))
    with pytest.raises(RuntimeError, match="sized for 1 steps"):
        dec.step(torch.zeros(4 * BEAMS, dtype=torch.long))

"""Batched constrained beam search equals Hugging Face ``generate`` with a nested-dict ``prefix_allowed_tokens_fn``."""
import random

import pytest
import torch

from genrec.decoding import constrained_beam_search, pad_batch, rank_prompts
from genrec.modeling import build_t5
from genrec.trie import PrefixTrie

EOS, PAD, VOCAB = 1, 0, 60


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def random_ids(n: int, seed: int) -> dict[str, tuple[int, ...]]:
    rng = random.Random(seed)
    out: dict[str, tuple[int, ...]] = {}
    while len(out) < n:
        s = tuple(rng.randrange(2, VOCAB) for _ in range(rng.randint(1, 5)))
        if s not in out.values():
            out[f"i{len(out)}"] = s
    first = out["i0"]
    out["ext"] = first + (7,)  # i0 is a prefix of another ID
    return out


@pytest.fixture(scope="module")
def setup():
    seqs = random_ids(300, seed=0)
    torch.manual_seed(0)
    model = build_t5(VOCAB, d_model=32, d_ff=64, d_kv=16, num_layers=1, num_decoder_layers=1, num_heads=2).eval()
    rng = random.Random(1)
    prompts = [[rng.randrange(2, VOCAB) for _ in range(rng.randint(3, 14))] + [EOS] for _ in range(5)]
    return seqs, PrefixTrie(seqs, EOS, PAD), model, prompts


def hf_ranking(model, prompt, seqs, trie, num_beams, **kw):
    """What the reference does: HF beam search, batch size 1, a nested dict walked per beam per step."""
    nested: dict = {}
    for s in seqs.values():
        node = nested
        for t in (*s, EOS):
            node = node.setdefault(t, {})

    def allowed(batch_id, sent):
        node = nested
        for t in sent.tolist()[1:]:
            node = node.get(t)
            if node is None:
                return [PAD]
        return list(node) or [PAD]

    out = model.generate(input_ids=torch.tensor([prompt]), num_beams=num_beams, num_return_sequences=num_beams,
                         max_length=trie.max_depth + 1, prefix_allowed_tokens_fn=allowed, do_sample=False,
                         output_scores=True, return_dict_in_generate=True, **kw)
    inverse = {tuple(s): key for key, s in seqs.items()}
    ranking = []
    for seq, score in zip(out.sequences.tolist(), out.sequences_scores.tolist()):
        toks = seq[1:]
        if EOS in toks and score > -1e5:  # slots HF fills with -1e9 scores when fewer hypotheses finished
            ranking.append((inverse[tuple(toks[: toks.index(EOS)])], score))
    return ranking


@pytest.mark.parametrize("num_beams,length_penalty,early_stopping", [(20, 1.0, False), (12, 0.5, True), (8, 2.0, "never")])
def test_equals_hf_generate(setup, num_beams, length_penalty, early_stopping):
    seqs, trie, model, prompts = setup
    ids, mask = pad_batch(prompts, PAD, torch.device("cpu"))
    ours = constrained_beam_search(model, ids, mask, trie, num_beams=num_beams, k=num_beams,
                                   length_penalty=length_penalty, early_stopping=early_stopping)
    for prompt, ranking in zip(prompts, ours):
        ref = hf_ranking(model, prompt, seqs, trie, num_beams, length_penalty=length_penalty, early_stopping=early_stopping)
        assert [key for key, _ in ranking] == [key for key, _ in ref]
        assert [s for _, s in ranking] == pytest.approx([s for _, s in ref], abs=1e-4)
        assert len(ranking) == num_beams and len({key for key, _ in ranking}) == num_beams


def test_results_are_real_distinct_items_and_scores_are_log_probs(setup):
    seqs, trie, model, prompts = setup
    ids, mask = pad_batch(prompts[:2], PAD, torch.device("cpu"))
    ranked = constrained_beam_search(model, ids, mask, trie, num_beams=20, k=10)
    for row, ranking in enumerate(ranked):
        assert len(ranking) == 10
        assert [s for _, s in ranking] == sorted((s for _, s in ranking), reverse=True)
        key, score = ranking[0]
        target = torch.tensor([[*seqs[key], EOS]])
        with torch.no_grad():
            logits = model(input_ids=ids[row:row + 1, : int(mask[row].sum())], labels=target).logits
        logp = torch.log_softmax(logits, -1)[0, torch.arange(target.shape[1]), target[0]].sum().item()
        assert score == pytest.approx(logp / target.shape[1], abs=1e-4)  # length penalty 1: mean log-prob


def test_tiny_trie_returns_every_item_once(setup):
    _, _, model, prompts = setup
    trie = PrefixTrie({"a": [5], "b": [5, 6], "c": [9, 9, 9]}, EOS, PAD)
    ids, mask = pad_batch(prompts[:3], PAD, torch.device("cpu"))
    for ranking in constrained_beam_search(model, ids, mask, trie, num_beams=6, k=5):
        assert sorted(key for key, _ in ranking) == ["a", "b", "c"]


def test_exclude_history_items(setup):
    seqs, trie, model, prompts = setup
    ids, mask = pad_batch(prompts[:2], PAD, torch.device("cpu"))
    plain = constrained_beam_search(model, ids, mask, trie, num_beams=20, k=10)
    drop = [[trie.keys.index(plain[0][0][0]), trie.keys.index(plain[0][2][0])], []]
    excluded = constrained_beam_search(model, ids, mask, trie, num_beams=20, k=10, exclude=drop)
    banned = {plain[0][0][0], plain[0][2][0]}
    assert not banned & {key for key, _ in excluded[0]}
    assert [key for key, _ in excluded[0]][:8] == [key for key, _ in plain[0] if key not in banned]
    assert excluded[1] == plain[1]


@pytest.mark.parametrize("workers", [1, 3])
def test_rank_prompts_restores_order_mode_and_threads(setup, workers):
    """Batches decoded by several threads at once rank as one user at a time does; the model's mode and torch's
    thread count come back as they were."""
    _, trie, model, prompts = setup
    model.train()
    batched = rank_prompts(model, prompts, trie, batch_size=2, num_beams=10, k=5, workers=workers)
    assert model.training and torch.get_num_threads() == 1
    model.eval()
    for prompt, ranking in zip(prompts, batched):
        ids, mask = pad_batch([prompt], PAD, torch.device("cpu"))
        single = constrained_beam_search(model, ids, mask, trie, num_beams=10, k=5)[0]
        assert [key for key, _ in ranking] == [key for key, _ in single]
        assert [s for _, s in ranking] == pytest.approx([s for _, s in single], abs=1e-5)


def test_rank_prompts_refuses_bad_worker_counts(setup):
    _, trie, model, prompts = setup
    with pytest.raises(ValueError, match="workers=0"):
        rank_prompts(model, prompts, trie, num_beams=10, k=5, workers=0)


def test_k_larger_than_beams_is_an_error(setup):
    _, trie, model, prompts = setup
    ids, mask = pad_batch(prompts[:1], PAD, torch.device("cpu"))
    with pytest.raises(ValueError, match="beams"):
        constrained_beam_search(model, ids, mask, trie, num_beams=5, k=10)

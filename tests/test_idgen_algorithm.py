"""Algorithm 1, diverse beam search and the IdTable report: tiny random generators, items built to collide."""
from __future__ import annotations

import json

import pytest
import torch
from transformers.modeling_outputs import BaseModelOutput

from genrec.dataset import Item
from genrec.modeling import build_t5
from idgen import IdGenConfig, IdTable, generate
from idgen.algorithm import ClaimBook, generate_ids, normalize
from idgen.dbs import diverse_beam_search
from idgen.generator import Generator


def tiny_generator(tokenizer, seed: int = 0):
    """A 1-layer T5 whose (random) outputs depend on the input: initializer_factor 5 sharpens cross-attention."""
    torch.manual_seed(seed)
    return build_t5(len(tokenizer), d_model=32, d_ff=64, d_kv=8, num_layers=1, num_decoder_layers=1, num_heads=4,
                    initializer_factor=5.0)


@pytest.fixture(scope="module")
def colliding(synth_dataset) -> dict[str, str]:
    """30 items: 6 distinct texts, each shared by 5 items, so identical candidates must be resolved by retries."""
    texts = [it.text for it in list(synth_dataset.items.values())[:6]]
    return {f"item{i:02d}": texts[i % 6] for i in range(30)}


def test_schedule_follows_the_paper_order():
    cfg = IdGenConfig()
    sched = [cfg.schedule(t) for t in range(25)]
    assert [s[0] for s in sched] == [*range(1, 11), *range(1, 11), 1, 2, 3, 4, 5]
    assert {s[1:] for s in sched[:10]} == {(1, 10)}
    assert {s[1:] for s in sched[10:20]} == {(10, 20)}
    assert {s[1:] for s in sched[20:]} == {(20, 30)}


def test_normalize_keeps_lowercase_words():
    assert normalize(" Foo-Bar, baz!!  Qux_1 ") == "foo bar baz qux_1"
    assert normalize("?!  ") == ""
    assert normalize(" A  b ", "strip") == "A b"
    with pytest.raises(ValueError):
        normalize("x", "other")


def test_claims_are_idempotent_and_skip_taken_or_empty():
    book = ClaimBook(["a", "b"], IdGenConfig())
    assert book.claim("a", ["Red Shoe", "blue"]) == "red shoe"
    assert book.claim("a", ["green"]) == "red shoe"
    assert book.claim("b", ["  ..", "red  SHOE!", "blue"]) == "blue"
    assert book.claim("c", ["red shoe", ""]) is None
    assert book.taken == {"red shoe": "a", "blue": "b"}


def test_rounds_resolve_in_sorted_key_order_and_escalate():
    book = ClaimBook(["z", "m", "a"], IdGenConfig(lambda_max=2, max_windows=2), {"m": "Title: Red X", "z": "x"})
    book.propose(0, {"z": ["x"], "m": ["x"]})
    assert book.propose(0, {"z": ["other"], "a": ["x"]}) == {"a": ["x"]}  # repeated proposal for z ignored
    assert book.propose(1, {"a": ["y"]}) == {}  # not this round's
    assert book.resolve(0) == {"m": 1, "z": 1}
    assert book.ids == {"a": "x"}
    assert book.resolve(0) == {"m": 1, "z": 1}  # a resolved round is not redone
    with pytest.raises(RuntimeError, match="no candidates"):
        book.resolve(1)
    for r in (1, 2):
        book.propose(r, {"m": ["x"], "z": ["x"]})
        book.resolve(r)
    book.propose(3, {"m": ["x"], "z": ["w"]})
    assert book.resolve(3) == {}  # m used its 4 tries: last resort, its own title words
    assert book.ids == {"a": "x", "m": "red", "z": "w"} and book.last_resort == {"m": "text"}
    assert book.report()["items_by_level"] == {"first_try": 1, "higher_lambda": 0, "longer_window": 1,
                                               "last_resort_text": 1, "last_resort_counter": 0}


def test_last_resort_counter_when_the_text_is_used_up():
    book = ClaimBook(["a", "b", "c", "d"], IdGenConfig(lambda_max=1, max_windows=1),
                     {**{k: "title: Shoe" for k in "abc"}, "d": "title: Red Shoe"})
    book.propose(0, {k: ["", "Shoe"] for k in "abcd"})
    assert book.resolve(0) == {}
    assert book.ids == {"a": "shoe", "b": "shoe 2", "c": "shoe 3", "d": "red"}
    assert book.last_resort == {"b": "counter", "c": "counter", "d": "text"}
    state = json.loads(json.dumps(book.state()))
    again = ClaimBook(["a", "b", "c", "d"], IdGenConfig(lambda_max=1, max_windows=1))
    again.restore(state)
    assert again.ids == book.ids and again.taken == book.taken and again.report() == book.report()


def test_dbs_group0_is_greedy_and_matches_uncached_decoding(tokenizer, synth_dataset):
    model = tiny_generator(tokenizer)
    gen = Generator(model, tokenizer, 48)
    items = {it.key: it.text for it in list(synth_dataset.items.values())[:3]}
    gen.encode(items)
    enc = gen.batch(list(items))
    out = diverse_beam_search(model, enc, torch.ones(3), torch.ones(3, dtype=torch.long), torch.full((3,), 10))
    for i in range(3):
        cur = torch.zeros(1, 1, dtype=torch.long)
        states = BaseModelOutput(last_hidden_state=enc.states[i:i + 1])
        for step in range(9):
            logits = model(encoder_outputs=states, attention_mask=enc.mask[i:i + 1], decoder_input_ids=cur).logits[0, -1]
            logits[0] = float("-inf")
            if step == 0:
                logits[1] = float("-inf")
            nxt = int(logits.argmax())
            if nxt == 1:
                break
            cur = torch.cat([cur, torch.tensor([[nxt]])], dim=1)
        assert out[i][0] == cur[0, 1:].tolist()


def test_dbs_diversity_and_length_window(tokenizer, synth_dataset):
    model = tiny_generator(tokenizer)
    gen = Generator(model, tokenizer, 48)
    items = {it.key: it.text for it in list(synth_dataset.items.values())[:4]}
    gen.encode(items)
    out = diverse_beam_search(model, gen.batch(list(items)), torch.tensor([1e4, 1e4, 1.0, 1.0]),
                              torch.tensor([1, 1, 10, 10]), torch.tensor([10, 10, 20, 20]))
    for seqs in out[:2]:  # a huge penalty forces 10 different first tokens
        assert len({s[0] for s in seqs}) == 10
        assert all(1 <= len(s) < 10 for s in seqs)
    for seqs in out[2:]:
        assert all(10 <= len(s) < 20 for s in seqs)


def test_colliding_items_get_unique_ids_independent_of_batch_size(tokenizer, colliding, monkeypatch):
    import idgen.generator

    model = tiny_generator(tokenizer)
    encoded = []
    real_encode = idgen.generator.encode
    monkeypatch.setattr(idgen.generator, "encode",
                        lambda m, ids, mask: encoded.append(ids.shape[0]) or real_encode(m, ids, mask))
    cfg = IdGenConfig(batch_size=8, max_text_tokens=48)
    table = generate_ids(model, tokenizer, colliding, cfg, progress=False)
    table.check()
    assert set(table.ids) == set(colliding) and all(table.ids.values())
    assert sum(encoded) == len(colliding)  # each item encoded once, although some retried
    rep = table.report
    assert rep["items"] == 30 and rep["rounds"] >= 2 and rep["second_try_pct"] > 0 and rep["collisions_resolved"] >= 24
    shares = [v for d in rep["accepted_pct_by_window_lambda"].values() for v in d.values()]
    assert sum(shares) == pytest.approx(100.0, abs=5e-5 * len(shares))  # each share is rounded to 4 decimals
    again = generate_ids(model, tokenizer, colliding, IdGenConfig(batch_size=3, max_text_tokens=48), progress=False)
    assert again.ids == table.ids


def test_max_rounds_hands_every_pending_item_to_the_last_resort():
    book = ClaimBook(["a", "b", "c"], IdGenConfig(max_rounds=2), {k: f"Title: {k} shoe" for k in "abc"})
    for r in range(2):
        book.propose(r, {k: ["x"] for k in book.pending})
        book.resolve(r)
    assert not book.pending and book.round == 2
    assert book.ids == {"a": "x", "b": "shoe", "c": "x 2"}


def test_identical_texts_untrained_generator_get_unique_ids_in_bounded_rounds(tokenizer, synth_dataset):
    """300 items with one text (Sports has up to 298 such) and a random generator: every item gets a unique,
    non-empty ID within lambda_max x max_windows rounds."""
    text = next(iter(synth_dataset.items.values())).text
    items = {f"item{i:03d}": text for i in range(300)}
    cfg = IdGenConfig(lambda_max=2, max_windows=1, max_text_tokens=48)
    table = generate_ids(tiny_generator(tokenizer), tokenizer, items, cfg, progress=False)
    ids = list(table.ids.values())
    assert set(table.ids) == set(items) and all(ids) and len(set(ids)) == 300
    rep = table.report
    assert rep["rounds"] <= cfg.max_tries
    assert sum(rep["items_by_level"].values()) == 300 and rep["items_by_level"]["last_resort_counter"] > 0


def test_entry_point_accepts_items_reports_churn_and_round_trips(tokenizer, synth_dataset, tmp_path):
    model = tiny_generator(tokenizer)
    items = dict(list(synth_dataset.items.items())[:12])
    assert all(isinstance(v, Item) for v in items.values())
    first = generate(model, tokenizer, items, {"max_text_tokens": 48, "version": 1}, progress=False)
    other = tiny_generator(tokenizer, seed=1)
    second = generate(other, tokenizer, items, {"max_text_tokens": 48, "version": 2}, previous=first, progress=False)
    assert second.report["churn"] == second.churn(first) > 0
    second.save(tmp_path / "ids.tsv")
    back = IdTable.load(tmp_path / "ids.tsv")
    assert back.ids == second.ids and back.version == 2 and back.report["churn"] == second.report["churn"]
    with pytest.raises(ValueError, match="unknown config key 'idgen.beams'"):
        IdGenConfig.from_dict({"beams": 3})

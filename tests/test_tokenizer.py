"""SentencePiece tokenizer: T5 layout, loads with AutoTokenizer / T5TokenizerFast, byte fallback, compact prompts."""
from __future__ import annotations

import json

import pytest

from idgenrec.cli import main
from genrec.io import DataError
from genrec.prompts import template_words
from tokenization.spm import MIN_VOCAB, SPM_FILE, load_tokenizer, sentinel_ids, train_tokenizer


def test_t5_special_token_layout(tokenizer):
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 2)
    assert tokenizer.convert_ids_to_tokens([0, 1, 2]) == ["<pad>", "</s>", "<unk>"]
    ids = tokenizer("hair mask")["input_ids"]
    assert ids[-1] == 1 and 1 not in ids[:-1]
    assert 400 <= len(tokenizer) <= 800


def test_loads_with_transformers_classes(tokenizer_dir, tokenizer, synth_dataset):
    from transformers import AutoTokenizer, T5TokenizerFast

    text = next(iter(synth_dataset.items.values())).text
    auto = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    t5 = T5TokenizerFast.from_pretrained(str(tokenizer_dir))
    assert auto(text)["input_ids"] == tokenizer(text)["input_ids"] == t5(text)["input_ids"]
    assert t5.pad_token_id == 0 and t5.eos_token_id == 1 and len(t5) == len(tokenizer)
    assert (tokenizer_dir / SPM_FILE).exists()


def test_matches_sentencepiece_model(tokenizer_dir, tokenizer, synth_dataset):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(tokenizer_dir / SPM_FILE))
    for item in synth_dataset.items.values():
        assert tokenizer(item.text, add_special_tokens=False)["input_ids"] == sp.encode(item.text)
    odd = "  Crème brûlée\tSET ★ 中文  "
    assert tokenizer(odd, add_special_tokens=False)["input_ids"] == sp.encode(odd)


def test_byte_fallback_never_gives_unk_and_roundtrips(tokenizer):
    text = "Crème brûlée ★ 中文 emoji 🙂"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids) == text


def test_save_pretrained_copy_keeps_behaviour(tmp_path, tokenizer):
    tokenizer.save_pretrained(str(tmp_path / "copy"))
    copy = load_tokenizer(tmp_path / "copy")
    text = "Crème ★ hair mask"
    assert copy(text)["input_ids"] == tokenizer(text)["input_ids"] and len(copy) == len(tokenizer)


def test_prompts_and_item_text_tokenize_compactly(tokenizer, synth_dataset):
    for words in template_words():
        n_words = len(words.split())
        assert len(tokenizer(words, add_special_tokens=False)["input_ids"]) <= 1.3 * n_words + 2, words
    item = next(iter(synth_dataset.items.values()))
    assert len(tokenizer(item.text)["input_ids"]) <= 1.8 * len(item.text.split())


def test_training_is_deterministic_and_validates(tmp_path, synth_dataset):
    texts = [it.text for it in synth_dataset.items.values()]
    a = train_tokenizer(texts, tmp_path / "a", 500, extra_texts=template_words())
    b = train_tokenizer(texts, tmp_path / "b", 500, extra_texts=template_words())
    assert (tmp_path / "a" / SPM_FILE).read_bytes() == (tmp_path / "b" / SPM_FILE).read_bytes()
    assert a.get_vocab() == b.get_vocab()
    with pytest.raises(ValueError, match="vocab_size 100 too small"):
        train_tokenizer(texts, tmp_path / "c", 100)
    assert MIN_VOCAB > 259
    with pytest.raises(DataError, match="no text"):
        train_tokenizer(["", "  "], tmp_path / "d", 500)
    assert not (tmp_path / "c").exists() and not (tmp_path / "d").exists()


def test_sentinels(tmp_path, synth_dataset):
    tok = train_tokenizer([it.text for it in synth_dataset.items.values()], tmp_path / "s", 500, extra_ids=3)
    ids = tok.convert_tokens_to_ids(["<extra_id_0>", "<extra_id_2>"])
    assert ids == [len(tok) - 1, len(tok) - 3]  # T5's layout: <extra_id_0> is the last id
    assert sentinel_ids(tok) == [len(tok) - 1, len(tok) - 2, len(tok) - 3]
    assert tok("x <extra_id_1>", add_special_tokens=False)["input_ids"][-1] == len(tok) - 2
    assert tok.decode([ids[0], ids[1]], skip_special_tokens=True) == ""
    assert sentinel_ids(load_tokenizer(tmp_path / "s")) == sentinel_ids(tok)  # saved and reloaded alike


def test_load_errors(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="a tokenizer is a folder"):
        load_tokenizer(tmp_path / "file")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="cannot load tokenizer"):
        load_tokenizer(tmp_path / "empty")


def test_cli_train(tmp_path, synth_dir, capsys):
    out = tmp_path / "tok"
    assert main(["tokenizer", "train", str(synth_dir), "--vocab-size", "600", "--out", str(out)]) == 0
    assert "saved to" in capsys.readouterr().out
    cfg = json.loads((out / "tokenizer_config.json").read_text())
    assert cfg["pad_token"] == "<pad>" and cfg["eos_token"] == "</s>"
    assert load_tokenizer(out)("brand")["input_ids"][-1] == 1
    assert main(["tokenizer", "train", str(tmp_path / "none"), "--out", str(out)]) == 2

"""Tag warm-start: targets are title words without field names, numbers or stop words; training lowers the loss."""
from __future__ import annotations

import pytest
import torch

from genrec.cli import main
from genrec.modeling import build_t5
from idgen.warmstart import WarmstartConfig, fields_of, tag_target, warmstart


def test_tag_target_keeps_informative_title_words_in_order():
    text = "title: OPI Nail Lacquer, Simmer and Shimmer, 0.5-Fluid Ounce; brand: OPI; categories: Beauty, Makeup"
    assert fields_of(text)["brand"] == "OPI"
    assert tag_target(text) == "opi nail lacquer simmer shimmer fluid"
    assert tag_target("title: The 3 Best Oil; brand: Cococare; categories: Beauty, Skin") == "best oil cococare"
    assert tag_target("plain words without any field and more") == "plain words any field more"
    assert tag_target("title: 100 % 42") == ""


def test_warmstart_lowers_the_loss(tokenizer, synth_dataset):
    torch.manual_seed(0)
    model = build_t5(len(tokenizer), d_model=32, d_ff=64, d_kv=8, num_layers=1, num_decoder_layers=1, num_heads=4)
    texts = [it.text for it in synth_dataset.items.values()]
    losses = warmstart(model, tokenizer, texts, WarmstartConfig(steps=40, batch_size=16, lr=5e-3, max_text_tokens=48))
    assert len(losses) == 40 and sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5
    with pytest.raises(ValueError, match="no text"):
        warmstart(model, tokenizer, ["title: 1 2 3"], WarmstartConfig(steps=1))


@pytest.mark.slow
def test_cli_warmstart_then_generate(tokenizer_dir, synth_dir, tmp_path, capsys):
    gen = tmp_path / "gen"
    assert main(["idgen", "warmstart", "--data", str(synth_dir), "--tokenizer", str(tokenizer_dir), "--size", "d_model=32",
                 "--size", "d_ff=64", "--size", "d_kv=8", "--size", "num_layers=1", "--size", "num_decoder_layers=1",
                 "--steps", "60", "--batch-size", "16", "--lr", "5e-3", "--max-text-tokens", "48", "--out", str(gen)]) == 0
    out = tmp_path / "ids.tsv"
    assert main(["idgen", "generate", "--model", str(gen), "--tokenizer", str(tokenizer_dir), "--data", str(synth_dir),
                 "--max-text-tokens", "48", "--version", "3", "--out", str(out)]) == 0
    from idgen import IdTable

    table = IdTable.load(out)
    table.check()
    assert table.version == 3 and len(table) == 60 and "second_try_pct" in table.report
    assert "IDs ->" in capsys.readouterr().out
    assert main(["idgen", "generate", "--model", str(gen), "--tokenizer", str(tokenizer_dir), "--data",
                 str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert main(["idgen", "generate", "--model", str(tmp_path / "nogen"), "--tokenizer", str(tokenizer_dir), "--data",
                 str(synth_dir), "--out", str(out)]) == 2

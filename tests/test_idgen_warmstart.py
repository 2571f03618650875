"""Tag warm-start: targets are title words without field names, numbers or stop words; training lowers the loss."""
from __future__ import annotations

import pytest
import torch

from idgenrec.cli import main
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


def test_warmstart_stopped_and_resumed_matches_uninterrupted(tokenizer, synth_dataset, tmp_path, monkeypatch):
    """A stop saves model, optimizer, step, data order and RNG; continuing from them gives the same losses and
    weights as one uninterrupted warm-start. ``minutes`` ends it early."""
    import signal

    from genrec import stop

    def fresh():
        torch.manual_seed(0)
        return build_t5(len(tokenizer), d_model=32, d_ff=64, d_kv=8, num_layers=1, num_decoder_layers=1, num_heads=4)

    texts = [it.text for it in synth_dataset.items.values()]
    cfg = WarmstartConfig(steps=8, batch_size=8, lr=5e-3, max_text_tokens=48)
    ref_model = fresh()
    ref = warmstart(ref_model, tokenizer, texts, cfg)
    calls = []

    def stop_at_the_fourth_step() -> None:
        calls.append(1)
        if len(calls) == 4:
            raise stop.Stop(signal.SIGTERM)

    monkeypatch.setattr(stop, "check", stop_at_the_fourth_step)
    state = tmp_path / "warmstart.state.pt"
    with pytest.raises(stop.Stop) as err:
        warmstart(fresh(), tokenizer, texts, cfg, state)
    assert state.exists() and "step 3" in err.value.saved[0]
    monkeypatch.undo()
    model = fresh()
    assert warmstart(model, tokenizer, texts, cfg, state) == ref
    for a, b in zip(model.state_dict().values(), ref_model.state_dict().values()):
        assert torch.equal(a, b)
    assert warmstart(fresh(), tokenizer, texts, WarmstartConfig(steps=8, minutes=0)) == []

"""The T5 methods of bench/quality.py through the one trainer: fixed ID schemes use their IdTable and never regenerate
it; IDGenRec's alternate training regenerates IDs after each generator stage; every stage stops at its share of the
wall-clock budget, and the benchmark reports the selected model's test metrics."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from idgen.schemes import p5sid_table, title_table
from genrec.dataset import Dataset
from idgen.idtable import IdTable

ROOT = Path(__file__).resolve().parents[1]

TINY_RECIPE = """
seed: 0
model:
  recommender: {d_model: 32, d_ff: 64, d_kv: 8, num_layers: 1, num_decoder_layers: 1, num_heads: 4}
  generator: {d_model: 32, d_ff: 64, d_kv: 8, num_layers: 1, num_decoder_layers: 1, num_heads: 4}
deepspeed: {config: zero0}
train: {max_batch: 32, max_tokens: 4096, threads: 1, log_every: 1000, checkpoint_every: 0}
"""


@pytest.mark.slow
@pytest.mark.parametrize("method,build", [("p5sid", lambda ds: p5sid_table(ds)), ("title", lambda ds: title_table(ds.items))])
def test_fixed_scheme_trains_through_the_trainer(method, build, synth_dir, tokenizer_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    sys.path.insert(0, str(ROOT / "bench"))
    import quality

    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(TINY_RECIPE)
    run, out = tmp_path / "run", tmp_path / f"quality-{method}.json"
    argv = ["--method", method, "--data", str(synth_dir), "--config", str(recipe), "--tokenizer", str(tokenizer_dir),
            "--budget-min", "0.05", "--run-dir", str(run), "--out", str(out)]
    assert quality.main(argv) == 0
    expected = build(Dataset.load(synth_dir))
    assert IdTable.load(run / "idtables" / "round-0.tsv").ids == expected.ids
    assert IdTable.load(run / "export" / "idtable.tsv").ids == expected.ids
    assert sorted(p.name for p in (run / "idtables").glob("*.tsv")) == ["round-0.tsv"]  # never regenerated
    rec = json.loads(out.read_text())
    assert [s["stage"] for s in rec["stages"]] == ["recommender"]
    assert 3.0 <= rec["train_s"] < 3.0 + 5.0  # the stage clock, not the epoch count, ended training
    assert rec["samples_seen"] > 0 and set(quality.METRICS) <= rec["test"].keys()


def test_budget_split_of_alternate_training():
    sys.path.insert(0, str(ROOT / "bench"))
    from quality import t5_budget_overrides

    fixed = t5_budget_overrides("p5sid", 600.0, 3, 0.2)
    assert "ids.scheme=p5sid" in fixed and "train.stage_seconds=600.0" in fixed and "train.rounds=1" in fixed
    alt = t5_budget_overrides("idgenrec-alternate", 600.0, 3, 0.2)
    assert "train.stage_seconds={recommender: 160.0, generator: 60.0}" in alt  # 3 x 160 + 2 x 60 = 600
    with pytest.raises(SystemExit):
        t5_budget_overrides("idgenrec-alternate", 600.0, 1, 0.2)


@pytest.mark.slow
def test_idgenrec_alternate_splits_budget_and_regenerates_ids(synth_dir, tokenizer_dir, tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    sys.path.insert(0, str(ROOT / "bench"))
    import quality
    from genrec.modeling import build_t5
    from idgen.warmstart import WarmstartConfig, warmstart

    generator = build_t5(len(tokenizer), d_model=32, d_ff=64, d_kv=8, num_layers=1, num_decoder_layers=1, num_heads=4)
    warmstart(generator, tokenizer, [it.text for it in Dataset.load(synth_dir).items.values()], WarmstartConfig(steps=40))
    generator.save_pretrained(tmp_path / "generator")
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(TINY_RECIPE)
    run, out = tmp_path / "run", tmp_path / "quality-idgenrec-alternate.json"
    argv = ["--method", "idgenrec-alternate", "--data", str(synth_dir), "--config", str(recipe), "--tokenizer",
            str(tokenizer_dir), "--generator", str(tmp_path / "generator"), "--budget-min", "0.05", "--rounds", "2",
            "--generator-share", "0.5", "--run-dir", str(run), "--out", str(out)]
    assert quality.main(argv) == 0
    rec = json.loads(out.read_text())
    assert [(s["round"], s["stage"]) for s in rec["stages"]] == [(0, "recommender"), (1, "generator"), (1, "recommender")]
    budgets = {"recommender": 0.75, "generator": 1.5}  # 3 s: half to the one generator stage, half to 2 rec stages
    for stage in rec["stages"]:
        assert budgets[stage["stage"]] <= stage["seconds"] < budgets[stage["stage"]] + 4.0
    assert sorted(p.name for p in (run / "idtables").glob("*.tsv")) == ["round-0.tsv", "round-1.tsv"]
    assert "churn" in rec["stages"][1] and set(quality.METRICS) <= rec["test"].keys()

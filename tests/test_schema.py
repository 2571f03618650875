"""The recipe schema: every recipe validates, unknown keys and wrong types fail early and name the fix."""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from genrec.config import CONFIG_DIR, load_config
from genrec.schema import ConfigError, type_name, type_ok
from pretrain.recipe import RECIPE, checked_config

ROOT = Path(__file__).resolve().parent.parent
RECIPES = sorted(CONFIG_DIR.glob("*.yaml")) + [ROOT / "bench" / "quality.yaml"]


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_recipe_validates(path):
    RECIPE.validate(load_config(path))


def test_the_overrides_of_demo_and_benchmarks_validate():
    from bench.quality import T5_METHODS, t5_budget_overrides
    from bench.zeroshot_fusion import pretrain_overrides
    from idgenrec.demo import SIZES

    checked_config("demo", SIZES["quick"].overrides)
    for method in T5_METHODS:
        checked_config(ROOT / "bench" / "quality.yaml", [*t5_budget_overrides(method, 60.0, 3, 0.25), "train.threads=1"])
    fusion = argparse.Namespace(size="tiny", seed=0, vocab=2000, warmstart_steps=50, overrides=[])
    checked_config("foundation", pretrain_overrides(fusion))


def test_every_key_has_a_type_and_a_doc():
    undocumented = []

    def walk(section, where):
        for name, spec in section.keys.items():
            path = f"{where}.{name}" if where else name
            if hasattr(spec, "keys") and not hasattr(spec, "type"):
                walk(spec, path)
            elif not spec.doc:
                undocumented.append(path)

    walk(RECIPE, "")
    assert not undocumented


@pytest.mark.parametrize("override, message", [
    ("train.nonexistent=3", "unknown config key 'train.nonexistent'; valid keys of train: rounds,"),
    ("train.roudns=3", "unknown config key 'train.roudns'; did you mean train.rounds?"),
    ("train.lr=0.1", "did you mean warmstart.lr, optim.recommender.lr, optim.generator.lr?"),
    ("train.rounds=abc", "config key 'train.rounds': expected int, got 'abc' (str)"),
    ("train.rounds=true", "expected int, got True"),
    ("eval.ids=titles", "expected one of auto, generate, idtable"),
    ("optim.generator=1e-3", "'optim.generator' is a section"),
    ("train.order=[recommender, generatr]", "expected list of one of generator, recommender"),
])
def test_bad_keys_and_values_fail_with_the_key_and_the_fix(override, message):
    with pytest.raises(ConfigError, match=message.replace("?", r"\?").replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[")):
        checked_config("standard", [override])


def test_free_form_sections_and_unions_accept_what_the_code_reads():
    cfg = checked_config("standard", ["model.generator.init=/some/folder", "model.recommender={d_model: 64}",
                                      "train.stage_seconds={recommender: 60, generator: 12.5}",
                                      "train.stage_seconds=90", "optim.recommender.lr=1", "eval.workers=null"])
    assert cfg["model"]["generator"]["init"] == "/some/folder"
    assert type_ok(3, float) and not type_ok(True, int) and not type_ok("1", int)
    assert type_name(int | None) == "int or null"


def test_config_show_prints_the_resolved_recipe_with_docs():
    text = RECIPE.render(checked_config("demo", ["train.rounds=7"]))
    assert "  rounds: 7" in text and "rounds of the stages in order" in text
    assert "  vocab_size: 800" in text  # from demo.yaml
    line = next(ln for ln in text.splitlines() if ln.strip().startswith("zero_stage:"))  # set by no recipe
    assert "[default]" in line and "int or null" in line


def test_finetune_rejects_a_bad_value_before_any_work(tmp_path, synth_dir):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "idgenrec.cli", "finetune", "--config", "demo", "--data", str(synth_dir),
                           "--out", str(out), "train.rounds=abc"], capture_output=True, text=True, timeout=300,
                          cwd=ROOT)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "idgenrec: error: config key 'train.rounds': expected int, got 'abc' (str)"
    assert not out.exists()  # no tokenizer trained, nothing written


def test_zeroshot_and_recommend_check_their_overrides_before_loading_anything(tmp_path, capsys):
    from idgenrec.cli import main

    missing = str(tmp_path / "missing")
    assert main(["zeroshot", "--checkpoint", missing, "--dataset", missing, "eval.beams=3"]) == 2
    assert "unknown config key 'eval.beams'; did you mean eval.num_beams?" in capsys.readouterr().err
    assert main(["recommend", "--checkpoint", missing, "--data", missing, "--history", "a", "--set", "eval.num_beams=x"]) == 2
    assert "config key 'eval.num_beams': expected int, got 'x' (str)" in capsys.readouterr().err

"""``idgenrec pretrain``: the build-corpus form, argument errors, and (slow) a 2-process CPU pretrain on synthetic
multi-domain data followed by zero-shot evaluation on a held-out synthetic domain."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from idgenrec.cli import main
from genrec.dataset import Dataset
from genrec.synth import synthesize
from pretrain.corpus import load_corpus_info
from pretrain.shards import read_manifest

TINY = '{"d_model": 32, "d_ff": 64, "d_kv": 8, "num_layers": 1, "num_decoder_layers": 1, "num_heads": 4}'


@pytest.fixture(scope="module")
def domain_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("domains")
    specs = {"shop": (70, 36, 1, "retail"), "trail": (70, 36, 2, "outdoor"), "held": (40, 30, 3, "retail")}
    out = {}
    for name, (users, items, seed, platform) in specs.items():
        synthesize(users, items, seed, platform).save(root / name)
        out[name] = root / name
    return out


def test_build_corpus_command(domain_dirs, tmp_path, capsys):
    rc = main(["pretrain", "build-corpus", "--dataset", f"shop={domain_dirs['shop']}", "--dataset",
               f"trail={domain_dirs['trail']}", "--max-users", "50", "--seed", "2", "--samples-per-shard", "64",
               "--out", str(tmp_path / "corpus")])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "Fusion" in printed and "shards" in printed
    info = load_corpus_info(tmp_path / "corpus")
    assert info["sources"] == {"shop": str(domain_dirs["shop"]), "trail": str(domain_dirs["trail"])}
    assert info["overall"]["users"] == 100 and info["seed"] == 2
    assert read_manifest(tmp_path / "corpus" / "shards")["samples"] == info["train_samples"]


def test_build_corpus_argument_errors(domain_dirs, tmp_path, capsys):
    with pytest.raises(SystemExit, match="not NAME=DIR"):
        main(["pretrain", "build-corpus", "--dataset", str(domain_dirs["shop"]), "--out", str(tmp_path / "c")])
    with pytest.raises(SystemExit, match="given twice"):
        main(["pretrain", "build-corpus", "--dataset", f"a={domain_dirs['shop']}", "--dataset",
              f"a={domain_dirs['trail']}", "--out", str(tmp_path / "c")])
    assert main(["pretrain", "build-corpus", "--dataset", f"a={tmp_path / 'missing'}", "--out", str(tmp_path / "c")]) == 2
    assert "dataset folder not found" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="give --corpus"):
        main(["pretrain", "--out", str(tmp_path / "run")])
    assert not (tmp_path / "c").exists()


def test_training_needs_a_built_corpus(tmp_path, capsys):
    assert main(["pretrain", "--corpus", str(tmp_path), "--out", str(tmp_path / "run")]) == 2
    assert "no corpus.json" in capsys.readouterr().err


@pytest.mark.slow
def test_two_process_pretrain_then_zero_shot_on_held_out_domain(domain_dirs, tmp_path):
    """From scratch through ``idgenrec pretrain`` (tokenizer and generator warm-start included) under torchrun,
    then the pretrained generator names the held-out domain's items and the recommender ranks them."""
    from zeroshot.harness import dataset_ids, evaluate, load_checkpoint

    corpus, run = tmp_path / "corpus", tmp_path / "run"
    assert main(["pretrain", "build-corpus", "--dataset", f"shop={domain_dirs['shop']}", "--dataset",
                 f"trail={domain_dirs['trail']}", "--max-users", "60", "--samples-per-shard", "64",
                 "--out", str(corpus)]) == 0
    merged, held = Dataset.load(corpus), Dataset.load(domain_dirs["held"], "held")
    assert not set(held.items) & set(merged.items) and not set(held.users) & set(merged.users)

    run.mkdir()
    (run / "notes.txt").write_text("mine")  # a file pretraining does not write: --overwrite keeps it
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "idgenrec.cli", "pretrain", "--corpus", str(corpus), "--out", str(run), "--overwrite",
           f"model.recommender={TINY}", f"model.generator={TINY}", "tokenizer.vocab_size=400",
           "pretrain.valid_users=16", "warmstart={steps: 120, batch_size: 32, lr: 3.0e-3, max_text_tokens: 48}",
           "train.max_batch=32", "train.chunk_size=128", "train.threads=1", "train.checkpoint_every=2",
           "optim.generator={lr: 1.0e-3}", "data.workers=1", "data.shuffle_buffer=64", "prompt.max_length=128",
           "idgen.batch_size=128", "idgen.max_text_tokens=48", "eval.num_beams=10"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2 and [(s["round"], s["stage"]) for s in summary["stages"]] == [
        (0, "recommender"), (1, "generator"), (1, "recommender")]
    assert (run / "tokenizer").is_dir() and (run / "warmstart" / "config.json").exists()
    assert (run / "notes.txt").read_text() == "mine"
    for name in ("recommender", "generator", "tokenizer"):
        assert (run / "export" / name).is_dir()

    ckpt = load_checkpoint(run / "export")
    cfg = {"idgen": {"batch_size": 128, "max_text_tokens": 48}, "eval": {"num_beams": 10, "batch_size": 64}}
    table = dataset_ids(ckpt, held, cfg)  # the pretrained generator names items it never saw
    assert set(table.ids) == set(held.items)
    table.check()
    result = evaluate(ckpt.recommender, ckpt.tokenizer, table, held, "test", cfg, progress=False)
    assert result["users"] == len(held.users)
    assert 0.0 <= result["NDCG@10"] <= result["HR@10"] <= 1.0

"""Output folders are never destroyed by surprise: every command that writes a folder refuses a non-empty folder it
did not create (one line, exit 2, naming --overwrite); --overwrite and reruns replace only what the command writes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from idgenrec.cli import main
from genrec.io import MANIFEST, DataError, OutputDir, check_output_file

ROOT = Path(__file__).resolve().parents[1]
TINY = {"d_model": 32, "d_ff": 64, "d_kv": 8, "num_heads": 4, "num_layers": 1, "num_decoder_layers": 1}


def foreign(folder: Path) -> Path:
    """A folder holding files no idgenrec command wrote: a note and another dataset's folder."""
    (folder / "otherdataset").mkdir(parents=True)
    (folder / "otherdataset" / "user_sequence.txt").write_text("u1 i1 i2\n")
    (folder / "notes.txt").write_text("my notes\n")
    return folder


def foreign_intact(folder: Path) -> bool:
    return ((folder / "notes.txt").read_text() == "my notes\n"
            and (folder / "otherdataset" / "user_sequence.txt").read_text() == "u1 i1 i2\n")


def refused(capsys, argv: list[str]) -> str:
    """Run the CLI, expect the one-line refusal, return it."""
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--overwrite" in err and err.startswith("idgenrec: error: "), err
    return err


# ---- the helper --------------------------------------------------------------------------------------------------

def test_staged_write_replaces_own_entries_and_keeps_foreign(tmp_path):
    out = foreign(tmp_path / "out")
    with pytest.raises(DataError, match=r"out: folder is not empty and was not written by 'idgenrec x'; pass --overwrite"):
        OutputDir(out, "x")
    with OutputDir(out, "x", overwrite=True).write() as tmp:
        (tmp / "a.txt").write_text("1")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "f").write_text("1")
    assert json.loads((out / MANIFEST).read_text())["files"] == ["a.txt", "sub"]
    with OutputDir(out, "x").write() as tmp:  # its own folder: no --overwrite needed; 'a.txt' is no longer written
        (tmp / "sub").mkdir()
        (tmp / "sub" / "g").write_text("2")
    assert sorted(p.name for p in out.iterdir()) == sorted([MANIFEST, "notes.txt", "otherdataset", "sub"])
    assert [p.name for p in (out / "sub").iterdir()] == ["g"] and foreign_intact(out)
    with pytest.raises(RuntimeError):  # a failed write changes nothing
        with OutputDir(out, "x").write() as tmp:
            (tmp / "sub").mkdir()
            raise RuntimeError
    assert [p.name for p in (out / "sub").iterdir()] == ["g"] and not any(p.name.startswith(".idgenrec-s") for p in out.iterdir())
    with pytest.raises(DataError, match="not written by 'idgenrec y'"):  # another command's folder is not its own
        OutputDir(out, "y")


def test_manifest_names_only_entries_of_its_own_folder(tmp_path):
    out, outside = tmp_path / "out", tmp_path / "precious"
    outside.write_text("keep")
    out.mkdir()
    (out / MANIFEST).write_text(json.dumps({"command": "x", "files": [str(outside), "../precious", "..", "a"]}))
    (out / "a").write_text("old")
    with OutputDir(out, "x").write() as tmp:
        (tmp / "b").write_text("new")
    assert outside.read_text() == "keep" and sorted(os.listdir(out)) == sorted([MANIFEST, "b"])


def test_new_folder_is_renamed_into_place_whole(tmp_path):
    with pytest.raises(ValueError):
        with OutputDir(tmp_path / "new", "x").write() as tmp:
            (tmp / "a").write_text("1")
            raise ValueError
    assert not (tmp_path / "new").exists() and os.listdir(tmp_path) == []
    with OutputDir(tmp_path / "new", "x").write() as tmp:
        (tmp / "a").write_text("1")
    assert sorted(os.listdir(tmp_path / "new")) == sorted(["a", MANIFEST]) and os.listdir(tmp_path) == ["new"]


def test_dot_and_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = OutputDir(".", "x")
    assert out.path == tmp_path
    with out.write() as tmp:
        (tmp / "a").write_text("1")
    assert (tmp_path / "a").exists()
    (tmp_path / "f").write_text("")
    with pytest.raises(DataError, match="f: exists and is not a folder"):
        OutputDir("f", "x")


def test_run_folders_need_resume_or_overwrite(tmp_path):
    run = foreign(tmp_path / "run")
    with pytest.raises(DataError, match="not written by 'idgenrec finetune'"):
        OutputDir(run, "finetune", resume=False)
    OutputDir(run, "finetune", overwrite=True, resume=False).claim(["checkpoints", "summary.json"])
    (run / "checkpoints").mkdir()
    (run / "summary.json").write_text("{}")
    with pytest.raises(DataError, match="holds a previous 'idgenrec finetune' run; pass --resume to continue it or --overwrite"):
        OutputDir(run, "finetune", resume=False)
    OutputDir(run, "finetune", resume=True).claim(["checkpoints", "summary.json"])  # resuming keeps everything
    assert (run / "checkpoints").exists() and (run / "summary.json").exists()
    OutputDir(run, "finetune", overwrite=True, resume=False).claim(["checkpoints", "summary.json"])
    assert sorted(p.name for p in run.iterdir()) == sorted([MANIFEST, "notes.txt", "otherdataset"]) and foreign_intact(run)
    with pytest.raises(DataError, match="--resume and --overwrite contradict"):
        OutputDir(run, "finetune", overwrite=True, resume=True)


def test_output_file_check(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("mine\n")
    with pytest.raises(DataError, match="notes.txt: exists and was not written by 'idgenrec g'; pass --overwrite"):
        check_output_file(notes, "g", False, "# header")
    check_output_file(notes, "g", True, "# header")
    (tmp_path / "t.tsv").write_text("# header version=0\n")
    check_output_file(tmp_path / "t.tsv", "g", False, "# header")


# ---- every command -----------------------------------------------------------------------------------------------

def test_data_prepare_and_synth(tmp_path, synth_dir, capsys, monkeypatch):
    out = foreign(tmp_path / "parent")
    prepare = ["data", "prepare", "idgenrec", str(synth_dir), "--out", str(out)]
    assert "was not written by 'idgenrec data prepare'" in refused(capsys, prepare)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "otherdataset"]
    assert main([*prepare, "--overwrite"]) == 0
    assert (out / "user_sequence.txt").exists() and foreign_intact(out)
    assert main(prepare) == 0 and foreign_intact(out)  # its own folder now
    synth = ["data", "synth", "--users", "10", "--items", "8", "--out", str(out)]
    assert "was not written by 'idgenrec data synth'" in refused(capsys, synth)
    assert main([*synth, "--overwrite"]) == 0 and foreign_intact(out)
    assert json.loads((out / "stats.json").read_text())["users"] == 10
    monkeypatch.chdir(out)  # `--out .` names the dataset after the folder
    assert main(["data", "prepare", "idgenrec", str(synth_dir), "--out", ".", "--overwrite"]) == 0
    assert json.loads((out / "stats.json").read_text())["name"] == "parent" and foreign_intact(out)


def test_tokenizer_train(tmp_path, synth_dir, capsys):
    out = foreign(tmp_path / "tok")
    argv = ["tokenizer", "train", str(synth_dir), "--vocab-size", "600", "--out", str(out)]
    refused(capsys, argv)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "otherdataset"]
    assert main([*argv, "--overwrite"]) == 0
    assert (out / "tokenizer_config.json").exists() and foreign_intact(out)


def test_idgen_warmstart_and_generate(tmp_path, synth_dir, tokenizer_dir, capsys):
    out = foreign(tmp_path / "gen")
    argv = ["idgen", "warmstart", "--data", str(synth_dir), "--tokenizer", str(tokenizer_dir), "--steps", "1",
            "--batch-size", "4", "--max-items", "8", "--max-text-tokens", "16",
            *[f"--size={k}={v}" for k, v in TINY.items()], "--out", str(out)]
    refused(capsys, argv)
    assert main([*argv, "--overwrite"]) == 0
    assert (out / "config.json").exists() and foreign_intact(out)
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    refused(capsys, ["idgen", "generate", "--model", str(out), "--tokenizer", str(tokenizer_dir), "--data", str(synth_dir),
                     "--out", str(notes)])
    assert notes.read_text() == "my notes\n"


def test_pretrain_build_corpus_and_run(tmp_path, synth_dir, capsys):
    out = foreign(tmp_path / "corpus")
    argv = ["pretrain", "build-corpus", "--dataset", f"shop={synth_dir}", "--samples-per-shard", "500", "--out", str(out)]
    refused(capsys, argv)
    assert main([*argv, "--overwrite"]) == 0
    assert (out / "corpus.json").exists() and (out / "shards").is_dir() and foreign_intact(out)
    run = foreign(tmp_path / "run")
    refused(capsys, ["pretrain", "--corpus", str(out), "--out", str(run)])
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt", "otherdataset"]


def test_finetune_and_demo_refuse_before_any_work(tmp_path, synth_dir, capsys):
    run = foreign(tmp_path / "run")
    refused(capsys, ["finetune", "--data", str(synth_dir), "--out", str(run)])
    refused(capsys, ["demo", "--quick", "--out", str(run)])
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt", "otherdataset"]


@pytest.mark.slow
def test_finetune_overwrite_keeps_foreign_files(tmp_path, synth_dir, tokenizer_dir):
    cfg = {"seed": 0, "tokenizer": {"path": str(tokenizer_dir)}, "model": {"recommender": TINY, "generator": TINY},
           "prompt": {"max_length": 64}, "ids": {"scheme": "title"}, "idgen": {"max_text_tokens": 16},
           "train": {"rounds": 1, "rec_epochs": 1, "max_steps_per_epoch": 2, "max_batch": 16, "threads": 1},
           "deepspeed": {"config": "zero2"}, "eval": {"num_beams": 10, "batch_size": 64}}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    run = foreign(tmp_path / "run")
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "stale").write_text("from an older run")
    argv = [sys.executable, "-m", "idgenrec.cli", "finetune", "--config", str(tmp_path / "cfg.yaml"), "--data",
            str(synth_dir), "--out", str(run), "--overwrite"]
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert (run / "summary.json").exists() and not (run / "checkpoints" / "stale").exists() and foreign_intact(run)

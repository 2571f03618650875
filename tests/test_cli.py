"""The console script's surface: --resume / --resume=require, help text on every option, --version."""
from __future__ import annotations

import argparse

import pytest

from genrec.cli import build_parser, main


@pytest.mark.parametrize("command", [["finetune", "--data", "D"], ["pretrain", "--corpus", "C"]])
def test_resume_modes_leave_the_overrides_alone(command):
    parser = build_parser()
    plain = parser.parse_args([*command, "--out", "RUN", "--resume", "train.rounds=1"])
    assert plain.resume == "auto" and "train.rounds=1" in (getattr(plain, "overrides", None) or plain.words)
    assert parser.parse_args([*command, "--out", "RUN", "--resume=require"]).resume == "require"
    assert parser.parse_args([*command, "--out", "RUN"]).resume is None


def test_resume_require_without_a_checkpoint_fails_before_any_work(tmp_path, synth_dir, capsys):
    run = tmp_path / "typo"
    code = main(["finetune", "--config", "demo", "--data", str(synth_dir), "--out", str(run), "--resume=require"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert err.endswith("--resume=require: no checkpoint to resume from") and str(run) in err
    assert not run.exists()

"""The console script's surface: --resume / --resume=require, help text on every option, --version."""
from __future__ import annotations

import argparse
import logging
import warnings

import pytest

from idgenrec.cli import build_parser, main


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


def test_every_option_has_help_text():
    def walk(parser: argparse.ArgumentParser, path: str):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from walk(sub, f"{path} {name}")
            elif not action.help and not isinstance(action, argparse._HelpAction):
                yield f"{path} {'/'.join(action.option_strings) or action.dest}"

    assert list(walk(build_parser(), "idgenrec")) == []


def test_version(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.startswith("idgenrec ")


def test_third_party_output_is_silenced_unless_verbose(monkeypatch, capsys):
    from genrec import quiet

    monkeypatch.delenv(quiet.VERBOSE_ENV, raising=False)
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    deepspeed_logger = logging.getLogger("DeepSpeed")
    monkeypatch.setattr(deepspeed_logger, "level", deepspeed_logger.level)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        quiet.setup(False)
        warnings.warn("`torch.distributed.all_gather_into_tensor` is deprecated. Please use ...", FutureWarning)
        warnings.warn("a warning of our own", UserWarning)
    assert [str(w.message) for w in seen] == ["a warning of our own"]
    with quiet.deepspeed_init():
        print("DeepSpeed deepspeed.ops.comm.deepspeed_shm_comm_op built successfully")
    assert capsys.readouterr().out == "" and deepspeed_logger.level == logging.ERROR
    assert quiet.ray_logging_level() == logging.ERROR

    quiet.setup(True)  # --verbose, inherited by child processes through the environment
    with quiet.deepspeed_init():
        print("shown")
    assert capsys.readouterr().out == "shown\n" and quiet.ray_logging_level() == logging.INFO

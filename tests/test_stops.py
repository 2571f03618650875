"""Clean stops (genrec.stop): SIGTERM in every phase of a small finetune run, SIGINT and SIGUSR1 in one phase each,
end it within seconds with one line, no traceback and exit code 128 + signal; ``--resume`` then finishes the run.
Also: the demo recipe's header command runs from nothing (tokenizer, warm-start, Algorithm 1, training, test next
to popularity)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from genrec import stop

ROOT = Path(__file__).resolve().parents[1]
TINY = "{d_model: 32, d_ff: 64, d_kv: 8, num_heads: 4, num_layers: 1, num_decoder_layers: 1}"
SMALL = [f"model.recommender={TINY}", f"model.generator={TINY}", "train.rounds=1", "train.rec_epochs=1",
         "train.threads=1", "train.max_tokens=3000", "train.max_batch=16", "eval.num_beams=10", "eval.batch_size=32",
         "idgen.max_windows=1", "idgen.batch_size=16", "warmstart.steps=30", "warmstart.max_text_tokens=48",
         "idgen.max_text_tokens=48", "prompt.max_length=128"]
# phase -> (text in the output once the phase runs, overrides that make it last long enough to be signalled)
PHASES = {
    "warm-start": ("tag warm-start", ["warmstart.steps=100000", "warmstart.minutes=0.3"]),
    "ids": ("ID generation", ["warmstart.steps=0", "idgen.max_windows=2"]),
    "training": ("recommender epoch 0", ["train.max_batch=2"]),
    "evaluation": ("phase ids v0", ["train.initial_eval=true", "eval.num_beams=20", "eval.batch_size=4"]),
}
SIGNALS = {"SIGTERM": (signal.SIGTERM, 143), "SIGINT": (signal.SIGINT, 130), "SIGUSR1": (signal.SIGUSR1, 138)}


def start(args: list[str]) -> tuple[subprocess.Popen, list[str]]:
    """``idgenrec ARGS`` in a subprocess; its output (stdout and stderr) collects in the returned list."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu"}
    proc = subprocess.Popen([sys.executable, "-m", "idgenrec.cli", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    chunks: list[str] = []

    def read() -> None:
        for block in iter(lambda: proc.stdout.read1(4096), b""):
            chunks.append(block.decode("utf-8", "replace"))

    threading.Thread(target=read, daemon=True).start()
    return proc, chunks


def finetune_args(synth_dir: Path, tokenizer_dir: Path, out: Path, extra: list[str]) -> list[str]:
    return ["finetune", "--config", "demo", "--data", str(synth_dir), "--out", str(out),
            f"tokenizer.path={tokenizer_dir}", *SMALL, *extra]


# Every phase is stopped by SIGTERM (what SLURM and Kubernetes send) and resumed; SIGINT and SIGUSR1 share its
# handler (genrec.stop), so each is sent in one phase only, without a resume: the set stays within CI's budget.
STOPS = [(phase, "SIGTERM") for phase in PHASES] + [("warm-start", "SIGINT"), ("training", "SIGUSR1")]


@pytest.mark.slow
@pytest.mark.parametrize("phase,sig", STOPS, ids=[f"{phase}-{sig}" for phase, sig in STOPS])
def test_stop_in_every_phase_then_resume(phase, sig, synth_dir, tokenizer_dir, tmp_path):
    marker, extra = PHASES[phase]
    stop_then_resume(finetune_args(synth_dir, tokenizer_dir, tmp_path / "run", extra), marker, sig, phase,
                     resume=sig == "SIGTERM")


@pytest.mark.slow
def test_stop_during_ray_id_generation_then_resume(synth_dir, tokenizer_dir, tmp_path):
    """The registry's log (RUN/idgen/v0) keeps the claims; the resumed run replays it."""
    args = finetune_args(synth_dir, tokenizer_dir, tmp_path / "run", ["warmstart.steps=0", "idgen.max_windows=2",
                                                                      "idgen.workers=2"])
    stop_then_resume(args, "ID generation (2 Ray workers)", "SIGTERM", "Ray ID generation", resume=True)
    assert (tmp_path / "run" / "idgen" / "v0" / "registry.jsonl").exists()


def stop_then_resume(args: list[str], marker: str, sig: str, phase: str, resume: bool) -> None:
    """Start ``idgenrec ARGS``, send ``sig`` once ``marker`` is in its output; check the exit; then ``--resume``."""
    signum, code = SIGNALS[sig]
    out_dir = Path(args[args.index("--out") + 1])
    proc, out = start(args)
    deadline = time.monotonic() + 300
    while marker not in "".join(out):
        assert proc.poll() is None, f"ended before {phase}:\n" + "".join(out)[-4000:]
        assert time.monotonic() < deadline, f"{phase} never started"
        time.sleep(0.05)
    proc.send_signal(signum)
    sent = time.monotonic()
    proc.wait(timeout=120)
    took = time.monotonic() - sent
    text = "".join(out)
    assert proc.returncode == code, text[-4000:]
    assert took < 30, f"{phase}: {took:.0f}s from {sig} to exit"
    lines = [ln for ln in text.replace("\r", "\n").splitlines() if "stopped by a signal" in ln]
    assert len(lines) == 1 and sig in lines[0] and "--resume" in lines[0], text[-4000:]
    assert "Traceback" not in text, text[-4000:]
    if not resume:
        return
    proc, out = start([*args, "--resume"])
    proc.wait(timeout=600)
    text = "".join(out)
    assert proc.returncode == 0, text[-4000:]
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["test"]["users"] > 0 and "popularity" in text


@pytest.mark.parametrize("sig", list(SIGNALS))
def test_tokenizer_training_stops_within_seconds(sig, tmp_path):
    """SentencePiece trains in a child process, so a stop during its (blocking) training ends it promptly."""
    import random

    from tokenization.spm import train_tokenizer

    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 9))) for _ in range(5000)]
    texts = [" ".join(rng.choice(words) for _ in range(30)) for _ in range(20000)]
    before = {s: signal.getsignal(s) for s in stop.SIGNALS}
    stop.install()
    timer = threading.Timer(3.0, os.kill, (os.getpid(), SIGNALS[sig][0]))
    try:
        timer.start()
        t0 = time.monotonic()
        with pytest.raises(stop.Stop) as err:
            train_tokenizer(texts, tmp_path / "tok", 4000)
        assert time.monotonic() - t0 < 3.0 + 10, "the stop took too long"
        assert err.value.signum == SIGNALS[sig][0] and not (tmp_path / "tok").exists()
    finally:
        timer.cancel()
        stop.reset()
        for s, handler in before.items():
            signal.signal(s, handler)
    import multiprocessing

    assert not [c for c in multiprocessing.active_children() if c.name.startswith("Process")]


@pytest.mark.slow
def test_demo_header_command_runs_from_nothing(synth_dir, tmp_path):
    """``idgenrec finetune --config demo --data DIR --out RUN`` (configs/demo.yaml's header): a tokenizer, a tag
    warm-start, IDs for every item (it used to fail: '117 items found no unique ID'), training, test table."""
    out = tmp_path / "run"
    proc, chunks = start(["finetune", "--config", "demo", "--data", str(synth_dir), "--out", str(out),
                          "train.rounds=2", "train.rec_epochs=1", "train.threads=1", "warmstart.steps=60"])
    proc.wait(timeout=900)
    text = "".join(chunks)
    assert proc.returncode == 0, text[-4000:]
    assert "popularity" in text and "idgenrec" in text
    summary = json.loads((out / "summary.json").read_text())
    phases = [name for name, _ in summary["phase_seconds"]]
    assert phases[:3] == ["tokenizer", "warm-start", "ids v0"] and "test" in phases
    assert (out / "warmstart" / "config.json").exists() and not (out / "warmstart.state.pt").exists()

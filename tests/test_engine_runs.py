"""End-to-end trainer runs on CPU: 2-process ZeRO-2 and ZeRO-3 alternating schedule with synchronised weights, exact resume
after SIGKILL, and a recommender that beats its untrained self on validation."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TINY = {"d_model": 32, "d_ff": 64, "d_kv": 8, "num_heads": 4, "num_layers": 1, "num_decoder_layers": 1}


def write_config(tmp_path: Path, tokenizer_dir: Path, **sections) -> Path:
    cfg = {
        "seed": 0,
        "tokenizer": {"path": str(tokenizer_dir)},
        "model": {"recommender": TINY, "generator": TINY},
        "prompt": {"max_length": 128},
        "idgen": {"max_text_tokens": 48, "batch_size": 64},
        "warmstart": {"steps": 0},  # these runs test the trainer, from a random generator
        "train": {"rounds": 2, "rec_epochs": 1, "id_epochs": 1, "max_tokens": 3000, "max_batch": 32, "threads": 1,
                  "checkpoint_every": 0, "log_every": 5},
        "optim": {"recommender": {"lr": 3e-3, "warmup_steps": 5}, "generator": {"lr": 1e-3}},
        "deepspeed": {"config": "zero2"},
        "eval": {"num_beams": 10, "batch_size": 128},
    }
    for name, values in sections.items():
        cfg[name] = {**cfg.get(name, {}), **values}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def torchrun(nproc: int, args: list[str], **kw) -> subprocess.Popen:
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), *args]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def finish(proc: subprocess.Popen, timeout: float = 900) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-12000:]
    return out


def kill_tree(pid: int) -> None:
    """SIGKILL torchrun and its workers (which torchrun starts in sessions of their own)."""
    import psutil

    parent = psutil.Process(pid)
    for p in [*parent.children(recursive=True), parent]:
        p.send_signal(signal.SIGKILL)


def losses(run: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in map(json.loads, (run / "losses.jsonl").read_text().splitlines())}


@pytest.mark.slow
@pytest.mark.parametrize("zero,user_ids", [("zero2", False), ("zero3", True)], ids=["zero2", "zero3-user-ids"])
def test_two_process_alternating_schedule_syncs_weights(tmp_path, synth_dir, tokenizer_dir, zero, user_ids):
    """ZeRO-2, and ZeRO-3 (partitioned parameters, gathered for decoding, ID generation and export) with user IDs
    in the prompts, named again after the generator stage by the gathered generator. The generator stage's batches
    are cut by a small item-text budget (train.generator_max_tokens), so ranks may hold different numbers of them."""
    cfg = write_config(tmp_path, tokenizer_dir, train={"max_steps_per_epoch": 4, "generator_max_tokens": 400},
                       deepspeed={"config": zero},
                       prompt={"user_ids": user_ids})
    run = tmp_path / "run"
    finish(torchrun(2, ["tests/engine_worker.py", str(cfg), str(synth_dir), str(run)]))
    ranks = [json.loads((run / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0]["weights"] == ranks[1]["weights"]  # both engines identical on both ranks
    stages = [(s["round"], s["stage"]) for s in ranks[0]["summary"]["stages"]]
    assert stages == [(0, "recommender"), (1, "generator"), (1, "recommender")]
    assert "churn" in ranks[0]["summary"]["stages"][1]
    assert (run / "idtables" / "round-0.tsv").exists() and (run / "idtables" / "round-1.tsv").exists()
    for part in ("recommender/model.safetensors", "generator/model.safetensors", "tokenizer", "idtable.tsv", "config.yaml"):
        assert (run / "export" / part).exists(), part
    assert set(ranks[0]["summary"]["test"]) >= {"HR@5", "HR@10", "NDCG@5", "NDCG@10"}
    named = sorted(p.name for p in (run / "idtables").glob("users-*.tsv"))
    if user_ids:  # every training prompt's user ID, named by round 0's and by round 1's generator
        from genrec.dataset import Dataset
        from genrec.splits import leave_one_out
        from idgen.idtable import IdTable
        from idgen.userids import history_key

        assert named == ["users-train-round-0.tsv", "users-train-round-1.tsv"]
        table = IdTable.load(run / "idtables" / named[0])
        assert set(table.ids) == {history_key(s.history) for s in leave_one_out(Dataset.load(synth_dir), "train")}
        assert all(t.strip() for t in table.ids.values())
    else:
        assert named == []


@pytest.mark.slow
def test_resume_after_sigkill_continues_exactly(tmp_path, synth_dir, tokenizer_dir):
    """With user IDs in the prompts: the checkpoint keeps the stage's user IDs, so the resumed steps read the same."""
    cfg = write_config(tmp_path, tokenizer_dir, ids={"scheme": "title"}, prompt={"user_ids": True},
                       train={"rounds": 1, "rec_epochs": 3, "max_steps_per_epoch": 10, "checkpoint_every": 7})
    args = ["-m", "idgenrec.cli", "finetune", "--config", str(cfg), "--data", str(synth_dir), "--out"]
    full = tmp_path / "full"
    assert f"resume: no checkpoint in {full / 'checkpoints'}, starting fresh" in finish(torchrun(2, [*args, str(full), "--resume"]))
    expected = losses(full)
    assert sorted(expected) == list(range(1, 31))

    run = tmp_path / "killed"
    proc = torchrun(2, [*args, str(run)])
    state = run / "checkpoints" / "latest" / "state.json"
    deadline = time.time() + 240
    while time.time() < deadline:
        if state.exists() and (run / "losses.jsonl").exists() and max(losses(run), default=0) >= 9:
            break
        time.sleep(0.05)
    kill_tree(proc.pid)
    proc.communicate()
    assert not (run / "summary.json").exists(), "the run finished before it could be killed"
    ckpt_step = json.loads(state.read_text())["global_step"]
    assert ckpt_step == 7 and max(losses(run)) > ckpt_step  # killed mid-stage, after steps the checkpoint lacks

    log = finish(torchrun(2, [*args, str(run), "--resume=require"]))
    assert f"resume: continuing {run} from its checkpoint at step 7 (round 0, recommender stage, epoch 0)" in log
    resumed = losses(run)
    assert resumed == expected  # every step after the checkpoint reproduces the uninterrupted run's loss


@pytest.mark.slow
def test_training_beats_untrained_on_validation(tmp_path, tokenizer_dir):
    import random

    from genrec.dataset import Dataset
    from genrec.synth import synthesize

    # Every user walks the same fixed cycle of the items from a random start, so each held-out target is a function of
    # the last history item that the other users' training samples teach. On the synthetic retail data the signal
    # (brand and category affinity) is too weak for 6 short epochs of a tiny model: its HR@10 went 0.093 -> 0.153 on
    # one CPU and 0.082 -> 0.082 on another while the training loss fell from 3.6 to 0.5 nats per token.
    # Here: 0.12 -> 0.665.
    base = synthesize(600, 100, 0)
    order, rng = sorted(base.items), random.Random(0)
    walks = {}
    for user, seq in base.users.items():
        start = rng.randrange(len(order))
        walks[user] = [order[(start + i) % len(order)] for i in range(len(seq))]
    data = tmp_path / "data"
    Dataset(items=base.items, users=walks, name="cycle").save(data)
    model = {"d_model": 64, "d_ff": 128, "d_kv": 16, "num_heads": 4, "num_layers": 2, "num_decoder_layers": 2}
    cfg = write_config(tmp_path, tokenizer_dir, model={"recommender": model, "generator": TINY}, ids={"scheme": "title"},
                       train={"rounds": 1, "rec_epochs": 6, "initial_eval": True, "max_tokens": 4000, "max_batch": 32,
                              "precision": "fp32"},
                       optim={"recommender": {"lr": 3e-3, "warmup_steps": 10, "schedule": "constant"}})
    run = tmp_path / "run"
    finish(torchrun(1, ["tests/engine_worker.py", str(cfg), str(data), str(run)]))
    summary = json.loads((run / "summary.json").read_text())
    before = summary["initial_valid"]["HR@10"]
    after = summary["stages"][-1]["valid"]["HR@10"]
    assert after >= before + 0.3 and after >= 3 * before, (before, after)

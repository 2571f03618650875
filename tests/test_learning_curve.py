"""bench/learning_curve.py and bench/gpu_quality.sh on tiny generated data: validation points at fixed intervals of
training time, the best point scored on test (length penalties 0 and 1), a resumed finished run that reports the same
curve, SASRec-CE's curve, the plot of all of them; the GPU script end to end with a tiny model on the CPU."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = "{d_model: 32, d_ff: 64, d_kv: 8, num_heads: 4, num_layers: 1, num_decoder_layers: 1}"
RECIPE = f"""
seed: 0
model: {{recommender: {TINY}, generator: {TINY}}}
deepspeed: {{config: zero0}}
optim: {{recommender: {{lr: 3.0e-3, warmup_steps: 5, schedule: linear, min_lr_ratio: 0.1}}}}
train: {{max_batch: 32, max_tokens: 4096, log_every: 1000, checkpoint_every: 0, precision: auto}}
eval: {{num_beams: 10, batch_size: 128, test_length_penalties: [0.0, 1.0]}}
"""


@pytest.mark.slow
def test_learning_curve_points_test_resume_and_plot(synth_dir, tokenizer_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    sys.path.insert(0, str(ROOT / "bench"))
    import learning_curve

    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(RECIPE)
    out, run = tmp_path / "results", tmp_path / "run"
    argv = ["--method", "p5sid", "--data", str(synth_dir), "--config", str(recipe), "--tokenizer", str(tokenizer_dir),
            "--minutes", "0.1", "--every", "0.03", "--valid-users", "50", "--run-dir", str(run), "--out-dir", str(out)]
    assert learning_curve.main(argv) == 0
    path = out / "learning-curve-retail-p5sid.json"
    rec = json.loads(path.read_text())
    assert {"method", "command", "machine", "train_minutes", "points", "test"} <= rec.keys()
    assert rec["method"] == "p5sid" and rec["command"].startswith("python3 bench/learning_curve.py --method p5sid")
    points = rec["points"]
    assert len(points) >= 3  # every 0.03 minutes of a 0.1-minute budget, and the stage end
    assert all(set(learning_curve.METRICS) <= p["valid"].keys() for p in points)
    minutes = [p["minutes"] for p in points]
    assert minutes == sorted(minutes) and 0.1 <= minutes[-1] < 0.1 + 0.05
    # at fixed intervals: the first step after each multiple of 0.03 minutes, then the stage end
    assert [int(m / 0.03) for m in minutes[:-1]] == list(range(1, len(minutes)))
    samples = [p["samples"] for p in points]
    assert samples == sorted(samples) and samples[0] > 0 and all(p["loss"] > 0 for p in points)
    assert len({p["step"] for p in points}) == len(points)  # a stage end right after a point is not validated twice
    assert rec["test_users"] == 120 and set(rec["test_by_length_penalty"]) == {"0.0", "1.0"}
    assert rec["test"] == rec["test_by_length_penalty"]["1.0"]  # eval.length_penalty's test is not decoded twice
    assert set(rec["popularity"]) == {"valid", "test"}

    # a finished run resumed: nothing left to train, the same curve and the same best checkpoint's test numbers
    assert learning_curve.main([*argv, "--resume"]) == 0
    again = json.loads(path.read_text())
    assert again["points"] == points and again["test"] == rec["test"]

    assert learning_curve.main(["--method", "sasrec-ce", "--data", str(synth_dir), "--minutes", "0.02",
                                "--valid-users", "50", "--out-dir", str(out), "hidden=16", "batch_size=64"]) == 0
    sasrec = json.loads((out / "learning-curve-retail-sasrec-ce.json").read_text())
    assert sasrec["points"] and sasrec["test_users"] == 120
    png = out / "learning-curve-retail.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_gpu_quality_script_runs_with_a_tiny_model_on_cpu(synth_dir, tokenizer_dir, tmp_path):
    """bench/gpu_quality.sh with its recipe, a tiny recommender size and seconds of training: it prints test HR@10
    and the MFU, and writes them to JSON."""
    launcher = {"MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK"}  # set by in-process trainer tests
    env = {**{k: v for k, v in os.environ.items() if k not in launcher}, "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(ROOT), "PYTHON": sys.executable,
           "DATA": str(synth_dir), "MINUTES": "0.05", "EVERY": "0.02", "OUT_DIR": str(tmp_path / "out"),
           "RUN_DIR": str(tmp_path / "run"), "DATASET_NAME": "retail"}
    overrides = [f"model.recommender={TINY}", "train.max_batch=32", "train.max_tokens=4096", "eval.batch_size=128",
                 "eval.num_beams=10", "optim.recommender.warmup_steps=5"]
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu_quality.sh"), "--valid-users", "50",
                           "--tokenizer", str(tokenizer_dir), *overrides],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "test HR@10" in proc.stdout and "MFU" in proc.stdout
    rec = json.loads((tmp_path / "out" / "learning-curve-retail-p5sid-gpu.json").read_text())
    assert rec["config"]["train"]["precision"] == "bf16" and rec["config"]["model"]["recommender"]["d_model"] == 32
    assert 0 < rec["mfu"]["mfu"] < 1 and rec["mfu"]["flops_per_token"] > 0 and "HR@10" in rec["test"]


@pytest.mark.slow
def test_idgenrec_curve_then_generator_lr_sweep(synth_dir, synth_dataset, tokenizer, tokenizer_dir, tmp_path, monkeypatch):
    """IDGenRec's alternate schedule through the learning-curve bench, then bench/generator_lr.py from its export:
    per generator lr the churn and validation after the generator stage and after a recommender stage, and rec-only."""
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    sys.path.insert(0, str(ROOT / "bench"))
    import generator_lr
    import learning_curve
    from genrec.modeling import build_t5
    from idgen.warmstart import WarmstartConfig, warmstart

    generator = build_t5(len(tokenizer), d_model=32, d_ff=64, d_kv=8, num_layers=1, num_decoder_layers=1, num_heads=4)
    warmstart(generator, tokenizer, [it.text for it in synth_dataset.items.values()], WarmstartConfig(steps=40))
    generator.save_pretrained(tmp_path / "generator")
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(RECIPE)
    run = tmp_path / "run"
    assert learning_curve.main(["--method", "idgenrec", "--data", str(synth_dir), "--config", str(recipe),
                                "--tokenizer", str(tokenizer_dir), "--generator", str(tmp_path / "generator"),
                                "--minutes", "0.06", "--every", "0.05", "--rounds", "2", "--valid-users", "50",
                                "--run-dir", str(run), "--out-dir", str(tmp_path / "out"), "--tag", "tiny"]) == 0
    rec = json.loads((tmp_path / "out" / "learning-curve-retail-idgenrec-tiny.json").read_text())
    stages = [p["stage"] for p in rec["points"]]
    assert "generator" in stages and stages[-1] == "recommender"  # every stage ends with a point
    assert "churn" in rec["stages"][1]

    out = tmp_path / "generator_lr.json"
    assert generator_lr.main(["--from", str(run / "export"), "--data", str(synth_dir), "--config", str(recipe),
                              "--lrs", "1e-8", "1e-2", "--gen-minutes", "0.02", "--rec-minutes", "0.02",
                              "--valid-users", "50", "--run-dir", str(tmp_path / "sweep"), "--out", str(out)]) == 0
    sweep = json.loads(out.read_text())
    assert [r["lr"] for r in sweep["rows"]] == [1e-8, 1e-2, None]
    assert "NDCG@10" in sweep["before"]
    tiny, large, rec_only = sweep["rows"]
    assert 0.0 <= tiny["churn"] <= large["churn"] <= 1.0
    for r in (tiny, large):
        assert "NDCG@10" in r["valid_after_generator"] and "NDCG@10" in r["valid_after_recommender"]
    assert "churn" not in rec_only and "NDCG@10" in rec_only["valid_after_recommender"]

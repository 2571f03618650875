"""Learning curve (issue 13): train one method for a long budget, score a fixed sample of validation users at fixed
intervals of training time, then every test user with the best checkpoint.

Methods: ``idgenrec`` (the recipe's alternate schedule: ``--rounds`` rounds, generator stages sharing
``--generator-share`` of the budget), ``p5sid`` (fixed P5-SID IDs, one recommender stage) and ``sasrec-ce``
(``genrec.baselines.sasrec``, full cross-entropy). The T5 methods run in the one trainer
(``pretrain.engine.Trainer``): the stage clock (``train.stage_seconds``) spends the budget, ``train.valid_every_seconds``
makes the points (``eval.valid_users``: the same 2,000 users for every method, also at stage ends), the trainer
exports the best point on ``train.select_metric`` and scores it on test (``eval.test_length_penalties``: once per
length penalty). The run folder's checkpoints make a T5 run resumable: kill it and start the same command with
``--resume``. SASRec is validated after every epoch (about 1.5 minutes of training on Beauty on one core) and
restarts from scratch.

Writes ``OUT_DIR/learning-curve-<dataset>-<method>[-<tag>].json``::

    {"method", "command", "machine", "train_minutes", "points": [{"minutes", "samples", "loss", "valid": {...}}],
     "test": {...}, "popularity": {"valid", "test"}, ...}

and redraws ``OUT_DIR/learning-curve-<dataset>.png`` from every such JSON in the folder: valid HR@10 against
training minutes, with popularity and SASRec-CE (its best validation point) on the same users as horizontal lines.

    python bench/learning_curve.py --method idgenrec --minutes 120 --every 10 --tokenizer TOK --generator GEN
    python bench/learning_curve.py --method idgenrec --init LM_EXPORT --tag lm-init --minutes 120   # issue 15
    python bench/learning_curve.py --method p5sid --minutes 120 --resume
    python bench/learning_curve.py --method sasrec-ce --minutes 15 lr=0.002
    python bench/learning_curve.py --plot-only
"""
from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality import DEFAULT_DATA, ROOT, machine, t5_budget_overrides  # noqa: E402

METHODS = {"idgenrec": "idgenrec-alternate", "p5sid": "p5sid", "sasrec-ce": "sasrec"}
METRICS = ("HR@5", "HR@10", "NDCG@5", "NDCG@10")
DEFAULT_CONFIG = ROOT / "bench" / "learning_curve.yaml"
DEFAULT_OUT = ROOT / "docs" / "results"


def metrics_only(result: dict[str, Any]) -> dict[str, float]:
    return {k: float(result[k]) for k in METRICS if k in result}


def tokenizer_for(args, scheme: str, run_dir: Path, dataset, cfg: dict[str, Any]):
    """``--init``'s or ``--tokenizer``'s; a fixed-ID method may train one on the item text (kept in the run folder)."""
    from genrec.prompts import template_words
    from tokenization.spm import load_tokenizer, train_tokenizer

    path = (cfg.get("tokenizer") or {}).get("path") or args.tokenizer
    if path:
        return load_tokenizer(path)
    if scheme == "idgenrec":
        raise SystemExit("--method idgenrec needs --tokenizer and --generator, or --init (an export folder)")
    folder = run_dir / "tokenizer"
    if not (folder / "tokenizer_config.json").exists():
        train_tokenizer([it.text for it in dataset.items.values()], folder, args.vocab_size, extra_texts=template_words())
    return load_tokenizer(folder)


def run_t5(args, dataset, run_dir: Path) -> dict[str, Any]:
    from finetune.cli import apply_init
    from genrec.config import load_config
    from pretrain.engine import Trainer
    from pretrain.sources import LeaveOneOutSource

    quality_method = METHODS[args.method]
    scheme = "idgenrec" if args.method == "idgenrec" else args.method
    overrides = [*t5_budget_overrides(quality_method, args.minutes * 60, args.rounds, args.generator_share),
                 f"train.valid_every_seconds={args.every * 60}", f"eval.valid_users={args.valid_users}",
                 f"train.threads={args.threads}", f"train.initial_eval={str(args.initial_eval).lower()}"]
    if args.generator and not args.init:
        overrides.append(f"model.generator.init={args.generator}")
    cfg = load_config(args.config, [*overrides, *args.overrides])
    if args.init:
        cfg["init"] = str(args.init)
        apply_init(cfg)  # recommender, generator and tokenizer from the export folder
    elif scheme == "idgenrec" and not ((cfg.get("model") or {}).get("generator") or {}).get("init"):
        raise SystemExit("--method idgenrec needs --generator (a warm-started generator folder) or --init")
    tokenizer = tokenizer_for(args, scheme, run_dir, dataset, cfg)
    source = LeaveOneOutSource(dataset, max_history=int((cfg.get("data") or {}).get("max_history", 20)))
    trainer = Trainer(cfg, source, run_dir, tokenizer=tokenizer, eval_dataset=dataset, resume=args.resume)
    summary = trainer.fit()  # a stop signal raises genrec.stop.Stop after a checkpoint: rerun with --resume
    points = []
    if summary.get("initial_valid"):
        points.append({"minutes": 0.0, "samples": 0, "loss": None, "valid": metrics_only(summary["initial_valid"])})
    for p in summary["points"]:
        points.append({"minutes": p["seconds"] / 60, "samples": p["samples"], "loss": p["loss"],
                       "valid": metrics_only(p["valid"]), "round": p["round"], "stage": p["stage"], "step": p["step"]})
    result: dict[str, Any] = {
        "train_minutes": summary["train_seconds"] / 60, "samples": summary["train_samples"], "points": points,
        "test": metrics_only(summary["test"]), "test_users": summary["test"].get("users"),
        "best": summary["best"], "stages": summary["stages"], "config": cfg, "run_dir": str(run_dir),
    }
    if summary.get("test_by_length_penalty"):
        result["test_by_length_penalty"] = {k: metrics_only(v) for k, v in summary["test_by_length_penalty"].items()}
    if args.peak_flops:
        result["mfu"] = model_flops_utilisation(trainer, summary, args.peak_flops)
    return result


def model_flops_utilisation(trainer, summary: dict[str, Any], peak: float) -> dict[str, float]:
    """Recommender-stage model FLOPs utilisation: FLOPs per token (forward + backward, counted by
    ``torch.utils.flop_counter`` on real batches; padding is computed, so it counts) x tokens/s / ``peak``."""
    from train_throughput import flops_per_token

    rec = [s for s in summary["stages"] if s["stage"] == "recommender"]
    tokens_per_s = sum(s["tokens_per_s"] for s in rec) / len(rec)
    fpt = flops_per_token(trainer, "recommender")
    world = int(summary.get("world_size", 1))  # tokens/s are summed over the processes
    return {"flops_per_token": fpt, "tokens_per_s": tokens_per_s, "peak_flops": peak, "devices": world,
            "mfu": fpt * tokens_per_s / (peak * world)}


def run_sasrec(args, dataset) -> dict[str, Any]:
    from genrec.baselines.sasrec import SASRecConfig, SASRecRecommender
    from genrec.config import load_config
    from genrec.metrics import hr_ndcg
    from genrec.splits import leave_one_out
    from zeroshot.harness import eval_samples, eval_settings

    settings = load_config(None, args.overrides)
    cfg = SASRecConfig(**settings)
    model = SASRecRecommender(list(dataset.items), cfg)
    valid = eval_samples(dataset, "valid", eval_settings({"eval": {"max_history": cfg.max_len, "valid_users": args.valid_users}}))
    fit = model.fit(dataset, valid, hr_ndcg, budget_s=args.minutes * 60)
    test = leave_one_out(dataset, "test", cfg.max_len)
    points = [{"minutes": h["train_s"] / 60, "samples": h["samples_seen"], "loss": h["loss"], "valid": metrics_only(h["valid"]),
               "epoch": h["epoch"]} for h in fit["history"]]
    return {"train_minutes": fit["train_s"] / 60, "samples": fit["samples_seen"], "points": points,
            "test": metrics_only(hr_ndcg(model.recommend(test, 10), [s.target for s in test])), "test_users": len(test),
            "best_epoch": fit["best_epoch"], "config": fit["config"]}


def popularity_levels(dataset, valid_users: int) -> dict[str, dict[str, float]]:
    from zeroshot.harness import popularity_metrics

    return {"valid": metrics_only(popularity_metrics(dataset, "valid", {"eval": {"valid_users": valid_users}})),
            "test": metrics_only(popularity_metrics(dataset, "test"))}


def plot(out_dir: Path, dataset_name: str) -> Path | None:
    """``learning-curve-<dataset>.png`` from every ``learning-curve-<dataset>-*.json`` in ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from genrec.io import atomic_write

    records = [json.loads(p.read_text()) for p in sorted(out_dir.glob(f"learning-curve-{dataset_name}-*.json"))]
    if not records:
        return None
    fig, ax = plt.subplots(figsize=(8, 5))
    for rec in records:
        pts = rec["points"]
        ax.plot([p["minutes"] for p in pts], [p["valid"]["HR@10"] for p in pts], marker="o", markersize=3, label=rec["name"])
    pop = next((r["popularity"]["valid"]["HR@10"] for r in records if r.get("popularity")), None)
    if pop is not None:
        ax.axhline(pop, color="grey", linestyle="--", label=f"popularity ({pop:.4f})")
    sasrec = [r for r in records if r["method"] == "sasrec-ce"]
    if sasrec:
        level = max(p["valid"]["HR@10"] for p in sasrec[0]["points"])
        ax.axhline(level, color="black", linestyle=":", label=f"SASRec-CE best ({level:.4f})")
    users = records[0].get("valid_users")
    ax.set_xlabel("training minutes")
    ax.set_ylabel(f"valid HR@10 ({users} users)" if users else "valid HR@10")
    ax.set_title(f"{dataset_name}: validation HR@10 against training time")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    out = out_dir / f"learning-curve-{dataset_name}.png"
    with atomic_write(out, "wb") as f:
        fig.savefig(f, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--method", choices=sorted(METHODS))
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--minutes", type=float, default=120.0, help="training budget (validation and ID generation excluded)")
    p.add_argument("--every", type=float, default=10.0, help="minutes of training between validation points (T5 methods)")
    p.add_argument("--valid-users", type=int, default=2000, help="the fixed validation sample (0: all users)")
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="trainer recipe of the T5 methods")
    p.add_argument("--tokenizer", type=Path, help="tokenizer folder (default for p5sid: one trained on the item text)")
    p.add_argument("--vocab-size", type=int, default=8000, help="pieces of a tokenizer trained here")
    p.add_argument("--generator", type=Path, help="warm-started ID generator (idgenrec)")
    p.add_argument("--init", type=Path, help="an export folder (recommender/, generator/, tokenizer/) to start from, "
                                              "e.g. an LM-pretrained model")
    p.add_argument("--tag", help="suffix of the result name, e.g. lm-init -> learning-curve-beauty-idgenrec-lm-init.json")
    p.add_argument("--rounds", type=int, default=3, help="alternate training rounds (idgenrec)")
    p.add_argument("--generator-share", type=float, default=0.2, help="budget share of the generator stages (idgenrec)")
    p.add_argument("--initial-eval", action="store_true", help="also a point at minute 0 (the untrained model)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--peak-flops", type=float, help="report model FLOPs utilisation against this peak (H200 dense bf16: 989e12)")
    p.add_argument("--run-dir", type=Path, help="run folder (default bench/out/runs/learning-curve-NAME)")
    p.add_argument("--resume", action="store_true", help="continue a T5 run from its last checkpoint")
    p.add_argument("--out-dir", type=Path, default=DEFAULT_OUT)
    p.add_argument("--plot-only", action="store_true", help="only redraw the PNG from the JSON files in --out-dir")
    p.add_argument("--dataset-name", help="name in the file names (default: the data folder's name, lowercased)")
    p.add_argument("overrides", nargs="*", help="key=value: trainer config overrides, or SASRec hyper-parameters")
    args = p.parse_args(argv)
    name = args.dataset_name or args.data.name.lower()
    if args.plot_only:
        print(plot(args.out_dir, name))
        return 0
    if not args.method:
        p.error("--method is required (unless --plot-only)")

    import torch

    from genrec.dataset import Dataset
    from genrec.io import write_json

    torch.set_num_threads(args.threads)
    run_name = args.method + (f"-{args.tag}" if args.tag else "")
    started = datetime.datetime.now(datetime.timezone.utc)
    t0 = time.perf_counter()
    dataset = Dataset.load(args.data)
    if args.method == "sasrec-ce":
        result = run_sasrec(args, dataset)
    else:
        result = run_t5(args, dataset, args.run_dir or ROOT / "bench" / "out" / "runs" / f"learning-curve-{name}-{run_name}")
    record = {
        "method": args.method, "name": run_name,
        "command": "python3 bench/learning_curve.py " + shlex.join(sys.argv[1:] if argv is None else argv),
        "machine": machine(), "dataset": str(args.data), "date": started.isoformat(timespec="seconds"),
        "wall_minutes": (time.perf_counter() - t0) / 60, "budget_minutes": args.minutes, "valid_users": args.valid_users,
        **result, "popularity": popularity_levels(dataset, args.valid_users),
    }
    out = args.out_dir / f"learning-curve-{name}-{run_name}.json"
    write_json(out, record, default=str)
    figure = plot(args.out_dir, name)
    best = max(record["points"], key=lambda q: q["valid"].get("NDCG@10", 0.0)) if record["points"] else None
    print(f"{run_name}: {record['train_minutes']:.1f} training minutes, {len(record['points'])} points"
          + (f", best valid HR@10 {best['valid']['HR@10']:.4f} at {best['minutes']:.1f} min" if best else "")
          + f"; test HR@10 {record['test'].get('HR@10', float('nan')):.4f} ({record['test_users']} users), "
          f"popularity {record['popularity']['test']['HR@10']:.4f}")
    if "mfu" in record:
        m = record["mfu"]
        print(f"MFU {m['mfu']:.1%}: {m['flops_per_token'] / 1e6:.1f} MFLOP/token x {m['tokens_per_s']:.0f} tokens/s "
              f"/ {m['peak_flops']:.3g} FLOP/s")
    print(f"-> {out}" + (f", {figure}" if figure else ""))
    return 0


if __name__ == "__main__":
    from genrec import stop

    try:
        sys.exit(main())
    except stop.Stop as e:  # one line, as idgenrec's CLI prints it: the checkpoint is saved, rerun with --resume
        sys.exit(stop.report(e, "learning_curve"))

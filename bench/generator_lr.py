"""Do generator stages matter? (issue 13): ID churn and validation NDCG@10 after one generator stage, for several
generator learning rates, all starting from the same trained recommender, generator and IdTable (an export folder).

For each learning rate the one trainer (``pretrain.engine.Trainer``) runs a generator stage of ``--gen-minutes`` (soft
IDs, the recommender frozen), regenerates the IDs (Algorithm 1) and validates the frozen recommender with them; with
``--rec-minutes`` a recommender stage on the new IDs follows and is validated too, and a ``rec-only`` row continues
the recommender for the same time on the unchanged IDs (the comparison the paper's Table 5 makes). Validation uses
the fixed sample of ``--valid-users`` users; test is not scored (``train.final_test: false``).

    python bench/generator_lr.py --from RUN/export --lrs 1e-8 1e-6 1e-5 1e-4 --gen-minutes 5 --rec-minutes 10 \
        --out bench/out/generator_lr.json [key=value ...]
"""
from __future__ import annotations

import argparse
import datetime
import shlex
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality import DEFAULT_DATA, ROOT, machine  # noqa: E402


def run_one(args, dataset, lr: float | None, run_dir: Path, initial_eval: bool) -> dict[str, Any]:
    """One generator stage at ``lr`` (then a recommender stage when ``--rec-minutes``); ``lr`` None: rec-only."""
    from finetune.cli import apply_init
    from genrec.config import load_config
    from pretrain.engine import Trainer
    from pretrain.sources import LeaveOneOutSource
    from tokenization.spm import load_tokenizer

    order = ([] if lr is None else ["generator"]) + (["recommender"] if args.rec_minutes else [])
    overrides = [
        "ids.scheme=idgenrec", "ids.regenerate=true", f"ids.init={args.init / 'idtable.tsv'}", "train.rounds=1",
        f"train.order=[{','.join(order)}]", "train.skip_first_generator=false", "train.id_epochs=100000",
        "train.rec_epochs=100000", "train.final_test=false", f"train.initial_eval={str(initial_eval).lower()}",
        f"train.stage_seconds={{generator: {args.gen_minutes * 60}, recommender: {args.rec_minutes * 60}}}",
        f"eval.valid_users={args.valid_users}", f"train.threads={args.threads}",
    ]
    if lr is not None:
        overrides.append(f"optim.generator.lr={lr}")
    cfg = load_config(args.config, [*overrides, *args.overrides])
    cfg["init"] = str(args.init)
    apply_init(cfg)
    tokenizer = load_tokenizer(cfg["tokenizer"]["path"])
    source = LeaveOneOutSource(dataset, max_history=int((cfg.get("data") or {}).get("max_history", 20)))
    summary = Trainer(cfg, source, run_dir, tokenizer=tokenizer, eval_dataset=dataset).fit()
    row: dict[str, Any] = {"lr": lr, "run_dir": str(run_dir)}
    if summary.get("initial_valid"):
        row["initial_valid"] = summary["initial_valid"]
    for stage in summary["stages"]:
        if stage["stage"] == "generator":
            row.update(churn=stage["churn"], valid_after_generator=stage["valid"], generator_seconds=stage["seconds"],
                       generator_samples=stage["samples"])
        else:
            row.update(valid_after_recommender=stage["valid"], recommender_seconds=stage["seconds"])
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--from", dest="init", type=Path, required=True,
                   help="export folder of a trained run (recommender/, generator/, tokenizer/, idtable.tsv)")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--lrs", type=float, nargs="+", default=[1e-8, 1e-6, 1e-5, 1e-4], help="generator learning rates")
    p.add_argument("--gen-minutes", type=float, default=5.0, help="training minutes of each generator stage")
    p.add_argument("--rec-minutes", type=float, default=0.0, help="a recommender stage after it (and a rec-only row)")
    p.add_argument("--valid-users", type=int, default=2000)
    p.add_argument("--config", default=str(ROOT / "bench" / "learning_curve.yaml"), help="trainer recipe")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--run-dir", type=Path, default=ROOT / "bench" / "out" / "runs" / "generator-lr")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "generator_lr.json")
    p.add_argument("overrides", nargs="*", help="key=value trainer config overrides")
    args = p.parse_args(argv)

    import torch

    from genrec.dataset import Dataset
    from genrec.io import write_json

    torch.set_num_threads(args.threads)
    started = datetime.datetime.now(datetime.timezone.utc)
    t0 = time.perf_counter()
    dataset = Dataset.load(args.data)
    rows = []
    for i, lr in enumerate(args.lrs):
        rows.append(run_one(args, dataset, lr, args.run_dir / f"lr-{lr:g}", initial_eval=i == 0))
    if args.rec_minutes:
        rows.append(run_one(args, dataset, None, args.run_dir / "rec-only", initial_eval=False))
    record = {
        "command": "python3 bench/generator_lr.py " + shlex.join(sys.argv[1:] if argv is None else argv),
        "machine": machine(), "dataset": str(args.data), "from": str(args.init),
        "date": started.isoformat(timespec="seconds"), "wall_minutes": (time.perf_counter() - t0) / 60,
        "generator_minutes": args.gen_minutes, "recommender_minutes": args.rec_minutes, "valid_users": args.valid_users,
        "before": rows[0].get("initial_valid"), "rows": rows,
    }
    write_json(args.out, record)
    before = record["before"] or {}
    print(f"before: valid NDCG@10 {before.get('NDCG@10', float('nan')):.4f}")
    print(f"{'generator lr':>12} {'churn':>7} {'NDCG@10 after gen':>18} {'after rec':>10}")
    for r in rows:
        lr = "rec-only" if r["lr"] is None else f"{r['lr']:g}"
        churn = f"{r['churn']:7.1%}" if "churn" in r else f"{'-':>7}"
        gen = f"{r['valid_after_generator']['NDCG@10']:18.4f}" if "valid_after_generator" in r else f"{'-':>18}"
        rec = f"{r['valid_after_recommender']['NDCG@10']:10.4f}" if "valid_after_recommender" in r else f"{'-':>10}"
        print(f"{lr:>12} {churn} {gen} {rec}")
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

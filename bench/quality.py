"""Quality benchmark (issue 8): every method on the same leave-one-out splits, all items ranked, same metrics.

Methods: ``popularity``, ``sasrec`` (trained here), and the T5 methods trained by the one trainer
(``pretrain.engine.Trainer``) and scored by the one harness (``zeroshot.harness.evaluate``): ``p5sid`` and
``title`` (fixed ID schemes from ``idgen.schemes``), ``idgenrec-rec-only`` (warm-start IDs,
recommender stage only: the paper's Table 5 ablation) and ``idgenrec-alternate`` (alternate training).

Every trained method gets the same wall-clock *training* budget (``--budget-min``; validation passes are not
counted), is selected on validation, and is scored once on test. One JSON per method records the exact command,
machine, date, wall time and samples seen; the table printed at the end collects every ``quality-*.json`` in the
output folder next to the paper's Table 4 numbers.

    nice -n 19 python3 bench/quality.py --method sasrec --budget-min 15
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "derived" / "Beauty"
DEFAULT_OUT = ROOT / "bench" / "out"
METHODS = ("popularity", "sasrec", "p5sid", "title", "idgenrec-rec-only", "idgenrec-alternate")
T5_METHODS = {"p5sid": ("p5sid", False), "title": ("title", False),
              "idgenrec-rec-only": ("idgenrec", False), "idgenrec-alternate": ("idgenrec", True)}
METRICS = ("HR@5", "NDCG@5", "HR@10", "NDCG@10")
# Table 4 of the paper (Amazon Beauty, full ranking): HR@5, NDCG@5, HR@10, NDCG@10.
PAPER = {
    "IDGenRec (paper)": (0.0618, 0.0486, 0.0814, 0.0541),
    "SASRec (paper)": (0.0387, 0.0249, 0.0605, 0.0318),
    "P5-SID (paper)": (0.0430, 0.0288, 0.0602, 0.0368),
}


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), since the same benchmark runs 2x apart on an AVX-512 Intel and an AVX2
    AMD core; the platform's name where there is no such file."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    import torch

    from genrec import dist
    from genrec.precision import cpu_has_fast_bf16

    dev = dist.device()
    return {
        "host_cpus": os.cpu_count(),
        "cpu": cpu_model(),
        "cpu_bf16": cpu_has_fast_bf16(),
        "torch_threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu ({platform.processor() or platform.machine()})",
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def run_popularity(args, dataset) -> dict[str, Any]:
    from genrec.splits import leave_one_out
    from zeroshot.harness import popularity_metrics

    t0 = time.perf_counter()
    samples_seen = len(leave_one_out(dataset, "train", args.max_history))
    cfg = {"eval": {"max_history": args.max_history, "exclude_history": args.exclude_history}}
    result: dict[str, Any] = {"samples_seen": samples_seen, "config": {"exclude_history": args.exclude_history}}
    for split in ("valid", "test"):
        result[split] = popularity_metrics(dataset, split, cfg)
    result["train_s"] = time.perf_counter() - t0
    return result


def run_sasrec(args, dataset) -> dict[str, Any]:
    from genrec.baselines.sasrec import SASRecConfig, SASRecRecommender
    from genrec.config import load_config
    from genrec.metrics import hr_ndcg
    from genrec.splits import leave_one_out

    settings = load_config(None, args.overrides)
    unknown = set(settings) - set(SASRecConfig.__dataclass_fields__)
    if unknown:
        raise SystemExit(f"unknown SASRec settings {sorted(unknown)} (known: {sorted(SASRecConfig.__dataclass_fields__)})")
    cfg = SASRecConfig(**settings)
    model = SASRecRecommender(list(dataset.items), cfg)
    valid = leave_one_out(dataset, "valid", cfg.max_len)
    fit = model.fit(dataset, valid, hr_ndcg, budget_s=args.budget_min * 60)
    result: dict[str, Any] = {"train_s": fit.pop("train_s"), "samples_seen": fit.pop("samples_seen"), "config": fit.pop("config"), "fit": fit}
    result["valid"] = hr_ndcg(model.recommend(valid, 10, args.exclude_history), [s.target for s in valid])
    test = leave_one_out(dataset, "test", cfg.max_len)
    result["test"] = hr_ndcg(model.recommend(test, 10, args.exclude_history), [s.target for s in test])
    return result


def t5_budget_overrides(method: str, budget_s: float, rounds: int, generator_share: float) -> list[str]:
    """Trainer settings that spend ``budget_s`` seconds of training: one recommender stage for the fixed-ID methods
    and rec-only; for alternate training ``rounds`` rounds whose generator stages share ``generator_share`` of the
    budget and whose recommender stages share the rest (epochs are unbounded: the stage clock ends them)."""
    scheme, alternate = T5_METHODS[method]
    common = [f"ids.scheme={scheme}", "train.rec_epochs=100000", "train.id_epochs=100000"]
    if not alternate:
        return [*common, "ids.regenerate=false", "train.rounds=1", "train.order=[recommender]", f"train.stage_seconds={budget_s}"]
    if rounds < 2:
        raise SystemExit("--rounds must be >= 2 for alternate training (round 0 has no generator stage)")
    # Round 0 skips its generator stage: rounds recommender stages, rounds - 1 generator stages.
    gen_s = budget_s * generator_share / (rounds - 1)
    rec_s = budget_s * (1 - generator_share) / rounds
    return [*common, "ids.regenerate=true", f"train.rounds={rounds}", "train.order=[generator,recommender]",
            "train.skip_first_generator=true", f"train.stage_seconds={{recommender: {rec_s}, generator: {gen_s}}}"]


def run_t5(args, dataset) -> dict[str, Any]:
    """Train through ``pretrain.engine.Trainer`` with the method's ID scheme; the trainer selects on validation
    (``zeroshot.harness.evaluate``) and scores the selected export on test."""
    from genrec.config import load_config
    from genrec.prompts import template_words
    from pretrain.engine import Trainer
    from pretrain.sources import LeaveOneOutSource
    from tokenization.spm import load_tokenizer, train_tokenizer

    scheme, _ = T5_METHODS[args.method]
    run_dir = Path(args.run_dir or DEFAULT_OUT / "runs" / f"quality-{args.method}")
    if args.tokenizer:
        tokenizer = load_tokenizer(args.tokenizer)
    elif scheme == "idgenrec":
        raise SystemExit(f"--method {args.method} needs --tokenizer and --generator (a generator warm-started with it)")
    else:
        tokenizer = train_tokenizer([it.text for it in dataset.items.values()], run_dir / "tokenizer", args.vocab_size,
                                    extra_texts=template_words())
    overrides = [*t5_budget_overrides(args.method, args.budget_min * 60, args.rounds, args.generator_share),
                 f"train.threads={args.threads}"]
    if scheme == "idgenrec":
        if not args.generator:
            raise SystemExit(f"--method {args.method} needs --generator (a warm-started generator folder)")
        overrides.append(f"model.generator.init={args.generator}")
    cfg = load_config(args.config, [*overrides, *args.overrides])
    source = LeaveOneOutSource(dataset, max_history=args.max_history)
    summary = Trainer(cfg, source, run_dir, tokenizer=tokenizer, eval_dataset=dataset).fit()
    stages = summary["stages"]
    best = summary["best"]
    chosen = next(s for s in stages if s["round"] == best["round"] and s["stage"] == best["stage"])
    return {"train_s": sum(s["seconds"] for s in stages), "samples_seen": sum(s["samples"] for s in stages),
            "config": cfg, "valid": chosen["valid"], "test": summary["test"], "stages": stages, "run_dir": str(run_dir)}


def table(rows: dict[str, tuple[float, ...]], extra: dict[str, str] | None = None) -> str:
    extra = extra or {}
    head = f"{'method':<28}" + "".join(f"{m:>9}" for m in METRICS) + "  notes"
    lines = [head, "-" * len(head)]
    for name, vals in rows.items():
        lines.append(f"{name:<28}" + "".join(f"{v:>9.4f}" for v in vals) + f"  {extra.get(name, '')}")
    return "\n".join(lines)


def collect(out_dir: Path) -> tuple[dict[str, tuple[float, ...]], dict[str, str]]:
    """Test metrics of every ``quality-*.json`` in ``out_dir`` (row = file name suffix, in ``METHODS`` order), then
    the paper's rows."""
    records = [(path.stem[len("quality-"):], json.loads(path.read_text())) for path in out_dir.glob("quality-*.json")]
    rank = {m: i for i, m in enumerate(METHODS)}
    records.sort(key=lambda r: (rank.get(r[1]["method"], len(rank)), r[0]))
    rows: dict[str, tuple[float, ...]] = {}
    notes: dict[str, str] = {}
    for name, rec in records:
        rows[name] = tuple(rec["test"][m] for m in METRICS)
        notes[name] = f"train {rec['train_s'] / 60:.1f} min, {rec['samples_seen']:,} samples, {rec['machine']['device']}"
    rows.update(PAPER)
    return rows, notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", choices=METHODS, required=True)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--budget-min", type=float, default=25.0, help="training wall-clock budget per method")
    parser.add_argument("--max-history", type=int, default=20, help="history cap of the T5 prompts and popularity samples")
    parser.add_argument("--exclude-history", action="store_true", help="never recommend items in the user's history")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the machine is shared)")
    parser.add_argument("--config", default=str(ROOT / "bench" / "quality.yaml"), help="trainer recipe of the T5 methods (one model size for all)")
    parser.add_argument("--run-dir", type=Path, help="run folder of a T5 method")
    parser.add_argument("--tokenizer", type=Path, help="tokenizer folder (T5 methods; default: train one on the item text)")
    parser.add_argument("--vocab-size", type=int, default=8000, help="pieces of a tokenizer trained here")
    parser.add_argument("--generator", type=Path, help="warm-started ID generator (idgenrec-* methods)")
    parser.add_argument("--rounds", type=int, default=3, help="alternate training rounds (paper: 3)")
    parser.add_argument("--generator-share", type=float, default=0.2, help="budget share of the generator stages")
    parser.add_argument("--out", type=Path, help=f"JSON path (default {DEFAULT_OUT}/quality-METHOD.json)")
    parser.add_argument("overrides", nargs="*", help="key=value: SASRec hyper-parameters or trainer config overrides")
    args = parser.parse_args(argv)

    import torch

    from genrec.dataset import Dataset
    from genrec.io import write_json

    torch.set_num_threads(args.threads)
    started = datetime.datetime.now(datetime.timezone.utc)
    t0 = time.perf_counter()
    dataset = Dataset.load(args.data)
    runner = {"popularity": run_popularity, "sasrec": run_sasrec}.get(args.method, run_t5)
    result = runner(args, dataset)
    record = {
        "method": args.method,
        "command": "python3 bench/quality.py " + shlex.join(sys.argv[1:] if argv is None else argv),
        "dataset": str(args.data),
        "dataset_stats": dataset.stats(),
        "date": started.isoformat(timespec="seconds"),
        "budget_min": args.budget_min,
        "wall_s": time.perf_counter() - t0,
        "machine": machine(),
        **result,
    }
    out = args.out or DEFAULT_OUT / f"quality-{args.method}.json"
    write_json(out, record, default=str)
    rows, notes = collect(out.parent)
    print(f"\n{dataset.name}: {len(dataset.items):,} items ranked, test split; this run: {args.method} -> {out}")
    print(table(rows, notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``idgenrec finetune``: standard single-dataset training (the paper's Exp. 1) on the one trainer.

    idgenrec finetune --config configs/standard.yaml --data DIR --out RUN [--resume] [key=value ...]

From scratch (a tokenizer is trained on the dataset's item text + template words into ``RUN/tokenizer``, tiny or
paper-sized T5s per ``model``; without a generator, one tag-warm-started on the item text into ``RUN/warmstart``, per
the recipe's ``warmstart`` section) or from a pretrained checkpoint: ``init=CKPT`` (an export folder) takes the
recommender, generator and tokenizer from it; ``init_lm=LM`` (``idgenrec pretrain lm``) starts both models from the
language model and takes its tokenizer. Launch with ``torchrun``/``deepspeed`` for several processes.
``--resume`` continues from ``RUN/checkpoints/latest`` when it exists and starts fresh otherwise (saying which);
``--resume=require`` fails when there is no checkpoint.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from genrec.io import OVERWRITE_HELP
from pretrain.cli import RUN_NOTES, add_resume_options


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "finetune", help="train recommender + ID generator on one dataset (alternating stages)",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=RUN_NOTES)
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.rounds=1")
    p.add_argument("--config", default="standard", help="recipe name in configs/ or a YAML path (default: standard)")
    p.add_argument("--data", type=Path, required=True, help="a prepared dataset folder (idgenrec data prepare/synth)")
    p.add_argument("--out", type=Path, required=True, help="run folder")
    add_resume_options(p)
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP + "; starts a previous run over")
    p.set_defaults(func=run)


def apply_init(cfg: dict[str, Any]) -> None:
    """``init: CKPT`` -> both models and the tokenizer from that export folder (the recipe's dropout kept)."""
    init = cfg.get("init")
    if not init:
        return
    from genrec.io import DataError
    from genrec.recipe import init_spec

    root = Path(init)
    for part, marker in (("recommender", "config.json"), ("generator", "config.json"), ("tokenizer", "tokenizer_config.json")):
        if not (root / part / marker).exists():
            raise DataError(root / part, None, f"init checkpoint has no {part} (expected {marker}; see docs/architecture.md)")
    models = cfg.setdefault("model", {})
    for part in ("recommender", "generator"):
        models[part] = init_spec(str(root / part), models.get(part))
    cfg.setdefault("tokenizer", {})["path"] = str(root / "tokenizer")


def tokenizer_for(cfg: dict[str, Any], dataset, out: Path):
    """The configured tokenizer, or one trained on ``dataset`` into ``RUN/tokenizer`` (rank 0; reused on resume)."""
    from genrec import stop
    from genrec.prompts import template_words
    from tokenization.spm import load_tokenizer, train_tokenizer

    tok_cfg = cfg.setdefault("tokenizer", {})
    if tok_cfg.get("path"):
        return load_tokenizer(tok_cfg["path"])
    folder = out / "tokenizer"

    def train() -> None:
        if not folder.exists():
            templates = (cfg.get("prompt") or {}).get("templates")
            train_tokenizer([it.text for it in dataset.items.values()], folder, int(tok_cfg.get("vocab_size", 32128)),
                            extra_texts=template_words(templates), extra_ids=int(tok_cfg.get("extra_ids", 0)))

    stop.main_only(train)
    tok_cfg["path"] = str(folder)
    return load_tokenizer(folder)


def run(args: argparse.Namespace) -> int:
    import time

    from genrec import dist
    from genrec.dataset import Dataset
    from genrec.io import OutputDir
    from idgen.warmstart import ensure_generator
    from pretrain.cli import check_resume
    from pretrain.engine import RUN_ENTRIES, Trainer
    from pretrain.lm import apply_init_lm
    from pretrain.recipe import checked_config
    from pretrain.sources import LeaveOneOutSource

    started = time.time()
    run_dir = OutputDir(args.out, "finetune", args.overwrite, resume=bool(args.resume))  # refuses before any work
    cfg = checked_config(args.config, args.overrides)
    check_resume(args.resume, args.out)
    apply_init(cfg)
    apply_init_lm(cfg)
    dataset = Dataset.load(args.data)
    cfg["data_dir"] = str(args.data)
    dist.init(single_process_group=True)
    if dist.is_main():
        run_dir.claim(RUN_ENTRIES)
    dist.barrier()
    phases: list[tuple[str, float]] = []
    t0 = time.perf_counter()
    tokenizer = tokenizer_for(cfg, dataset, args.out)
    phases.append(("tokenizer", time.perf_counter() - t0))
    t0 = time.perf_counter()
    ensure_generator(cfg, [it.text for it in dataset.items.values()], args.out, args.resume)
    phases.append(("warm-start", time.perf_counter() - t0))
    data = cfg.get("data") or {}
    source = LeaveOneOutSource(dataset, int(data.get("max_history", 20)), data.get("prefixes_per_user"))
    summary = Trainer(cfg, source, args.out, tokenizer=tokenizer, eval_dataset=dataset, resume=bool(args.resume),
                      started_at=started, phases=phases).fit()
    if dist.is_main():
        print(result_table(summary, dataset, cfg))
        print(f"finetune done in {time.time() - started:.0f}s; export in {args.out / 'export'}, "
              f"results in {args.out / 'summary.json'}")
    dist.barrier()  # the ranks leave together (rank 0 fitted popularity for the table; see zeroshot.cli)
    return 0


def result_table(summary: dict[str, Any], dataset, cfg: dict[str, Any]) -> str:
    """The validation row that selected the export, its test row and popularity scored
    on the same test users."""
    from zeroshot.harness import eval_settings, format_table, metric_names, popularity_metrics

    method = (cfg.get("ids") or {}).get("scheme", "idgenrec")
    rows = []
    best = summary.get("best")
    if best:  # the validation that selected the export (a stage's end or a validation point inside it)
        rows.append({"method": f"{method} (valid, round {best['round']} {best['stage']})", "dataset": dataset.name,
                     **best["valid"]})
    if summary.get("test"):
        rows.append({"method": f"{method} (test)", "dataset": dataset.name, **summary["test"]})
        rows.append({"method": "popularity (test)", "dataset": dataset.name,
                     **popularity_metrics(dataset, "test", cfg)})
    return format_table(rows, metric_names(eval_settings(cfg)["ks"]))

"""``idgenrec pretrain``: build the Fusion corpus, or pretrain the foundation model on it (paper 3.5).

Three forms under one subcommand::

    idgenrec pretrain build-corpus --dataset NAME=DIR ... --max-users 30000 --seed S --out CORPUS [--merge-items]
    idgenrec pretrain --config configs/foundation.yaml --corpus CORPUS --out RUN [--resume] [key=value ...]
    idgenrec pretrain lm --dataset NAME=DIR ... --out LM [--config lm] [--resume] [key=value ...]

The third is language pretraining on item text (``pretrain.lm``, T5 span corruption); ``init_lm=LM`` then starts
both models (and the tag warm-start) from it, and the Fusion recipe runs it first when ``pretrain.lm.minutes`` > 0.

Training streams the corpus shards (``pretrain.shards.ShardSource``) into the one trainer (``pretrain.engine``); the
run folder and export have the same format as finetune, so ``idgenrec zeroshot --checkpoint RUN/export`` reads it.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from genrec.io import OVERWRITE_HELP

USAGE = """
  idgenrec pretrain build-corpus --dataset NAME=DIR [--dataset NAME=DIR ...] --out CORPUS
                                 [--max-users N] [--seed S] [--merge-items] [--max-history H] [--samples-per-shard K]
  idgenrec pretrain [--config RECIPE] --corpus CORPUS --out RUN [--resume | --resume=require] [key=value ...]
  idgenrec pretrain lm --dataset NAME=DIR [--dataset NAME=DIR ...] --out LM [--config RECIPE] [--resume] [key=value ...]"""


# budgets and stops, shown by `idgenrec pretrain --help` and `idgenrec finetune --help`
RUN_NOTES = """budgets (any recipe; key=value overrides):
  train.budget_minutes=M  cap the run at M minutes from its start: tokenizer, warm-start, ID generation, training
                          and validation count (the final test does not); the training stages share what is left
  eval.test_users=N       test a fixed random sample of N users (a first look: NOT comparable to full-test numbers)
  warmstart.steps=0       no tag warm-start of a fresh generator (warmstart.minutes=M: its time budget)

stops: SIGTERM (exit 143), SIGINT (130) and SIGUSR1 (138) end the run within seconds in any phase after saving
what can be resumed; the same command with --resume continues."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "pretrain", usage=USAGE, help="Fusion corpus building and foundation pretraining",
        description="Build the Fusion corpus (first form), pretrain on it (second form), or pretrain a language "
                    "model on item text (third form, 'lm').",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=RUN_NOTES,
    )
    p.add_argument("words", nargs="*", metavar="build-corpus | lm | key=value",
                   help="'build-corpus' or 'lm' selects a form; the rest are config overrides, e.g. train.rounds=1")
    p.add_argument("--out", type=Path, required=True,
                   help="corpus folder (build-corpus), run folder (training) or LM folder (lm)")
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP + "; starts a previous run over")
    train = p.add_argument_group("training")
    train.add_argument("--config", default=None, help="recipe name or YAML path (default: foundation; lm: lm)")
    train.add_argument("--corpus", type=Path, help="a corpus folder from build-corpus (default: config key corpus)")
    add_resume_options(train)
    build = p.add_argument_group("build-corpus")
    build.add_argument("--dataset", action="append", default=[], metavar="NAME=DIR",
                       help="a prepared dataset folder and the name that prefixes its keys (repeat; also for lm)")
    build.add_argument("--max-users", type=int, default=30000, help="downsample larger datasets to this many users (0: keep all)")
    build.add_argument("--seed", type=int, default=0, help="seed of user downsampling and sample order")
    build.add_argument("--merge-items", action="store_true", help="the same item key in two datasets is one item")
    build.add_argument("--max-history", type=int, default=20, help="history cap of the training samples")
    build.add_argument("--samples-per-shard", type=int, default=2000, help="training samples per webdataset shard (default %(default)s)")
    p.set_defaults(func=_main)


def add_resume_options(parser) -> None:
    """``--resume`` (continue when a checkpoint exists, else start fresh: what SLURM requeues pass) and
    ``--resume=require`` (fail when there is none: a mistyped run folder does not go unnoticed)."""
    parser.add_argument("--resume", dest="resume", action="store_const", const="auto", default=None,
                        help="continue from RUN/checkpoints/latest when present, else start fresh (says which)")
    parser.add_argument("--resume=require", dest="resume", action="store_const", const="require",
                        help="continue from RUN/checkpoints/latest; fail when there is no checkpoint")


def check_resume(mode: str | None, run: Path) -> None:
    """``--resume=require`` without a checkpoint in ``run``: a one-line error before any work."""
    from genrec.io import DataError

    from .checkpoint import exists

    if mode == "require" and not exists(run):
        raise DataError(run / "checkpoints" / "latest", None, "--resume=require: no checkpoint to resume from")


def _main(args: argparse.Namespace) -> int:
    if args.words[:1] == ["build-corpus"]:
        if len(args.words) > 1:
            raise SystemExit(f"idgenrec pretrain build-corpus: unexpected arguments {args.words[1:]}")
        return build_corpus_command(args)
    if args.words[:1] == ["lm"]:
        return lm_command(args)
    if args.dataset:
        raise SystemExit("idgenrec pretrain: --dataset belongs to 'idgenrec pretrain build-corpus' or 'lm'")
    return train_command(args)


def parse_dataset_specs(specs: list[str], form: str = "build-corpus") -> dict[str, Path]:
    out: dict[str, Path] = {}
    for spec in specs:
        name, sep, folder = spec.partition("=")
        if not sep or not name or not folder:
            raise SystemExit(f"idgenrec pretrain {form}: --dataset {spec!r} is not NAME=DIR")
        if name in out:
            raise SystemExit(f"idgenrec pretrain {form}: dataset name {name!r} given twice")
        out[name] = Path(folder)
    return out


def build_corpus_command(args: argparse.Namespace) -> int:
    from genrec.dataset import Dataset
    from genrec.io import OutputDir

    from .corpus import build_corpus, format_table

    specs = parse_dataset_specs(args.dataset)
    if not specs:
        raise SystemExit("idgenrec pretrain build-corpus: give at least one --dataset NAME=DIR")
    out = OutputDir(args.out, "pretrain build-corpus", args.overwrite)
    datasets = {name: Dataset.load(folder, name) for name, folder in specs.items()}
    with out.write() as tmp:
        info = build_corpus(datasets, tmp, args.max_users or None, args.seed, args.merge_items, args.max_history,
                            args.samples_per_shard, sources={n: str(f) for n, f in specs.items()})
    print(format_table(info))
    print(f"{info['train_samples']:,} training samples in {info['shards']} shards -> {args.out}")
    return 0


def lm_command(args: argparse.Namespace) -> int:
    """``idgenrec pretrain lm``: span-corruption pretraining on the item text of the given datasets."""
    from genrec import dist
    from genrec.dataset import Dataset
    from genrec.io import OutputDir

    from .engine import RUN_ENTRIES
    from .lm import LM_ENTRIES, MODEL_DIR, check_lm_config, train_lm
    from .recipe import checked_config

    if args.corpus:
        raise SystemExit("idgenrec pretrain lm: reads --dataset NAME=DIR folders, not --corpus")
    specs = parse_dataset_specs(args.dataset, "lm")
    if not specs:
        raise SystemExit("idgenrec pretrain lm: give at least one --dataset NAME=DIR")
    out_dir = OutputDir(args.out, "pretrain lm", args.overwrite, resume=bool(args.resume))  # refuses before any work
    cfg = checked_config(args.config or "lm", args.words[1:])
    check_resume(args.resume, args.out)
    try:
        check_lm_config(cfg)
    except ValueError as e:
        raise SystemExit(f"idgenrec pretrain lm: {e}") from None
    datasets = {name: Dataset.load(folder, name) for name, folder in specs.items()}
    cfg["lm_datasets"] = {n: str(f) for n, f in specs.items()}
    dist.init(single_process_group=True)
    if dist.is_main():
        out_dir.claim(RUN_ENTRIES + LM_ENTRIES)
    dist.barrier()
    summary = train_lm(datasets, args.out, cfg, resume=args.resume)
    if not dist.is_main():
        return 0
    valid = (summary["stages"][-1].get("valid") or {}) if summary.get("stages") else {}
    loss = f"; held-out loss {valid['loss']:.3f}" if "loss" in valid else ""
    print(f"language pretraining done in {summary['wall_seconds']:.0f}s{loss}; LM in {args.out / MODEL_DIR}")
    return 0


def validation_users(users: dict[str, list[str]], n: int, seed: int) -> dict[str, list[str]]:
    """A deterministic subset of ``n`` users for model selection (all users when ``n`` <= 0)."""
    from .corpus import downsample_users

    return downsample_users(users, n if n > 0 else None, seed, "validation")


def corpus_tokenizer(dataset, out: Path, cfg: dict) -> Path:
    """Train the SentencePiece tokenizer on the corpus item text on rank 0 (kept when ``out`` exists, e.g. on resume)."""
    from genrec import dist, stop
    from genrec.prompts import template_words
    from tokenization.spm import train_tokenizer

    dist.init()

    def train() -> None:
        if not out.exists():
            templates = (cfg.get("prompt") or {}).get("templates")
            train_tokenizer([it.text for it in dataset.items.values()], out,
                            int(cfg["tokenizer"].get("vocab_size", 32128)), extra_texts=template_words(templates),
                            extra_ids=int(cfg["tokenizer"].get("extra_ids", 0)))

    stop.main_only(train)
    return out


def corpus_lm(dataset, out: Path, cfg: dict, stage: dict, resume: bool) -> Path:
    """The Fusion recipe's ``lm`` stage (``pretrain.lm``): the lm recipe on the corpus item text for
    ``minutes``, sized like the recommender it initialises, with the run's seed, tokenizer settings, DeepSpeed
    config and threads. Kept when ``out/model`` exists (resume)."""
    from genrec.config import load_config

    from .lm import MODEL_DIR, train_lm

    if (out / MODEL_DIR / "config.json").exists():
        return out / MODEL_DIR
    lm_cfg = load_config(stage.get("config") or "lm", list(stage.get("overrides") or []))
    lm_cfg["seed"] = cfg.get("seed", 0)
    lm_cfg["model"]["recommender"] = dict(cfg["model"]["recommender"])
    tok = cfg.get("tokenizer") or {}
    lm_cfg["tokenizer"].update({k: tok[k] for k in ("path", "vocab_size") if tok.get(k)})
    lm_cfg["deepspeed"] = cfg.get("deepspeed", lm_cfg.get("deepspeed"))
    lm_cfg["train"].update(stage_seconds=float(stage["minutes"]) * 60, threads=(cfg.get("train") or {}).get("threads"))
    train_lm({dataset.name: dataset}, out, lm_cfg, resume=resume)
    return out / MODEL_DIR


def train_command(args: argparse.Namespace) -> int:
    import time

    from genrec import dist
    from genrec.dataset import Dataset
    from genrec.io import OutputDir
    from idgen.warmstart import ensure_generator

    from .corpus import load_corpus_info
    from .engine import RUN_ENTRIES, Trainer
    from .lm import apply_init_lm
    from .recipe import checked_config
    from .shards import ShardSource

    started = time.time()
    run_dir = OutputDir(args.out, "pretrain", args.overwrite, resume=bool(args.resume))  # refuses before any work
    cfg = checked_config(args.config or "foundation", args.words)
    check_resume(args.resume, args.out)
    corpus = args.corpus or cfg.get("corpus")
    if not corpus:
        raise SystemExit("idgenrec pretrain: give --corpus CORPUS (a folder from 'idgenrec pretrain build-corpus')")
    corpus = Path(corpus)
    cfg["corpus"] = str(corpus)
    load_corpus_info(corpus)
    dist.init()
    if dist.is_main():
        run_dir.claim(RUN_ENTRIES)
    dist.barrier()
    data = cfg.get("data") or {}
    source = ShardSource.from_corpus(corpus, num_workers=int(data.get("workers", 2)),
                                     shuffle_buffer=int(data.get("shuffle_buffer", 1000)),
                                     skip_corrupt=bool(data.get("skip_corrupt", False)),
                                     timeout=float(data.get("timeout", 600)))
    lm_stage = (cfg.get("pretrain") or {}).get("lm") or {}
    if float(lm_stage.get("minutes") or 0) > 0 and not cfg.get("init_lm"):
        cfg["init_lm"] = str(corpus_lm(source.dataset, args.out / "lm", cfg, lm_stage, args.resume))
    apply_init_lm(cfg)
    tok = cfg.setdefault("tokenizer", {})
    phases: list[tuple[str, float]] = []
    t0 = time.perf_counter()
    if not tok.get("path"):
        tok["path"] = str(corpus_tokenizer(source.dataset, args.out / "tokenizer", cfg))
    phases.append(("tokenizer", time.perf_counter() - t0))
    t0 = time.perf_counter()
    ensure_generator(cfg, [it.text for it in source.dataset.items.values()], args.out, args.resume)
    phases.append(("warm-start", time.perf_counter() - t0))
    valid_n = int((cfg.get("pretrain") or {}).get("valid_users", 0))
    eval_dataset = None
    if valid_n >= 0:
        users = validation_users(source.dataset.users, valid_n, int(cfg.get("seed", 0)))
        eval_dataset = Dataset(source.dataset.items, users, source.dataset.name)
    Trainer(cfg, source, args.out, eval_dataset=eval_dataset, resume=args.resume, started_at=started,
            phases=phases).fit()
    if dist.is_main():
        print(f"pretraining done in {time.time() - started:.0f}s; export in {args.out / 'export'}")
    return 0

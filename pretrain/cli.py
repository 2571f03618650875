"""``idgenrec pretrain``: build the Fusion corpus, or pretrain the foundation model on it (paper 3.5).

Two forms under one subcommand::

    idgenrec pretrain build-corpus --dataset NAME=DIR ... --max-users 30000 --seed S --out CORPUS [--merge-items]
    idgenrec pretrain --config configs/foundation.yaml --corpus CORPUS --out RUN [--resume] [key=value ...]

Training streams the corpus shards (``pretrain.shards.ShardSource``) into the one trainer (``pretrain.engine``); the
run folder and export have the same format as finetune, so ``idgenrec zeroshot --checkpoint RUN/export`` reads it.
"""
from __future__ import annotations

import argparse
from pathlib import Path

USAGE = """
  idgenrec pretrain build-corpus --dataset NAME=DIR [--dataset NAME=DIR ...] --out CORPUS
                                 [--max-users N] [--seed S] [--merge-items] [--max-history H] [--samples-per-shard K]
  idgenrec pretrain [--config RECIPE] --corpus CORPUS --out RUN [--resume] [key=value ...]"""


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
        description="Build the Fusion corpus (first form) or pretrain on it (second form).",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=RUN_NOTES,
    )
    p.add_argument("words", nargs="*", metavar="build-corpus | key=value",
                   help="'build-corpus' selects the first form; otherwise config overrides, e.g. train.rounds=1")
    p.add_argument("--out", type=Path, required=True, help="corpus folder (build-corpus) or run folder (training)")
    train = p.add_argument_group("training")
    train.add_argument("--config", default="foundation", help="recipe name or YAML path (default: foundation)")
    train.add_argument("--corpus", type=Path, help="a corpus folder from build-corpus (default: config key corpus)")
    train.add_argument("--resume", action="store_true", help="continue from RUN/checkpoints/latest")
    build = p.add_argument_group("build-corpus")
    build.add_argument("--dataset", action="append", default=[], metavar="NAME=DIR",
                       help="a prepared dataset folder and the name that prefixes its keys (repeat)")
    build.add_argument("--max-users", type=int, default=30000, help="downsample larger datasets to this many users (0: keep all)")
    build.add_argument("--seed", type=int, default=0, help="seed of user downsampling and sample order")
    build.add_argument("--merge-items", action="store_true", help="the same item key in two datasets is one item")
    build.add_argument("--max-history", type=int, default=20, help="history cap of the training samples")
    build.add_argument("--samples-per-shard", type=int, default=2000)
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    if args.words[:1] == ["build-corpus"]:
        if len(args.words) > 1:
            raise SystemExit(f"idgenrec pretrain build-corpus: unexpected arguments {args.words[1:]}")
        return build_corpus_command(args)
    if args.dataset:
        raise SystemExit("idgenrec pretrain: --dataset belongs to 'idgenrec pretrain build-corpus'")
    return train_command(args)


def parse_dataset_specs(specs: list[str]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for spec in specs:
        name, sep, folder = spec.partition("=")
        if not sep or not name or not folder:
            raise SystemExit(f"idgenrec pretrain build-corpus: --dataset {spec!r} is not NAME=DIR")
        if name in out:
            raise SystemExit(f"idgenrec pretrain build-corpus: dataset name {name!r} given twice")
        out[name] = Path(folder)
    return out


def build_corpus_command(args: argparse.Namespace) -> int:
    from genrec.dataset import Dataset

    from .corpus import build_corpus, format_table

    specs = parse_dataset_specs(args.dataset)
    if not specs:
        raise SystemExit("idgenrec pretrain build-corpus: give at least one --dataset NAME=DIR")
    datasets = {name: Dataset.load(folder, name) for name, folder in specs.items()}
    info = build_corpus(datasets, args.out, args.max_users or None, args.seed, args.merge_items, args.max_history,
                        args.samples_per_shard, sources={n: str(f) for n, f in specs.items()})
    print(format_table(info))
    print(f"{info['train_samples']:,} training samples in {info['shards']} shards -> {args.out}")
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
                            int(cfg["tokenizer"].get("vocab_size", 32128)), extra_texts=template_words(templates))

    stop.main_only(train)
    return out


def train_command(args: argparse.Namespace) -> int:
    import time

    from genrec import dist
    from genrec.config import load_config
    from genrec.dataset import Dataset
    from idgen.warmstart import ensure_generator

    from .corpus import load_corpus_info
    from .engine import Trainer
    from .shards import ShardSource

    started = time.time()
    cfg = load_config(args.config, args.words)
    corpus = args.corpus or cfg.get("corpus")
    if not corpus:
        raise SystemExit("idgenrec pretrain: give --corpus CORPUS (a folder from 'idgenrec pretrain build-corpus')")
    corpus = Path(corpus)
    cfg["corpus"] = str(corpus)
    load_corpus_info(corpus)
    data = cfg.get("data") or {}
    source = ShardSource.from_corpus(corpus, num_workers=int(data.get("workers", 2)),
                                     shuffle_buffer=int(data.get("shuffle_buffer", 1000)),
                                     skip_corrupt=bool(data.get("skip_corrupt", False)),
                                     timeout=float(data.get("timeout", 600)))
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

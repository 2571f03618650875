"""Zero-shot benchmark (issue 6, paper 3.5 at laptop scale): pretrain on a Fusion of Sports + Phones, then
recommend on Beauty, whose users and items the model never saw, next to a popularity baseline.

Steps (each timed): build the Fusion corpus (each pretraining dataset downsampled to ``--max-users`` users by the
corpus's seeded hash), then ``idgenrec pretrain --config foundation`` (+ the overrides below): a SentencePiece
tokenizer trained on the corpus text only, a tag warm-start of the generator, and the alternating schedule
streaming the shards; then on each unseen dataset the pretrained generator names every item (all items are ranked)
and the recommender is scored on the test split of ``--test-users`` users (seeded hash subsample); with
``--catalogue sampled`` only the items of those users are named and ranked (a smaller candidate set: faster, and
easier than the paper's full ranking). Popularity is fitted on the unseen dataset's own training split (a
supervised reference the zero-shot model does not get) and scored on exactly the same users. With the override
``ids.scheme=title`` the recommender trains on fixed title IDs instead (no generator, no warm-start) and the unseen
items are named by the same title rule (``zeroshot.harness.dataset_ids``).

    nice -n 19 python3 bench/zeroshot_fusion.py --max-users 2000 --test-users 1000
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets" / "derived"
METRICS = ("HR@5", "NDCG@5", "HR@10", "NDCG@10")
SIZES = {
    "tiny": {"d_model": 64, "d_ff": 256, "d_kv": 16, "num_layers": 2, "num_decoder_layers": 2, "num_heads": 4},
    # the CPU recipes' size (configs/standard-cpu.yaml, configs/lm.yaml)
    "cpu": {"d_model": 128, "d_ff": 512, "d_kv": 32, "num_layers": 2, "num_decoder_layers": 2, "num_heads": 4},
    "small": {"d_model": 256, "d_ff": 1024, "d_kv": 32, "num_layers": 4, "num_decoder_layers": 4, "num_heads": 8},
    "t5-small": {"d_model": 512, "d_ff": 2048, "d_kv": 64, "num_layers": 6, "num_decoder_layers": 6, "num_heads": 8},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DATA, help="folder holding the prepared datasets")
    p.add_argument("--pretrain", nargs="+", default=["Sports", "Phones"], help="datasets of the Fusion corpus")
    p.add_argument("--unseen", nargs="+", default=["Beauty"], help="zero-shot datasets")
    p.add_argument("--max-users", type=int, default=2000, help="users kept per pretraining dataset")
    p.add_argument("--test-users", type=int, default=1000, help="users scored per unseen dataset (0: all)")
    p.add_argument("--size", choices=sorted(SIZES), default="tiny", help="T5 size of both models")
    p.add_argument("--vocab", type=int, default=8000, help="SentencePiece vocabulary size (trained on the corpus only)")
    p.add_argument("--warmstart-steps", type=int, default=600, help="tag warm-start steps of the generator")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", type=Path, default=ROOT / "bench" / "out" / "zeroshot_fusion", help="corpus, tokenizer, run")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "zeroshot_fusion.json")
    p.add_argument("--catalogue", choices=["all", "sampled"], default="all",
                   help="items ranked: all items (the paper's protocol) or only those of the scored users (faster)")
    p.add_argument("--reuse", action="store_true", help="reuse the corpus and finished run in --work (zero-shot only)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="extra config overrides for the pretraining run")
    return p.parse_args(argv)


@contextlib.contextmanager
def timed(label: str, times: dict[str, float]) -> Iterator[None]:
    """Print and record the wall time of one step."""
    print(f"== {label}", flush=True)
    t0 = time.perf_counter()
    yield
    times[label] = round(time.perf_counter() - t0, 1)
    print(f"== {label}: {times[label]:.1f}s", flush=True)


def pretrain_overrides(args: argparse.Namespace) -> list[str]:
    size = json.dumps(SIZES[args.size])
    return [
        f"seed={args.seed}",
        f"tokenizer.vocab_size={args.vocab}",
        f"model.recommender={size}",
        f"model.generator={size}",
        f"warmstart={{steps: {args.warmstart_steps}, batch_size: 64, lr: 2.0e-3, max_text_tokens: 64}}",
        "pretrain.valid_users=-1",  # no model selection on the corpus: the export is the last model (paper: 1 epoch)
        "optim.recommender.warmup_steps=50",
        "optim.generator.lr=1.0e-4",
        "idgen.max_text_tokens=64",
        "idgen.batch_size=256",
        "prompt.max_length=256",
        "train.max_batch=64",
        "train.max_tokens=8192",
        "train.chunk_size=4096",
        "train.checkpoint_every=0",
        *args.overrides,
    ]


def zero_shot_rows(export: Path, unseen: dict[str, Any], cfg_eval: dict[str, Any], times: dict[str, float]) -> list[dict[str, Any]]:
    from zeroshot.harness import dataset_ids, evaluate, id_scheme, load_checkpoint, popularity_metrics

    ckpt = load_checkpoint(export)
    cfg = {**ckpt.config, "eval": {**(ckpt.config.get("eval") or {}), **cfg_eval}}
    rows = []
    for name, (full, scored) in unseen.items():
        with timed(f"name {name} items", times):
            table = dataset_ids(ckpt, scored, cfg)
        with timed(f"zero-shot {name}", times):
            metrics = evaluate(ckpt.recommender, ckpt.tokenizer, table, scored, "test", cfg)
        scheme = id_scheme(ckpt)
        method = "IDGenRec zero-shot" if scheme == "idgenrec" else f"T5 zero-shot, {scheme} IDs"
        rows.append({"method": method, "dataset": name, **metrics})
        # fitted on all of the dataset's training targets, ranking the same catalogue, scoring the same users
        rows.append({"method": "popularity (supervised)", "dataset": name,
                     **popularity_metrics(scored, "test", cfg, fit_dataset=full)})
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    from idgenrec.cli import main as main_cli
    from genrec.dataset import Dataset
    from pretrain.corpus import build_corpus, downsample_users, format_table, load_corpus_info

    times: dict[str, float] = {}
    t_all = time.perf_counter()
    corpus, run = args.work / "corpus", args.work / "run"
    if args.reuse and (run / "summary.json").exists():
        print(f"== reusing the corpus and pretrained run in {args.work}")
        info = load_corpus_info(corpus)
    else:
        with timed("build corpus", times):
            sources = {name.lower(): Dataset.load(args.data / name, name.lower()) for name in args.pretrain}
            info = build_corpus(sources, corpus, args.max_users, args.seed,
                                sources={n.lower(): str(args.data / n) for n in args.pretrain})
        print(format_table(info))
        with timed("pretrain (tokenizer, generator warm-start, alternating training)", times):
            if main_cli(["pretrain", "--config", "foundation", "--corpus", str(corpus), "--out", str(run),
                         *pretrain_overrides(args)]) != 0:
                raise SystemExit("pretraining failed")
    summary = json.loads((run / "summary.json").read_text())
    unseen = {}
    for name in args.unseen:
        full = Dataset.load(args.data / name, name.lower())
        users = downsample_users(full.users, args.test_users or None, args.seed, "zeroshot")
        items = full.items
        if args.catalogue == "sampled":
            touched = {k for seq in users.values() for k in seq}
            items = {k: it for k, it in full.items.items() if k in touched}
        unseen[name.lower()] = (full, Dataset(items, users, name.lower()))
    rows = zero_shot_rows(run / "export", unseen, {"batch_size": 64, "num_beams": 20}, times)
    wall = round(time.perf_counter() - t_all, 1)

    from zeroshot.harness import format_table as metrics_table

    print(metrics_table(rows, METRICS))
    print(f"wall time {wall:.0f}s: " + ", ".join(f"{k} {v:.0f}s" for k, v in times.items()))
    result = {
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "corpus": info,
        "pretrain": {k: summary.get(k) for k in ("global_steps", "wall_seconds", "stages")},
        "overrides": pretrain_overrides(args),
        "rows": rows,
        "times_s": times,
        "wall_s": wall,
    }
    from genrec.io import write_json

    write_json(args.out, result)
    print(f"results -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

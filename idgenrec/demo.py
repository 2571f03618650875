"""``idgenrec demo``: the whole IDGenRec pipeline on generated data, end to end, in a few minutes on 2 CPU cores.

synthetic data (two "platforms" with different vocabularies) -> SentencePiece tokenizer -> generator warm-start ->
initial IDs by Algorithm 1 on Ray workers -> alternating training (``idgenrec finetune``, N processes, DeepSpeed
ZeRO-2) -> validation/test -> zero-shot on the second platform -> a results table next to popularity and random, and
example items with their initial and learned IDs (like the paper's Figure 3).

Every step calls the same library code the CLI subcommands use; training is launched as a subprocess under
``torchrun`` exactly as a user would launch it. ``--quick`` shrinks everything to a smoke run of well under a minute
of training (used by the test suite).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genrec.config import load_config
from genrec.io import OVERWRITE_HELP, DataError, OutputDir, atomic_write


@dataclass(frozen=True)
class DemoSize:
    users: int
    items: int
    zeroshot_users: int
    zeroshot_items: int
    vocab_size: int
    warmstart_steps: int
    overrides: tuple[str, ...]  # on top of configs/demo.yaml


SIZES = {
    "full": DemoSize(600, 200, 400, 150, 1200, 300, ()),
    "quick": DemoSize(150, 60, 120, 50, 600, 40, (
        "train.rounds=1", "train.rec_epochs=2", "train.id_epochs=1", "train.skip_first_generator=false",
        "train.initial_eval=false", "eval.num_beams=10",
    )),
}
EXAMPLES = 5
# The demo folder's top-level entries (a rerun replaces these and nothing else).
ENTRIES = ["data", "tokenizer", "generator-warm", "idtable-initial.tsv", "idtable-initial.report.json", "train", "demo.json"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="run the whole pipeline on generated data (a few minutes on 2 CPU cores)")
    p.add_argument("--out", type=Path, default=Path("demo_run"),
                   help="run folder (a previous demo's files in it are replaced, nothing else)")
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    p.add_argument("--quick", action="store_true", help="a sub-minute smoke version")
    p.add_argument("--procs", type=int, default=2, help="training processes (torchrun; 1 = a single process)")
    p.add_argument("--workers", type=int, default=2, help="Ray workers for ID generation (0 = in-process)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic data and the models")
    p.set_defaults(func=run)


class Steps:
    """Numbered progress lines with elapsed time, so a user always sees where the demo is."""

    def __init__(self, total: int):
        self.total, self.n, self.t0 = total, 0, time.time()

    def __call__(self, what: str) -> None:
        self.n += 1
        print(f"\n[{self.n}/{self.total}] {what}  (+{time.time() - self.t0:.0f}s)", flush=True)


def run(args: argparse.Namespace) -> int:
    size = SIZES["quick" if args.quick else "full"]
    out: Path = args.out
    OutputDir(out, "demo", args.overwrite).claim(ENTRIES)
    recipe = load_config("demo")  # the training recipe also sizes the generator and Algorithm 1
    step = Steps(7)

    step("data: two synthetic platforms (retail: train; outdoor: zero-shot, different vocabulary)")
    retail, outdoor = make_data(out, size, args.seed)

    step("tokenizer: SentencePiece (T5 layout) on the item text of both platforms + prompt words")
    tokenizer = make_tokenizer(out, [retail, outdoor], size.vocab_size)

    step(f"ID generator: tag warm-start ({size.warmstart_steps} steps) on retail item text")
    generator = make_generator(out, tokenizer, retail, size.warmstart_steps, args.seed, recipe)

    step(f"initial IDs: Algorithm 1 with diverse beam search on {args.workers or 'no'} Ray workers")
    initial = make_initial_ids(out, generator, tokenizer, retail, args.workers, recipe)

    step(f"alternating training: {args.procs} process(es), DeepSpeed ZeRO-2, CPU")
    train_dir = train(out, size, args.procs)

    step("evaluation: retail test (in-domain) and outdoor test (zero-shot, never trained on)")
    rows = evaluate_all(out, train_dir, retail, outdoor, args.seed)

    step("results")
    report(out, train_dir, rows, initial, retail)
    print(f"\ndemo done in {time.time() - step.t0:.0f}s", flush=True)
    return 0


def make_data(out: Path, size: DemoSize, seed: int):
    from genrec.dataset import Dataset
    from genrec.synth import synthesize

    folders = []
    for name, users, items, platform, s in (("retail", size.users, size.items, "retail", seed),
                                             ("outdoor", size.zeroshot_users, size.zeroshot_items, "outdoor", seed + 1)):
        folder = out / "data" / name
        synthesize(users, items, s, platform=platform).save(folder)
        ds = Dataset.load(folder, name)
        st = ds.stats()
        print(f"  {name:<8} {st['users']:>5} users {st['items']:>5} items {st['interactions']:>6} interactions "
              f"density {100 * st['density']:.2f}%  -> {folder}")
        folders.append(ds)
    example = next(iter(folders[0].items.values()))
    print(f"  e.g. {example.key}: {example.text[:110]}")
    return folders


def make_tokenizer(out: Path, datasets, vocab_size: int):
    from tokenization.spm import train_tokenizer

    from genrec.prompts import template_words

    texts = [it.text for ds in datasets for it in ds.items.values()]
    tok = train_tokenizer(texts, out / "tokenizer", vocab_size, extra_texts=template_words())
    print(f"  {len(tok)} pieces -> {out / 'tokenizer'}")
    return tok


def make_generator(out: Path, tokenizer, dataset, steps: int, seed: int, recipe: dict[str, Any]):
    import torch

    from idgen.warmstart import WarmstartConfig, tag_target, warmstart

    from genrec.modeling import build_t5

    torch.manual_seed(seed)
    model = build_t5(len(tokenizer), **recipe["model"]["generator"])
    texts = [it.text for it in dataset.items.values()]
    max_text = recipe["idgen"]["max_text_tokens"]
    losses = warmstart(model, tokenizer, texts, WarmstartConfig(steps=steps, seed=seed, max_text_tokens=max_text))
    print(f"  tag loss {losses[0]:.2f} -> {sum(losses[-10:]) / len(losses[-10:]):.2f}; "
          f"target for the item above: {tag_target(texts[0])!r}")
    model.save_pretrained(out / "generator-warm")
    return model


def make_initial_ids(out: Path, generator, tokenizer, dataset, workers: int, recipe: dict[str, Any]):
    import idgen

    table = idgen.generate_from_section(generator, tokenizer, {k: it.text for k, it in dataset.items.items()},
                                        {**(recipe.get("idgen") or {}), "workers": workers})
    table.check()
    table.save(out / "idtable-initial.tsv")
    rep = table.report
    print(f"  {len(table)} unique IDs; {rep['second_try_pct']:.1f}% needed a second try, "
          f"{rep['longer_window_pct']:.1f}% a longer window -> {out / 'idtable-initial.tsv'}")
    return table


def train(out: Path, size: DemoSize, procs: int) -> Path:
    train_dir = out / "train"
    cli = ["-m", "idgenrec.cli", "finetune", "--config", "demo", "--data", str(out / "data" / "retail"),
           "--out", str(train_dir), f"tokenizer.path={out / 'tokenizer'}",
           f"model.generator.init={out / 'generator-warm'}", f"ids.init={out / 'idtable-initial.tsv'}",
           *size.overrides]
    if procs > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}", *cli]
    else:
        cmd = [sys.executable, *cli]
    env = {**os.environ, "DS_ACCELERATOR": os.environ.get("DS_ACCELERATOR", "cpu" if not _has_cuda() else "cuda"),
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 2) // procs)))}
    print("  $ " + " ".join(["torchrun", "--standalone", f"--nproc_per_node={procs}", "-m idgenrec.cli", *cli[2:]]
                            if procs > 1 else ["idgenrec", *cli[2:]]), flush=True)
    result = subprocess.run(cmd, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"training failed with exit code {result.returncode} (logs above; run folder {train_dir})")
    return train_dir


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def baseline_rows(dataset, split: str, seed: int) -> list[dict[str, Any]]:
    """Popularity (training-target counts of this dataset) and a seeded random ranking, on ``split``."""
    from zeroshot.harness import eval_samples, eval_settings, popularity_metrics

    from genrec.metrics import hr_ndcg

    samples = eval_samples(dataset, split, eval_settings(None))
    targets = [s.target for s in samples]
    rng = random.Random(seed)
    keys = sorted(dataset.items)
    return [{"method": "popularity", "dataset": dataset.name, **popularity_metrics(dataset, split)},
            {"method": "random", "dataset": dataset.name, "users": len(samples),
             **hr_ndcg([rng.sample(keys, 10) for _ in samples], targets)}]


def evaluate_all(out: Path, train_dir: Path, retail, outdoor, seed: int) -> list[dict[str, Any]]:
    from zeroshot.harness import dataset_ids, evaluate, load_checkpoint

    summary = json.loads((train_dir / "summary.json").read_text())
    if not summary.get("test"):
        raise DataError(train_dir / "summary.json", None, "training finished without a test evaluation")
    rows = [{"method": "idgenrec", "dataset": "retail", **summary["test"]}, *baseline_rows(retail, "test", seed)]
    ckpt = load_checkpoint(train_dir / "export")
    table = dataset_ids(ckpt, outdoor, ckpt.config)
    metrics = evaluate(ckpt.recommender, ckpt.tokenizer, table, outdoor, "test", ckpt.config)
    rows += [{"method": "idgenrec (zero-shot)", "dataset": "outdoor", **metrics}, *baseline_rows(outdoor, "test", seed)]
    return rows


def report(out: Path, train_dir: Path, rows: list[dict[str, Any]], initial, dataset) -> None:
    from idgen.idtable import IdTable
    from zeroshot.harness import format_table, metric_names

    print(format_table(rows, metric_names((5, 10))))
    learned = IdTable.load(train_dir / "export" / "idtable.tsv")
    print(f"\nIDs before and after alternate training (churn {learned.churn(initial):.1%}):")
    changed = [k for k in initial.ids if learned.ids.get(k) != initial.ids[k]]
    for key in (changed + [k for k in initial.ids if k not in changed])[:EXAMPLES]:
        print(f"  {key}: {dataset.items[key].text[:90]}")
        print(f"      initial: {initial.ids[key]!r:<40} learned: {learned.ids.get(key)!r}")
    with atomic_write(out / "demo.json") as f:
        json.dump({"rows": rows, "churn": learned.churn(initial)}, f, indent=2)
    print(f"\nrun folder      {out}")
    print(f"results (JSON)  {out / 'demo.json'}")
    print(f"checkpoint      {train_dir / 'export'}   (idgenrec zeroshot --checkpoint {train_dir / 'export'} --dataset X=DIR)")
    print(f"TensorBoard     tensorboard --logdir {train_dir / 'tb'}")

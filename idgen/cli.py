"""``idgenrec idgen warmstart`` (tag pretraining of the generator) and ``idgenrec idgen generate`` (Algorithm 1)."""
from __future__ import annotations

import argparse
import logging

from genrec.io import OVERWRITE_HELP

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = subparsers.add_parser("idgen", help="item ID generation: generator warm-start and Algorithm 1")
    sub = p.add_subparsers(dest="idgen_command", metavar="ACTION")
    sub.required = True

    w = sub.add_parser("warmstart", help="teach the ID generator to write a concise tag of an item's text")
    w.add_argument("--data", required=True, help="dataset folder (item_plain_text.txt)")
    w.add_argument("--tokenizer", required=True, help="tokenizer folder (shared with the recommender)")
    w.add_argument("--model", help="generator folder to continue from (default: a fresh T5 sized by --size)")
    w.add_argument("--size", action="append", default=[], metavar="KEY=VALUE",
                   help="genrec.modeling.build_t5 size, e.g. d_model=64 (repeatable)")
    w.add_argument("--steps", type=int, default=300, help="optimizer steps (default %(default)s)")
    w.add_argument("--batch-size", type=int, default=32, help="(text, tag) pairs per step (default %(default)s)")
    w.add_argument("--lr", type=float, default=2e-3, help="AdamW learning rate (default %(default)s)")
    w.add_argument("--max-text-tokens", type=int, default=256, help="item text truncation (default %(default)s)")
    w.add_argument("--max-items", type=int, default=None, help="use only the first N items")
    w.add_argument("--seed", type=int, default=0, help="seed of initialisation and sample order")
    w.add_argument("--out", required=True, help="output generator folder (save_pretrained)")
    w.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    w.set_defaults(func=warmstart_cmd)

    g = sub.add_parser("generate", help="give every item a unique textual ID (Algorithm 1), optionally on Ray")
    g.add_argument("--model", required=True, help="generator folder (save_pretrained) or hub name")
    g.add_argument("--tokenizer", required=True, help="tokenizer folder")
    g.add_argument("--data", required=True, help="dataset folder (item_plain_text.txt)")
    g.add_argument("--workers", type=int, default=0, help="Ray actors (0: this process)")
    g.add_argument("--ray-address", default=None, help="join this Ray cluster (default: start a local one)")
    g.add_argument("--state-dir", default=None,
                   help="Ray runs: keep the registry log here; rerunning with the same folder resumes (default: temporary)")
    g.add_argument("--batch-size", type=int, default=64, help="items per forward pass")
    g.add_argument("--max-text-tokens", type=int, default=256, help="item text truncation (default %(default)s)")
    g.add_argument("--max-windows", type=int, default=5, help="length windows tried before the last resort (idgen.algorithm) names the rest")
    g.add_argument("--max-rounds", type=int, default=None, help="rounds before the last resort names every item still pending")
    g.add_argument("--version", type=int, default=0, help="training round stored in the table")
    g.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="fp32",
                   help="forward-pass precision (genrec.precision; bf16 is faster, and its rounding changes candidates "
                        "under tiny weight changes)")
    g.add_argument("--previous", default=None, help="an earlier IdTable: report the churn against it")
    g.add_argument("--out", required=True, help="IdTable TSV (+ .report.json)")
    g.add_argument("--overwrite", action="store_true", help="replace an existing --out file that is not an ID table")
    g.set_defaults(func=generate_cmd)


def _size(pairs: list[str]) -> dict:
    import yaml

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"idgenrec: error: --size {pair!r} is not KEY=VALUE")
        out[key] = yaml.safe_load(value)
    return out


def _load_generator(name_or_path: str):
    """A generator folder (or a hub name, which has no path separator)."""
    from pathlib import Path

    from genrec.io import DataError
    from genrec.modeling import load_t5

    if ("/" in name_or_path or Path(name_or_path).exists()) and not (Path(name_or_path) / "config.json").exists():
        raise DataError(name_or_path, None, "generator folder not found (no config.json)")
    return load_t5(name_or_path)


def warmstart_cmd(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from genrec.dataset import read_item_text
    from genrec.io import OutputDir
    from genrec.modeling import build_t5
    from tokenization.spm import load_tokenizer

    from .warmstart import WarmstartConfig, warmstart

    out = OutputDir(args.out, "idgen warmstart", args.overwrite)
    tok = load_tokenizer(args.tokenizer)
    texts = [it.text for it in read_item_text(Path(args.data) / "item_plain_text.txt").values()][: args.max_items]
    torch.manual_seed(args.seed)
    model = _load_generator(args.model) if args.model else build_t5(len(tok), **_size(args.size))
    cfg = WarmstartConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                          max_text_tokens=args.max_text_tokens, seed=args.seed)
    losses = warmstart(model, tok, texts, cfg)
    with out.write() as tmp:
        model.save_pretrained(str(tmp))
    print(f"warm-start: {cfg.steps} steps, loss {losses[0]:.3f} -> {losses[-1]:.3f}; generator saved to {args.out}")
    return 0


def generate_cmd(args: argparse.Namespace) -> int:
    from pathlib import Path

    from genrec.dataset import read_item_text
    from genrec.io import check_output_file
    from tokenization.spm import load_tokenizer

    from . import IdGenConfig, IdTable, generate
    from .idtable import HEADER

    check_output_file(args.out, "idgen generate", args.overwrite, HEADER)
    tok = load_tokenizer(args.tokenizer)
    items = {k: it.text for k, it in read_item_text(Path(args.data) / "item_plain_text.txt").items()}
    previous = IdTable.load(args.previous) if args.previous else None
    cfg = IdGenConfig(batch_size=args.batch_size, max_text_tokens=args.max_text_tokens,
                      max_windows=args.max_windows, max_rounds=args.max_rounds, version=args.version,
                      precision=args.precision)
    table = generate(_load_generator(args.model), tok, items, cfg, workers=args.workers, ray_address=args.ray_address,
                     previous=previous, state_dir=args.state_dir)
    table.save(args.out)
    rep = table.report
    print(f"{rep['items']} IDs -> {args.out}: {rep['second_try_pct']:.2f}% needed a second try, "
          f"{rep['longer_window_pct']:.2f}% a longer window, items by level {rep['items_by_level']}" + (f", churn {rep['churn']:.2%}" if "churn" in rep else ""))
    return 0

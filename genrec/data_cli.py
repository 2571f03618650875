"""``idgenrec data``: prepare raw datasets into the canonical form, print their statistics, make synthetic data."""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from .io import OVERWRITE_HELP

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="prepare, inspect and synthesise datasets")
    sub = data.add_subparsers(dest="data_command", metavar="ACTION")
    sub.required = True

    prep = sub.add_parser("prepare", help="read a raw dataset, k-core filter it and save the canonical form")
    fmt = prep.add_subparsers(dest="format", metavar="FORMAT")
    fmt.required = True
    a14 = fmt.add_parser("amazon2014", help="reviews_<Cat>_5.json(.gz) + meta_<Cat>.json(.gz) (Python-literal lines)")
    a18 = fmt.add_parser("amazon2018", help="<Cat>_5.json(.gz) + meta_<Cat>.json(.gz) (JSON lines)")
    for p in (a14, a18):
        p.add_argument("--reviews", required=True, type=Path, help="reviews file (JSON lines, .gz allowed)")
        p.add_argument("--meta", required=True, type=Path, help="metadata file (.gz allowed)")
    yelp = fmt.add_parser("yelp", help="Yelp academic dataset business.json + review.json")
    yelp.add_argument("--business", required=True, type=Path, help="business.json (JSON lines, .gz allowed)")
    yelp.add_argument("--review", required=True, type=Path, help="review.json (JSON lines, .gz allowed)")
    yelp.add_argument("--date-range", nargs=2, metavar=("START", "END"), help="keep reviews with START <= date < END (YYYY-MM-DD)")
    idg = fmt.add_parser("idgenrec", help="IDGenRec/P5 text format: user_sequence.txt + item_plain_text.txt")
    idg.add_argument("src", type=Path, help="folder holding the two files")
    for p, k in ((a14, 5), (a18, 5), (yelp, 5), (idg, 0)):
        p.add_argument("--out", required=True, type=Path, help="output folder (canonical form)")
        p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
        p.add_argument("--name", help="dataset name (default: the output folder's name)")
        p.add_argument("--k", type=int, default=k, help=f"k-core threshold for users and items, 0 = off (default {k})")
        p.add_argument("--skip-bad-lines", action="store_true", help="skip malformed lines (logged as a count) instead of failing")
        p.set_defaults(func=_prepare)
    for p in (a14, a18, yelp):
        p.add_argument("--fields", help="comma-separated item fields, in text order (default: the format's own)")
        p.add_argument("--lowercase", action="store_true", help="lower-case the item text")
        p.add_argument("--max-field-chars", type=int, help="truncate every field to this many characters")

    stats = sub.add_parser("stats", help="users, items, interactions, density, sequence lengths")
    stats.add_argument("dir", type=Path, help="a dataset folder in canonical form")
    stats.add_argument("--json", action="store_true", help="print JSON instead of a table")
    stats.set_defaults(func=_stats)

    synth = sub.add_parser("synth", help="a synthetic dataset with learnable structure (deterministic per seed)")
    synth.add_argument("--users", type=int, default=1000, help="users to generate (default %(default)s)")
    synth.add_argument("--items", type=int, default=500, help="items to generate (default %(default)s)")
    synth.add_argument("--seed", type=int, default=0, help="random seed: the same seed gives the same dataset")
    synth.add_argument("--platform", default="retail", help="vocabulary: retail or outdoor (a second domain)")
    synth.add_argument("--out", required=True, type=Path, help="output folder (canonical form)")
    synth.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    synth.set_defaults(func=_synth)


def _save(ds, out) -> None:
    with out.write() as tmp:
        ds.save(tmp)
    print(format_stats(ds.stats(), title=out.given))


def _prepare(args: argparse.Namespace) -> int:
    from . import readers
    from .dataset import Dataset
    from .io import OutputDir

    out = OutputDir(args.out, "data prepare", args.overwrite)
    name = args.name or out.path.name
    if args.format == "idgenrec":
        ds = Dataset.load(args.src, name=name, skip_bad_lines=args.skip_bad_lines)
        if args.k:
            ds = readers.kcore_dataset(ds, args.k)
    else:
        text = readers.TextOptions(
            field_order=tuple(f.strip() for f in args.fields.split(",") if f.strip()) if args.fields else None,
            lowercase=args.lowercase,
            max_field_chars=args.max_field_chars,
        )
        common = dict(k=args.k, text=text, skip_bad_lines=args.skip_bad_lines, name=name)
        if args.format == "amazon2014":
            ds = readers.read_amazon2014(args.reviews, args.meta, **common)
        elif args.format == "amazon2018":
            ds = readers.read_amazon2018(args.reviews, args.meta, **common)
        else:
            ds = readers.read_yelp(args.business, args.review, date_range=tuple(args.date_range) if args.date_range else None, **common)
    _save(ds, out)
    return 0


def format_stats(stats: dict, title: str = "") -> str:
    """A two-column table: counts with thousands separators, density as a percentage."""
    rows = [
        ("users", f"{stats['users']:,}"),
        ("items", f"{stats['items']:,}"),
        ("interactions", f"{stats['interactions']:,}"),
        ("density", f"{100 * stats['density']:.4f}%"),
        ("mean seq. length", f"{stats['mean_seq_len']:.2f}"),
        ("median seq. length", f"{stats['median_seq_len']:g}"),
    ]
    width = max(len(k) for k, _ in rows)
    vwidth = max(len(v) for _, v in rows)
    lines = [title] if title else []
    lines += [f"{k:<{width}}  {v:>{vwidth}}" for k, v in rows]
    return "\n".join(lines)


def _stats(args: argparse.Namespace) -> int:
    from .dataset import Dataset

    ds = Dataset.load(args.dir)
    stats = ds.stats()
    if args.json:
        print(json.dumps({"name": ds.name, **stats}, indent=2))
    else:
        print(format_stats(stats, title=ds.name))
    return 0


def _synth(args: argparse.Namespace) -> int:
    from .io import OutputDir
    from .synth import synthesize

    out = OutputDir(args.out, "data synth", args.overwrite)
    try:
        ds = synthesize(args.users, args.items, args.seed, args.platform)
    except ValueError as e:
        raise SystemExit(f"idgenrec data synth: {e}") from None
    _save(ds, out)
    return 0

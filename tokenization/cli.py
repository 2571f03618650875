"""``idgenrec tokenizer train DATA_DIR --vocab-size V --out DIR``: SentencePiece on item text + template words."""
from __future__ import annotations

import argparse
from pathlib import Path

from genrec.io import OVERWRITE_HELP


def register(subparsers: argparse._SubParsersAction) -> None:
    tok = subparsers.add_parser("tokenizer", help="train the SentencePiece tokenizer")
    sub = tok.add_subparsers(dest="tokenizer_command", metavar="ACTION")
    sub.required = True
    train = sub.add_parser("train", help="train on the item text of one or more dataset folders + prompt words")
    train.add_argument("data", nargs="+", type=Path, help="dataset folder(s) in canonical form")
    train.add_argument("--vocab-size", type=int, default=32128, help="soft limit (paper: 32,128)")
    train.add_argument("--templates", type=Path, help="template file whose words are added (default: built-in)")
    train.add_argument("--extra-ids", type=int, default=0, help="number of <extra_id_N> sentinels to append")
    train.add_argument("--out", required=True, type=Path, help="output tokenizer folder (save_pretrained layout)")
    train.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    train.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    from genrec.dataset import Dataset
    from genrec.io import DataError, OutputDir
    from genrec.prompts import template_words

    from .spm import train_tokenizer

    out = OutputDir(args.out, "tokenizer train", args.overwrite)
    texts = [item.text for folder in args.data for item in Dataset.load(folder).items.values()]
    try:
        with out.write() as tmp:
            tok = train_tokenizer(texts, tmp, args.vocab_size, extra_texts=template_words(args.templates), extra_ids=args.extra_ids)
    except DataError:
        raise
    except ValueError as e:
        raise SystemExit(f"idgenrec tokenizer train: {e}") from None
    print(f"tokenizer with {len(tok):,} tokens saved to {args.out}")
    return 0

"""The ``idgenrec`` console script: one subcommand per stage, each registered by the package that owns it."""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

# (module, what it registers). Modules import heavy libraries (torch, ray) lazily inside their handlers.
COMMANDS = [
    "genrec.data_cli",
    "tokenization.cli",
    "idgen.cli",
    "finetune.cli",
    "pretrain.cli",
    "zeroshot.cli",
    "genrec.demo",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="idgenrec",
        description="Generative recommendation with learned textual item IDs (IDGenRec).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for mod in COMMANDS:
        importlib.import_module(mod).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from . import stop
    from .io import DataError

    stop.install()
    try:
        return int(args.func(args) or 0)
    except DataError as e:
        print(f"idgenrec: error: {e}", file=sys.stderr)
        return 2
    except stop.Stop as e:  # a stop signal: what can be resumed is saved; one line, no traceback
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"idgenrec: {stop.message(e)}", file=sys.stderr, flush=True)
        return stop.exit_code(e.signum)


if __name__ == "__main__":
    sys.exit(main())

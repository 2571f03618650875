"""The ``idgenrec`` console script: one subcommand per stage, each registered by the package that owns it."""
from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import logging
import sys

# (module, what it registers). Modules import heavy libraries (torch, ray) lazily inside their handlers.
COMMANDS = [
    "genrec.data_cli",
    "tokenization.cli",
    "idgen.cli",
    "finetune.cli",
    "pretrain.cli",
    "zeroshot.cli",
    "idgenrec.demo",
    "pretrain.config_cli",
]


def version() -> str:
    try:
        return importlib.metadata.version("idgenrec")
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="idgenrec",
        description="Generative recommendation with learned textual item IDs (IDGenRec).",
    )
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="debug logging, and the third-party warnings that are silenced otherwise (genrec.quiet)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for mod in COMMANDS:
        importlib.import_module(mod).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # a form word before the options (``pretrain lm --dataset ... key=value``) leaves the trailing overrides here
    if extra and isinstance(getattr(args, "words", None), list) and not any(e.startswith("-") for e in extra):
        args.words += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    from genrec import quiet

    quiet.setup(args.verbose)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from genrec import stop
    from genrec.io import DataError
    from genrec.schema import ConfigError

    stop.install()
    try:
        return int(args.func(args) or 0)
    except (DataError, ConfigError) as e:
        print(f"idgenrec: error: {e}", file=sys.stderr)
        return 2
    except stop.Stop as e:  # a stop signal: what can be resumed is saved; one line, no traceback
        return stop.report(e, "idgenrec")


if __name__ == "__main__":
    sys.exit(main())

"""``idgenrec config show RECIPE [key=value ...]``: a recipe resolved (defaults filled in), each key with its type
and doc (the schema is ``pretrain.recipe.RECIPE``; this module stays light, the console script imports it first)."""
from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("config", help="inspect recipes")
    sub = p.add_subparsers(dest="config_command", metavar="ACTION")
    sub.required = True
    show = sub.add_parser("show", help="print a recipe resolved (defaults filled in), with each key's type and doc")
    show.add_argument("recipe", help="recipe name in configs/ or a YAML path")
    show.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.rounds=1")
    show.set_defaults(func=show_command)


def show_command(args: argparse.Namespace) -> int:
    from .recipe import RECIPE, checked_config

    print(RECIPE.render(checked_config(args.recipe, args.overrides)))
    return 0

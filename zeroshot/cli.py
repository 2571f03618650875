"""``idgenrec zeroshot`` (HR/NDCG tables over datasets) and ``idgenrec recommend`` (top-k for one history).

``zeroshot`` works the same under ``torchrun`` / the deepspeed launcher: users are sharded over ranks and rank 0
prints the table and writes the JSON. ``recommend`` accepts history items by key or as free text, and can add
cold-start items to the catalogue: the generator names them and they are inserted into the trie, no retraining.
``key=value`` arguments (``recommend``: ``--set key=value``) override the checkpoint's ``config.yaml``
(e.g. ``eval.num_beams=30``).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from genrec.io import DataError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("zeroshot", help="evaluate a checkpoint on one or more prepared datasets (HR@k, NDCG@k)")
    p.add_argument("--checkpoint", required=True, help="export folder (recommender/, generator/, tokenizer/, ...)")
    p.add_argument("--dataset", action="append", required=True, metavar="NAME=DIR",
                   help="a prepared dataset folder, optionally named (repeatable)")
    p.add_argument("--split", choices=["valid", "test"], default="test", help="leave-one-out split to evaluate (default: test)")
    p.add_argument("--out", default="zeroshot.json", help="results JSON (written atomically)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. eval.batch_size=32")
    p.set_defaults(func=run_zeroshot)

    r = sub.add_parser("recommend", help="top-k items for one user history")
    r.add_argument("--checkpoint", required=True, help="export folder (recommender/, tokenizer/, idtable.tsv, generator/ for free text)")
    r.add_argument("--data", required=True, help="prepared dataset folder: the catalogue to rank")
    r.add_argument("--history", nargs="+", default=[], metavar="KEY", help="history item keys, oldest first")
    r.add_argument("--text", nargs="+", default=[], metavar="TEXT",
                   help="history items as free text (named by the generator), after --history items")
    r.add_argument("--new-item", nargs="+", default=[], metavar="TEXT",
                   help="cold-start items to add to the catalogue (named by the generator, inserted into the trie)")
    r.add_argument("-k", type=int, default=10, help="items to recommend (at most eval.num_beams; default %(default)s)")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override (repeatable; an option, since --history and --text take many values)")
    r.set_defaults(func=run_recommend)


def checked_overrides(overrides: list[str]) -> dict[str, Any]:
    """``key=value`` overrides as a config, checked against the sections evaluation reads (before any work)."""
    from genrec.config import load_config
    from genrec.recipe import CORE
    from genrec.schema import combine
    from idgen.recipe import IDGEN
    from zeroshot.harness import EVAL

    cfg = load_config(None, overrides)
    combine(CORE, IDGEN, EVAL).validate(cfg)
    return cfg


def parse_dataset_arg(arg: str) -> tuple[str, Path]:
    """``name=DIR`` or just ``DIR`` (named after the folder)."""
    name, sep, folder = arg.partition("=")
    if not sep:
        return Path(arg).name, Path(arg)
    if not name or not folder:
        raise DataError(arg, None, "expected --dataset NAME=DIR")
    return name, Path(folder)


def run_zeroshot(args: argparse.Namespace) -> int:
    from genrec import dist
    from genrec.config import merge
    from genrec.dataset import Dataset
    from zeroshot.harness import (dataset_ids, eval_settings, evaluate, format_table, id_scheme, load_checkpoint,
                                  metric_names, popularity_metrics, write_results)

    overrides = checked_overrides(args.overrides)
    dist.init()
    named = [parse_dataset_arg(a) for a in args.dataset]
    if len({n for n, _ in named}) != len(named):
        raise DataError(args.dataset, None, "dataset names must be unique")
    datasets = [Dataset.load(folder, name) for name, folder in named]
    ckpt = load_checkpoint(args.checkpoint, require_generator=True)
    cfg = merge(ckpt.config, overrides)
    settings = eval_settings(cfg)
    rows = []
    for ds in datasets:
        table = dataset_ids(ckpt, ds, cfg)
        metrics = evaluate(ckpt.recommender, ckpt.tokenizer, table, ds, args.split, cfg, generator=ckpt.generator)
        rows.append({"method": id_scheme(ckpt), "dataset": ds.name, **metrics})  # idgenrec, or a fixed ID scheme
        if dist.is_main():  # the reference a zero-shot number needs: popularity fitted on the dataset's training split
            rows.append({"method": "popularity", "dataset": ds.name, **popularity_metrics(ds, args.split, cfg)})
    if dist.is_main():
        print(format_table(rows, metric_names(settings["ks"])))
        write_results(args.out, rows, {"checkpoint": str(args.checkpoint), "split": args.split, "eval": settings})
    # the ranks leave together: a rank that tore its gloo group down while rank 0 still fitted popularity and wrote
    # the results aborted at exit ('terminate called without an active exception')
    dist.barrier()
    return 0


def run_recommend(args: argparse.Namespace) -> int:
    from genrec.config import merge
    from genrec.dataset import Dataset
    from genrec.decoding import constrained_beam_search, pad_batch
    from genrec.prompts import PromptBuilder
    from genrec.dist import device
    from genrec.precision import from_config
    from genrec.trie import PrefixTrie
    from idgen import userids
    from zeroshot.harness import dataset_ids, eval_settings, generate_item_ids, load_checkpoint

    if not args.history and not args.text:
        raise DataError("recommend", None, "give a history: --history KEY ... and/or --text TEXT ...")
    overrides = checked_overrides(args.overrides)
    ds = Dataset.load(args.data)
    unknown = [h for h in args.history if h not in ds.items]
    if unknown:
        raise DataError(args.data, None, f"history items not in the dataset: {unknown}")
    ckpt = load_checkpoint(args.checkpoint, require_generator=bool(args.text or args.new_item))
    cfg = merge(ckpt.config, overrides)
    with_users = userids.enabled(cfg)
    if with_users and ckpt.generator is None:
        raise DataError(ckpt.path, None, "checkpoint has no generator: prompt.user_ids needs it to name the user")
    settings = eval_settings(cfg)
    if args.k > settings["num_beams"]:
        raise DataError("recommend", None, f"-k {args.k} exceeds eval.num_beams={settings['num_beams']}")
    table = dataset_ids(ckpt, ds, cfg)
    tok = ckpt.tokenizer
    free = {f"text-{i + 1}": t for i, t in enumerate(args.text)}
    new = {f"new-{i + 1}": t for i, t in enumerate(args.new_item)}
    named = generate_item_ids(ckpt, {**free, **new}, cfg).ids if free or new else {}
    owner = {tid: key for key, tid in table.ids.items()}
    for key in new:
        if named[key] in owner:
            raise DataError("recommend", None, f"new item {new[key]!r} got the ID {named[key]!r}, "
                                               f"already the ID of item {owner[named[key]]!r}")
    token_ids = table.token_ids(tok)
    trie = PrefixTrie(token_ids, tok.eos_token_id, tok.pad_token_id)
    texts = {k: it.text for k, it in ds.items.items()}
    if new:
        new_tokens = {k: tok(named[k], add_special_tokens=False)["input_ids"] for k in new}
        trie.insert(new_tokens)
        texts.update(new)
        table.ids.update({k: named[k] for k in new})
    history = [token_ids[h] for h in args.history] + [tok(named[k], add_special_tokens=False)["input_ids"] for k in free]
    user = None
    if with_users:  # the user's ID from this prompt's history, as the harness names every prompt's user
        profile = userids.history_text([ds.items[h].text for h in args.history] + list(free.values()))
        named_user = userids.profile_ids(ckpt.generator, tok, {"user": profile}, cfg.get("idgen"), progress=False)
        user_id = named_user.ids.get("user")
        print(f"user ID: {user_id!r}")
        user = tok(user_id, add_special_tokens=False)["input_ids"] if user_id else None
    prompt = PromptBuilder.from_config(tok, cfg.get("prompt")).build(history, settings["template"], user).input_ids
    trie.to(device())
    model = ckpt.recommender.to(device())
    ids, mask = pad_batch([prompt], tok.pad_token_id, device())
    exclude = None
    if settings["exclude_history"]:
        index = {key: i for i, key in enumerate(trie.keys)}
        exclude = [[index[h] for h in args.history]]
    ranking = constrained_beam_search(model, ids, mask, trie, num_beams=settings["num_beams"], k=args.k,
                                      length_penalty=settings["length_penalty"],
                                      early_stopping=settings["early_stopping"], exclude=exclude,
                                      dtype=from_config(cfg, device()))[0]
    for key in free:
        print(f"history text {key}: ID {named[key]!r}")
    print(f"{'rank':>4}  {'score':>8}  {'item':<14}  {'ID':<40}  text")
    for i, (key, score) in enumerate(ranking, 1):
        print(f"{i:>4}  {score:8.4f}  {key:<14}  {table.ids[key][:40]:<40}  {texts[key][:60]}")
    return 0

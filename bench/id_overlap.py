"""How much of the next item a table of textual IDs shows in word overlap alone (no model, no training).

Each item's ID is a set of words (numbers, i.e. Algorithm 1's last-resort counters, dropped). A user's candidates
are scored by the words their IDs share with the IDs of the user's last ``--history`` items, each shared word weighted
by one over the number of items whose ID has it (a rare brand word counts more than a category word); the history's
own items are excluded and ties are broken at random (seeded). Scored on the test split (leave-one-out: the last
item), every item a candidate, with ``genrec.metrics``. A recommender trained on IDs that score near chance here has
no word-level next-item pattern it could carry to another domain (docs/results.md, zero-shot). ``--brand`` adds the
share of users whose test item's brand (the ``brand`` field of the item text) is in their history.

    python bench/id_overlap.py --data DIR --idtable RUN/export/idtable.tsv [--prefix sports] [--history 1 20]
"""
from __future__ import annotations

import argparse
import collections
import random
import sys
import time
from pathlib import Path

from genrec.dataset import Dataset
from genrec.io import DataError, write_json
from genrec.metrics import hr_ndcg
from genrec.splits import leave_one_out
from idgen.idtable import IdTable
from idgen.warmstart import fields_of


def id_word_set(tid: str) -> set[str]:
    """The distinct words of a textual ID, numbers (Algorithm 1's last-resort counters) dropped."""
    return {w for w in tid.split() if not w.isdigit()}


def id_words(table: IdTable, keys: dict[str, str], max_items: int) -> dict[str, tuple[str, ...]]:
    """Dataset item key -> the distinct words of its ID, sorted so that scoring visits candidates (and draws their
    random tie-breaks) in the same order in every process (words of more than ``max_items`` items dropped too, if
    > 0)."""
    words = {k: sorted(id_word_set(table.ids[tk])) for k, tk in keys.items()}
    if max_items > 0:
        df = collections.Counter(w for ws in words.values() for w in ws)
        words = {k: [w for w in ws if df[w] <= max_items] for k, ws in words.items()}
    return {k: tuple(ws) for k, ws in words.items()}


def rank(history: tuple[str, ...], words: dict[str, tuple[str, ...]], index: dict[str, list[str]], k: int,
         rng: random.Random) -> list[str]:
    """The ``k`` items whose IDs share the most weighted words with the history's IDs (history excluded)."""
    score: collections.Counter[str] = collections.Counter()
    for item in history:
        for w in words[item]:
            for other in index[w]:
                score[other] += 1.0 / len(index[w])
    for item in history:
        score.pop(item, None)
    return sorted(score, key=lambda c: (-score[c], rng.random()))[:k]


def brand_continuity(dataset: Dataset) -> float:
    """Share of users whose test item has a brand that one of their earlier items has."""
    brand = {k: fields_of(it.text).get("brand", "").strip().lower() for k, it in dataset.items.items()}
    same = sum(1 for seq in dataset.users.values() if brand[seq[-1]] and brand[seq[-1]] in {brand[h] for h in seq[:-1]})
    return same / len(dataset.users)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="a dataset folder (IDGenRec text format)")
    p.add_argument("--idtable", type=Path, required=True, help="an ID table (idtable.tsv) naming every item")
    p.add_argument("--prefix", default="", help="the dataset's name in the table's keys (a Fusion table: 'sports')")
    p.add_argument("--history", nargs="+", type=int, default=[1, 20], help="history lengths to score, one row each")
    p.add_argument("--users", type=int, default=0, help="score the first N users with a test item (0: all)")
    p.add_argument("--max-items", type=int, default=0, help="ignore ID words of more than this many items (0: none)")
    p.add_argument("--brand", action="store_true", help="also the brand continuity of the dataset")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="JSON results")
    args = p.parse_args(argv)

    dataset, table = Dataset.load(args.data), IdTable.load(args.idtable)
    keys = {k: f"{args.prefix}:{k}" if args.prefix else k for k in dataset.items}
    named = {k: tk for k, tk in keys.items() if tk in table.ids}
    if not named:
        raise DataError(args.idtable, None, f"names none of the {len(keys)} items of {args.data} (wrong --prefix?)")
    samples = [s for s in leave_one_out(dataset, "test", max(args.history))
               if all(i in named for i in (*s.history, s.target))]
    if args.users:
        samples = samples[: args.users]
    words = id_words(table, named, args.max_items)
    index: dict[str, list[str]] = collections.defaultdict(list)
    for k, ws in words.items():
        for w in ws:
            index[w].append(k)
    rows = []
    for n in args.history:
        rng, t0 = random.Random(args.seed), time.perf_counter()
        ranked = [rank(s.history[-n:], words, index, 10, rng) for s in samples]
        metrics = hr_ndcg(ranked, [s.target for s in samples])
        rows.append({"history": n, "users": len(samples), **metrics, "seconds": round(time.perf_counter() - t0, 1)})
        print(f"last {n:>2} items  users {len(samples):>6}  " + "  ".join(f"{m} {v:.4f}" for m, v in metrics.items()))
    result = {"data": str(args.data), "idtable": str(args.idtable), "items_named": len(named),
              "items": len(keys), "max_items": args.max_items, "rows": rows,
              "chance_HR@10": 10 / len(named)}
    if args.brand:
        result["brand_continuity"] = brand_continuity(dataset)
        print(f"test item's brand in the history: {result['brand_continuity']:.1%} of {len(dataset.users)} users")
    if args.out:
        write_json(args.out, result)
        print(f"results -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Does a recommender carry the history's words into its recommendations (the behaviour that transfers zero-shot)?

For each scored user (the test split, ``--users`` of them by the harness's seeded sample) the checkpoint ranks all
items (``zeroshot.harness.rank_samples``, the IDs from ``zeroshot.harness.dataset_ids``: its own table, or new IDs
for an unseen dataset). Three rows compare its top ``--k`` with ``--k`` random catalogue items per user (seeded,
history excluded) and with the users' true next items: the share of items whose ID shares a word with the
history's IDs (numbers, i.e. counters, dropped), and the share whose first ID word begins one of the history's IDs
(a brand at the front of title IDs). A recommender that has learnt to copy history words is above the random row,
towards the target row; one that only memorised its training items' transitions is at or below random on an unseen
domain (docs/results.md, zero-shot with title IDs).

    python bench/history_copy.py --checkpoint RUN/export --data DATA/beauty --users 300 --out copy.json
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

from genrec.dataset import Dataset
from genrec.io import write_json
from genrec.metrics import hr_ndcg
from idgen.idtable import IdTable

sys.path.insert(0, str(Path(__file__).resolve().parent))

from id_overlap import id_word_set  # noqa: E402  (the same words, counters dropped, as the overlap rule)


def copy_shares(table: IdTable, histories: list[tuple[str, ...]], lists: list[list[str]]) -> dict[str, float]:
    """Share of listed items whose ID shares a word with the history's IDs, and whose first word begins one of them."""
    shared = first = total = 0
    for history, items in zip(histories, lists):
        words = set().union(*(id_word_set(table.ids[h]) for h in history))
        firsts = {table.ids[h].split()[0] for h in history}
        for item in items:
            total += 1
            shared += bool(id_word_set(table.ids[item]) & words)
            first += table.ids[item].split()[0] in firsts
    return {"shares_a_history_word": shared / max(total, 1), "first_word_starts_a_history_id": first / max(total, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, required=True, help="an export folder")
    p.add_argument("--data", type=Path, required=True, help="a dataset folder (IDGenRec text format)")
    p.add_argument("--name", default="", help="the dataset's name (a Fusion corpus folder: its own keys need none)")
    p.add_argument("--users", type=int, default=300, help="test users scored (0: all)")
    p.add_argument("--k", type=int, default=10, help="recommendations per user")
    p.add_argument("--seed", type=int, default=0, help="the random items' seed")
    p.add_argument("--out", type=Path, help="JSON results")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="eval overrides, e.g. eval.num_beams=20")
    args = p.parse_args(argv)

    from genrec.config import merge
    from zeroshot.cli import checked_overrides
    from zeroshot.harness import dataset_ids, load_checkpoint, rank_samples

    t0 = time.perf_counter()
    ckpt = load_checkpoint(args.checkpoint)
    dataset = Dataset.load(args.data, args.name or args.data.name)
    cfg = merge({**ckpt.config, "eval": {**(ckpt.config.get("eval") or {}), "ks": [args.k],
                                         "num_beams": max(20, args.k), "test_users": args.users}},
                checked_overrides(args.overrides))
    table = dataset_ids(ckpt, dataset, cfg)
    samples, ranked = rank_samples(ckpt.recommender, ckpt.tokenizer, table, dataset, "test", cfg)
    rng, keys = random.Random(args.seed), sorted(table.ids)
    randoms = []
    for s in samples:
        seen, pick = set(s.history), []
        while len(pick) < args.k:
            key = rng.choice(keys)
            if key not in seen:
                seen.add(key)
                pick.append(key)
        randoms.append(pick)
    histories = [s.history for s in samples]
    rows = [{"items": f"recommended top {args.k}", **copy_shares(table, histories, ranked)},
            {"items": f"{args.k} random items", **copy_shares(table, histories, randoms)},
            {"items": "true next item", **copy_shares(table, histories, [[s.target] for s in samples])}]
    metrics = hr_ndcg(ranked, [s.target for s in samples], [args.k])
    print(f"{len(samples)} users of {dataset.name}, {len(table.ids)} items; " + "  ".join(f"{m} {v:.4f}" for m, v in metrics.items()))
    print(f"{'items':<22} {'shares a history word':>22} {'first word starts a history ID':>31}")
    for r in rows:
        print(f"{r['items']:<22} {r['shares_a_history_word']:>22.3f} {r['first_word_starts_a_history_id']:>31.3f}")
    if args.out:
        result = {"checkpoint": str(args.checkpoint), "data": str(args.data), "users": len(samples), "k": args.k,
                  "metrics": metrics, "rows": rows, "seconds": round(time.perf_counter() - t0, 1)}
        write_json(args.out, result)
        print(f"results -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

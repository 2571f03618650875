"""What language pretraining buys the ID generator (issue 15): Algorithm 1 after the tag warm-start, from random
weights vs from a span-corruption LM (``idgenrec pretrain lm``), on a subset of one dataset's items.

Both arms have the LM's architecture and tokenizer (so only the starting weights differ), the same warm-start
(``idgen.warmstart``: steps, batch, lr, seed) on the subset's item text, then Algorithm 1 (paper defaults) names
every item of the subset. ``--matched`` adds a third arm: random weights warm-started for as many more steps as
the LM's pretraining time buys at the measured warm-start speed (equal total CPU time, the LM stage counted).

Per arm: the share of items that get a unique ID in Algorithm 1's first round (any of the 10 diverse-beam
candidates at lambda = 1 free, claims settled in key order), the mean words of those IDs, the share of distinct
top candidates and their mean words; warm-start loss (mean of the last 20 steps); seconds. ``--full`` also runs
Algorithm 1 to the end (rounds, final words per ID), which from weak generators takes many rounds.
Prints a table and writes JSON.

    python bench/lm_warmstart.py --data DIR --lm LM [--items 3000] [--steps 300] [--arms random,lm] [--matched]
                                 [--full] [--out FILE]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from genrec.dataset import read_item_text
from genrec.io import write_json
from genrec.modeling import load_t5
from idgen import IdGenConfig
from idgen.algorithm import ClaimBook, chunks, generate_ids, normalize, propose
from idgen.generator import Generator
from idgen.warmstart import WarmstartConfig, warmstart
from pretrain.lm import lm_model_dir
from tokenization.spm import load_tokenizer

OUT = Path(__file__).resolve().parents[1] / "docs" / "results" / "lm-warmstart-beauty.json"


def subset(items: dict[str, str], n: int, seed: int) -> dict[str, str]:
    """``n`` items chosen by a seeded hash of their keys (the same on every machine), in key order."""
    keys = sorted(items, key=lambda k: hashlib.sha256(f"{seed}\x00{k}".encode()).hexdigest())[:n]
    return {k: items[k] for k in sorted(keys)}


def first_round(model, tok, items: dict[str, str], cfg: IdGenConfig) -> dict:
    """Algorithm 1's first round only: every item proposes its ``groups`` candidates at lambda = 1 in the first
    length window, and claims are settled in key order (``ClaimBook``), as ``generate_ids`` does in its round 0."""
    gen = Generator(model, tok, cfg.max_text_tokens)
    book = ClaimBook(items, cfg)
    keys = sorted(items)
    for batch in tqdm(chunks(keys, cfg.batch_size), desc="first round", unit="batch"):
        book.propose(0, propose(gen, items, batch, [0] * len(batch), cfg))
    top = [normalize(book.proposals[k][0], cfg.normalize) for k in keys]
    book.resolve(0)
    ids = list(book.ids.values())
    return {
        "first_round_unique_pct": 100.0 * len(ids) / len(keys),
        "mean_words_per_id": sum(len(i.split()) for i in ids) / max(1, len(ids)),
        "top_candidate_distinct_pct": 100.0 * len({t for t in top if t}) / len(keys),
        "top_candidate_mean_words": sum(len(t.split()) for t in top) / len(keys),
        "examples": {k: book.ids.get(k) for k in keys[:5]},
    }


def arm(name: str, model, tok, items: dict[str, str], warm: WarmstartConfig, idgen: IdGenConfig, full: bool) -> dict:
    t0 = time.perf_counter()
    losses = warmstart(model, tok, list(items.values()), warm)
    out = {"arm": name, "warmstart_steps": warm.steps, "warmstart_loss_last20": sum(losses[-20:]) / len(losses[-20:]),
           "warmstart_seconds": time.perf_counter() - t0}
    t1 = time.perf_counter()
    out.update(first_round(model, tok, items, idgen))
    if full:  # the whole of Algorithm 1 (until every item has a unique ID): rounds, IDs of the final table
        table = generate_ids(model, tok, items, idgen)
        out.update(rounds=table.report["rounds"], longer_window_pct=table.report["longer_window_pct"],
                   final_mean_words_per_id=sum(len(i.split()) for i in table.ids.values()) / len(table.ids))
    out["idgen_seconds"] = time.perf_counter() - t1
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="prepared dataset folder (item_plain_text.txt)")
    p.add_argument("--lm", type=Path, required=True, help="LM folder (idgenrec pretrain lm --out)")
    p.add_argument("--items", type=int, default=3000)
    p.add_argument("--steps", type=int, default=300, help="warm-start steps (the foundation recipe's)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--max-text-tokens", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--matched", action="store_true", help="add the time-matched random arm")
    p.add_argument("--arms", default="random,lm", help="which of the arms to run: random, lm (comma-separated)")
    p.add_argument("--full", action="store_true", help="also run Algorithm 1 to the end (slow from random weights)")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    lm_dir = lm_model_dir(args.lm)
    tok = load_tokenizer(lm_dir)
    items = subset({k: it.text for k, it in read_item_text(args.data / "item_plain_text.txt").items()}, args.items,
                   args.seed)
    warm = WarmstartConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                           max_text_tokens=args.max_text_tokens, seed=args.seed)
    idgen = IdGenConfig(max_text_tokens=args.max_text_tokens)
    config = load_t5(lm_dir).config

    def fresh():
        torch.manual_seed(args.seed + 1)
        return type(load_t5(lm_dir))(config)

    lm_summary = json.loads((Path(args.lm) / "summary.json").read_text()) if (Path(args.lm) / "summary.json").exists() else {}
    lm_seconds = sum(s.get("seconds", 0.0) for s in lm_summary.get("stages", []))
    result = {
        "data": str(args.data), "lm": str(args.lm), "items": len(items), "seed": args.seed, "threads": args.threads,
        "lm_model": {k: getattr(config, k) for k in ("d_model", "d_ff", "num_layers", "num_decoder_layers", "num_heads",
                                                      "vocab_size")},
        "lm_training_seconds": lm_seconds, "lm_valid": (lm_summary.get("stages") or [{}])[-1].get("valid"),
        "lm_datasets": (json.loads((Path(args.lm) / "text" / "text.json").read_text())["items"]
                        if (Path(args.lm) / "text" / "text.json").exists() else None),
        "arms": [],
    }
    plan = {"random": ("random init", fresh, warm), "lm": ("LM init", lambda: load_t5(lm_dir), warm)}
    chosen = [plan[a] for a in args.arms.split(",")]
    for i in range(len(chosen) + (args.matched and lm_seconds > 0)):
        if i < len(chosen):
            name, model, cfg = chosen[i]
        else:  # as many more steps as the LM's training time buys at the measured warm-start speed
            extra = int(lm_seconds / (result["arms"][0]["warmstart_seconds"] / args.steps))  # arm 0: random
            name, model, cfg = (f"random init, time-matched (+{extra} steps)", fresh,
                                WarmstartConfig(**{**warm.__dict__, "steps": args.steps + extra}))
        result["arms"].append(arm(name, model(), tok, items, cfg, idgen, args.full))
        write_json(args.out, result)  # after every arm, so a long run leaves what it measured

    print(f"{'arm':44s} {'steps':>6s} {'loss':>6s} {'1st-round unique %':>19s} {'words/ID':>9s} "
          f"{'top-1 distinct %':>17s}")
    for r in result["arms"]:
        print(f"{r['arm']:44s} {r['warmstart_steps']:6d} {r['warmstart_loss_last20']:6.3f} "
              f"{r['first_round_unique_pct']:19.1f} {r['mean_words_per_id']:9.2f} {r['top_candidate_distinct_pct']:17.1f}")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()

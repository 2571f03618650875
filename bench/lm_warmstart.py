"""What language pretraining buys the ID generator (issue 15): Algorithm 1 after the tag warm-start, from random
weights vs from a span-corruption LM (``idgenrec pretrain lm``), on a subset of one dataset's items.

Both arms have the LM's architecture and tokenizer (so only the starting weights differ), the same warm-start
(``idgen.warmstart``: steps, batch, lr, seed) on the subset's item text, then Algorithm 1 (paper defaults) names
every item of the subset. ``--matched`` adds a third arm: random weights warm-started for as many more steps as
the LM's pretraining time buys at the measured warm-start speed (equal total CPU time, the LM stage counted).

Per arm: share of items whose first try (lambda = 1, first length window) gave a unique ID, i.e. Algorithm 1's
first round; mean words per ID; rounds Algorithm 1 needed; warm-start loss (mean of the last 20 steps); seconds.
Prints a table and writes JSON.

    python bench/lm_warmstart.py --data DIR --lm LM [--items 3000] [--steps 300] [--matched] [--out FILE]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import torch

from genrec.dataset import read_item_text
from genrec.io import atomic_write
from genrec.modeling import load_t5
from idgen import IdGenConfig
from idgen.algorithm import generate_ids
from idgen.warmstart import WarmstartConfig, warmstart
from pretrain.lm import lm_model_dir
from tokenization.spm import load_tokenizer

OUT = Path(__file__).resolve().parents[1] / "docs" / "results" / "lm-warmstart-beauty.json"


def subset(items: dict[str, str], n: int, seed: int) -> dict[str, str]:
    """``n`` items chosen by a seeded hash of their keys (the same on every machine), in key order."""
    keys = sorted(items, key=lambda k: hashlib.sha256(f"{seed}\x00{k}".encode()).hexdigest())[:n]
    return {k: items[k] for k in sorted(keys)}


def arm(name: str, model, tok, items: dict[str, str], warm: WarmstartConfig, idgen: IdGenConfig) -> dict:
    t0 = time.perf_counter()
    losses = warmstart(model, tok, list(items.values()), warm)
    warm_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    table = generate_ids(model, tok, items, idgen)
    ids = list(table.ids.values())
    report = table.report
    return {
        "arm": name,
        "warmstart_steps": warm.steps,
        "warmstart_loss_last20": sum(losses[-20:]) / len(losses[-20:]),
        "warmstart_seconds": warm_s,
        "first_round_unique_pct": 100.0 - report["second_try_pct"],
        "mean_words_per_id": sum(len(i.split()) for i in ids) / len(ids),
        "mean_chars_per_id": sum(len(i) for i in ids) / len(ids),
        "rounds": report["rounds"],
        "longer_window_pct": report["longer_window_pct"],
        "idgen_seconds": time.perf_counter() - t1,
        "examples": dict(list(table.ids.items())[:5]),
    }


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
        result["arms"].append(arm(name, model(), tok, items, cfg, idgen))
        with atomic_write(args.out) as f:  # after every arm, so a long run leaves what it measured
            json.dump(result, f, indent=2)

    print(f"{'arm':44s} {'steps':>6s} {'loss':>6s} {'1st-round unique %':>19s} {'words/ID':>9s} {'rounds':>7s}")
    for r in result["arms"]:
        print(f"{r['arm']:44s} {r['warmstart_steps']:6d} {r['warmstart_loss_last20']:6.3f} "
              f"{r['first_round_unique_pct']:19.1f} {r['mean_words_per_id']:9.2f} {r['rounds']:7d}")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()

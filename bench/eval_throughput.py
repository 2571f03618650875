"""Evaluation throughput: the reference's constrained decoding (HF ``generate``, batch size 1, nested-dict
``prefix_allowed_tokens_fn``) against ``genrec.decoding`` (tensor trie, many users per forward pass).

Beauty with all 12,101 items in the trie; IDs are the reference's phase-0 IDs (one item has an empty ID there and
gets the fallback ID ``item <key>``, reported in the JSON); a SentencePiece tokenizer trained on Beauty item text;
a tiny random T5 recommender; 20 beams; the first ``--users`` test users. Ours runs with 1 and (on a CPU) 2 worker
threads (``rank_prompts(workers=...)``). The decoders take turns for ``--rounds`` rounds (ours on all users, the
reference on a slice of ``--hf-users``), so both see the same spells of a shared machine. Prints users/s of each,
the ratios, and whether the top-10 lists are identical on the users both decoded (and across all our runs). Writes
JSON (``bench/out/eval_throughput.json``).

    python bench/eval_throughput.py [--users 1000] [--hf-users 300] [--rounds 3] [--batch-size 64]
"""
from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch
from tqdm import tqdm

from genrec import dist
from genrec.dataset import Dataset
from genrec.decoding import rank_prompts
from genrec.io import write_json
from genrec.modeling import build_t5
from genrec.prompts import PromptBuilder, template_words
from genrec.splits import leave_one_out
from genrec.trie import PrefixTrie
from idgen.idtable import IdTable
from tokenization.spm import load_tokenizer, train_tokenizer

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def reference_ids(path: Path, dataset: Dataset) -> tuple[IdTable, list[str]]:
    """The phase-0 IDs; items with an empty ID get ``item <key>`` (lowercased), which no other item has."""
    table = IdTable.load(path)
    fallback = [k for k, tid in table.ids.items() if not tid.strip()]
    for key in fallback:
        table.ids[key] = f"item {key.lower()}"
    missing = set(dataset.items) - set(table.ids)
    if missing:
        raise SystemExit(f"{len(missing)} Beauty items have no phase-0 ID, e.g. {sorted(missing)[:5]}")
    table.check()
    return table, fallback


def nested_trie(trie: PrefixTrie) -> dict:
    """The reference's dict-of-dicts prefix tree over the same token sequences."""
    root: dict = {}
    for index in range(len(trie)):
        node = root
        for tok in trie.sequence(index):
            node = node.setdefault(tok, {})
    return root


def hf_rankings(model, prompts: list[list[int]], trie: PrefixTrie, num_beams: int, k: int, device) -> list[list[str]]:
    """The reference's way: one user per ``generate`` call, a Python walk of the nested dict per beam per step."""
    root = nested_trie(trie)
    pad = trie.pad_token_id
    inverse = {tuple(trie.sequence(i)[:-1]): key for i, key in enumerate(trie.keys)}

    def allowed(batch_id: int, sent: torch.Tensor) -> list[int]:
        node = root
        for tok in sent.tolist()[1:]:
            node = node.get(tok)
            if node is None:
                return [pad]
        return list(node) or [pad]

    out: list[list[str]] = []
    for prompt in tqdm(prompts, desc="HF generate", unit="user"):
        gen = model.generate(input_ids=torch.tensor([prompt], device=device), num_beams=num_beams,
                             num_return_sequences=num_beams, max_length=trie.max_depth + 1, do_sample=False,
                             prefix_allowed_tokens_fn=allowed, output_scores=True, return_dict_in_generate=True)
        ranking: list[str] = []
        for seq, score in zip(gen.sequences.tolist(), gen.sequences_scores.tolist()):
            toks = seq[1:]
            if trie.eos_token_id in toks and score > -1e5:
                key = inverse[tuple(toks[: toks.index(trie.eos_token_id)])]
                if key not in ranking:
                    ranking.append(key)
        out.append(ranking[:k])
    return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(SHARED / "derived" / "Beauty"))
    ap.add_argument("--ids", default=str(SHARED / "idgenrec" / "Beauty" / "item_generative_indexing_phase_0.txt"))
    ap.add_argument("--tokenizer", default="bench/out/beauty_tokenizer", help="trained here once, then reused")
    ap.add_argument("--vocab", type=int, default=8000)
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--hf-users", type=int, default=300, help="users decoded the reference way (a prefix of --users)")
    ap.add_argument("--beams", type=int, default=20)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds of both decoders")
    ap.add_argument("--out", default="bench/out/eval_throughput.json")
    args = ap.parse_args()

    device = dist.device()
    ds = Dataset.load(args.data, "Beauty")
    table, fallback = reference_ids(Path(args.ids), ds)
    tok_dir = Path(args.tokenizer)
    if (tok_dir / "tokenizer_config.json").exists():
        tokenizer = load_tokenizer(tok_dir)
    else:
        tokenizer = train_tokenizer([it.text for it in ds.items.values()], tok_dir, args.vocab, extra_texts=template_words())
    t0 = time.perf_counter()
    token_ids = table.token_ids(tokenizer)
    trie = PrefixTrie(token_ids, tokenizer.eos_token_id, tokenizer.pad_token_id).to(device)
    build_s = time.perf_counter() - t0
    samples = leave_one_out(ds, "test")[: args.users]
    builder = PromptBuilder(tokenizer)
    prompts = [builder.build([token_ids[h] for h in s.history], 0).input_ids for s in samples]
    torch.manual_seed(0)
    model = build_t5(len(tokenizer), d_model=64, d_ff=256, d_kv=16, num_layers=2, num_decoder_layers=2,
                     num_heads=4).to(device).eval()

    workers = [1, 2] if device.type == "cpu" else [1]
    for w in workers:  # warm-up
        rank_prompts(model, prompts[: 2 * args.batch_size], trie, args.batch_size, args.beams, args.k, workers=w)
    hf_rankings(model, prompts[:1], trie, args.beams, args.k, device)
    # Rounds alternate between the two decoders, so a slower or faster spell of a shared machine hits both alike:
    # each round decodes all users our way (once per worker setting) and the next slice of users the reference way.
    ours_s = {w: 0.0 for w in workers}
    ours: list | None = None
    ref: list[list[str]] = []
    hf_s, hf_slices = 0.0, [list(range(min(args.hf_users, len(prompts))))[r:: args.rounds] for r in range(args.rounds)]
    for r in range(args.rounds):
        for w in workers:
            sync(device)
            t0 = time.perf_counter()
            ranked = rank_prompts(model, prompts, trie, args.batch_size, args.beams, args.k, progress=True, workers=w)
            got = [[key for key, _ in r] for r in ranked]
            sync(device)
            ours_s[w] += time.perf_counter() - t0
            if ours is not None and got != ours:
                raise SystemExit(f"round {r}, workers={w}: rankings differ from the first run")
            ours = got
        t0 = time.perf_counter()
        ref += hf_rankings(model, [prompts[i] for i in hf_slices[r]], trie, args.beams, args.k, device)
        sync(device)
        hf_s += time.perf_counter() - t0
    n_hf = len(ref)

    ours_top = [ours[i] for part in hf_slices for i in part]
    identical = sum(a == b for a, b in zip(ours_top, ref))
    hf_rate = n_hf / hf_s
    rates = {w: args.rounds * len(prompts) / ours_s[w] for w in workers}
    res = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "items_in_trie": len(trie), "trie_nodes": trie.num_nodes, "trie_max_depth": trie.max_depth,
        "trie_build_s": round(build_s, 3), "fallback_ids": {k: table.ids[k] for k in fallback},
        "tokenizer_vocab": len(tokenizer), "beams": args.beams, "k": args.k, "batch_size": args.batch_size,
        "users": len(prompts), "rounds": args.rounds, "hf_users": n_hf,
        "hf_batch1_users_per_s": hf_rate,
        "ours_batched_users_per_s": {f"workers={w}": rates[w] for w in workers},
        "speedup": {f"workers={w}": rates[w] / hf_rate for w in workers},
        "top10_identical_users": identical, "top10_identical": identical == n_hf,
    }
    print(f"{'decoder':<38} {'users':>6} {'users/s':>10} {'ratio':>7}")
    print(f"{'HF generate, batch 1, dict trie':<38} {n_hf:>6} {hf_rate:>10.2f} {1:>7.1f}")
    for w in workers:
        name = f"genrec.decoding, batch {args.batch_size}, {w} worker{'s' if w > 1 else ''}"
        print(f"{name:<38} {args.rounds * len(prompts):>6} {rates[w]:>10.2f} {rates[w] / hf_rate:>6.1f}x")
    print(f"top-{args.k} identical for {identical}/{n_hf} users; {args.rounds} alternating rounds; device {res['device']}")
    print(f"trie: {len(trie)} items, {trie.num_nodes} nodes, depth {trie.max_depth}, built in {build_s:.2f}s; fallback IDs {res['fallback_ids']}")
    write_json(args.out, res)


if __name__ == "__main__":
    main()

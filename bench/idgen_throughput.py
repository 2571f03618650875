"""ID generation throughput: the reference's way vs our batched Algorithm 1 (1 process) vs 2 Ray workers.

(a) reference: one item at a time, 10-group diverse beam search on Hugging Face's forward pass (encoder states repeated
    per group, as ``generate(num_beam_groups=...)`` runs it), every retry re-encodes the item text;
(b) ours, batched, one process (encoder once per item, retries batched);
(c) ours, 2 Ray workers + registry actor: the run on ready actors, and the start-up (Ray, actors, model replicas)
    reported apart, as it is paid once per pool, not per run.
Prints items/s and ratios, checks every table is unique and non-empty and that (b) == (c), writes JSON.

    python bench/idgen_throughput.py --model GEN_DIR --tokenizer TOK_DIR [--items 2000] [--out FILE]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from transformers.modeling_outputs import BaseModelOutput

from genrec.dataset import read_item_text
from genrec.io import write_json
from genrec.modeling import load_t5
from idgen import dbs
from idgen import IdGenConfig, IdTable
from idgen.algorithm import ClaimBook, generate_ids
from idgen.distributed import RayIdGenerator
from idgen.generator import Generator
from tokenization.spm import load_tokenizer

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "derived" / "Beauty"


class HFStepDecoder:
    """The step interface of ``genrec.t5step.T5StepDecoder`` on Hugging Face's forward pass with a KV cache: every
    group is a full row (encoder states and cross-attention cache repeated per group), as in HF group beam search."""

    def __init__(self, model, hidden: torch.Tensor, mask: torch.Tensor, beams: int, max_steps: int):
        self.model, self.beams = model, beams
        self.hidden, self.mask = hidden.repeat_interleave(beams, 0), mask.repeat_interleave(beams, 0)
        self.cache = None

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        first = self.cache is None
        rows = tokens.repeat_interleave(self.beams) if first else tokens
        out = self.model(encoder_outputs=BaseModelOutput(last_hidden_state=self.hidden), attention_mask=self.mask,
                         decoder_input_ids=rows[:, None], cache=self.cache, use_cache=True)
        self.cache = out.cache
        logits = out.logits[:, -1]
        return logits[:: self.beams] if first else logits

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        return h

    def select(self, inputs: torch.Tensor) -> None:
        rows = (inputs[:, None] * self.beams + torch.arange(self.beams)).view(-1)
        self.cache.batch_select_indices(rows)
        self.hidden, self.mask = self.hidden[rows], self.mask[rows]


def reference_way(model, tokenizer, items: dict[str, str], cfg: IdGenConfig) -> IdTable:
    """Algorithm 1 as the reference runs it: item after item, try after try, each try encoding the text again, each
    step a Hugging Face forward pass over all groups."""
    dbs.T5StepDecoder, ours = HFStepDecoder, dbs.T5StepDecoder
    try:
        return _one_at_a_time(model, tokenizer, items, cfg)
    finally:
        dbs.T5StepDecoder = ours


def _one_at_a_time(model, tokenizer, items: dict[str, str], cfg: IdGenConfig) -> IdTable:
    gen = Generator(model, tokenizer, cfg.max_text_tokens)
    book = ClaimBook(items, cfg)
    for key in sorted(items):
        tries = 0
        while True:
            gen.forget()
            gen.encode({key: items[key]})
            lam, lo, hi = cfg.schedule(tries)
            seqs = dbs.diverse_beam_search(model, gen.batch([key]), torch.tensor([float(lam)]), torch.tensor([lo]),
                                       torch.tensor([hi]), cfg.groups)[0]
            if book.claim(key, tokenizer.batch_decode(seqs, skip_special_tokens=True)) is not None:
                book.accepted_try[key] = book.pending.pop(key)
                break
            tries += 1
            book.pending[key] = tries
            if tries >= cfg.max_tries:
                raise RuntimeError(f"item {key!r}: no unique ID in {tries} tries")
    return book.table()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="generator folder (e.g. from `idgenrec idgen warmstart`)")
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--items", type=int, default=2000, help="first N items")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-text-tokens", type=int, default=64)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "out" / "idgen_throughput.json"))
    args = ap.parse_args()

    import ray

    tok = load_tokenizer(args.tokenizer)
    model = load_t5(args.model).eval()
    all_items = read_item_text(Path(args.data) / "item_plain_text.txt")
    items = {k: it.text for k, it in list(all_items.items())[: args.items]}
    cfg = IdGenConfig(batch_size=args.batch_size, max_text_tokens=args.max_text_tokens)
    runs: dict[str, dict] = {}

    def timed(name: str, fn) -> IdTable:
        t0 = time.perf_counter()
        table = fn()
        secs = time.perf_counter() - t0
        table.check()
        assert len(table) == len(items) and all(table.ids.values())
        runs[name] = {"seconds": secs, "items_per_s": len(items) / secs, "second_try_pct": table.report["second_try_pct"],
                      "longer_window_pct": table.report["longer_window_pct"], "rounds": table.report.get("rounds")}
        print(f"{name:<28} {secs:9.1f} s {len(items) / secs:10.1f} items/s", flush=True)
        return table

    timed("a_reference_one_at_a_time", lambda: reference_way(model, tok, items, cfg))
    b = timed("b_batched_1_process", lambda: generate_ids(model, tok, items, cfg, progress=False))
    t0 = time.perf_counter()
    with RayIdGenerator(model, tok, workers=2) as pool:
        startup_s = time.perf_counter() - t0
        print(f"{'c: Ray + 2 actors start-up':<28} {startup_s:9.1f} s", flush=True)
        c = timed("c_ray_2_workers", lambda: pool.generate(items, cfg, progress=False))
    result = {
        "items": len(items), "data": args.data, "batch_size": args.batch_size, "max_text_tokens": args.max_text_tokens,
        "threads": torch.get_num_threads(), "device": str(next(model.parameters()).device),
        "runs": runs,
        "b_over_a": runs["b_batched_1_process"]["items_per_s"] / runs["a_reference_one_at_a_time"]["items_per_s"],
        "c_over_b": runs["c_ray_2_workers"]["items_per_s"] / runs["b_batched_1_process"]["items_per_s"],
        "c_startup_s": startup_s,
        "c_with_startup_over_b": runs["b_batched_1_process"]["seconds"] / (runs["c_ray_2_workers"]["seconds"] + startup_s),
        "b_equals_c": b.ids == c.ids,
        "report_b": b.report,
    }
    print(f"(b)/(a) = {result['b_over_a']:.1f}x   (c)/(b) = {result['c_over_b']:.2f} "
          f"({result['c_with_startup_over_b']:.2f} with the start-up)   (b) == (c): {result['b_equals_c']}")
    write_json(args.out, result)


if __name__ == "__main__":
    main()

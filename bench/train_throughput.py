"""Training throughput of the one trainer on Beauty prompts: samples/s, tokens/s and achieved FLOP/s.

Measures, in one run on this machine:

* the matmul peak (fp32 ``torch.mm`` on all cores; the best of several sizes),
* recommender-stage samples/s and tokens/s with a tiny T5 (``genrec.modeling.TINY``: d128, 2+2 layers) on
  ``/work/shared/datasets/derived/Beauty`` with the reference IDs
  (``/work/shared/datasets/idgenrec/Beauty/item_generative_indexing_phase_0.txt``), as 1 process and as 2 processes
  with ZeRO-2 (``torchrun``, gloo on CPU),
* the achieved FLOP/s of the recommender stage as a fraction of that peak (FLOPs per token counted by
  ``torch.utils.flop_counter`` on real batches, forward + backward),
* generator-stage (soft-ID) samples/s on 1 process, with the item text cut to ``--text-tokens`` and batches cut by
  ``--generator-max-tokens`` (``train.generator_max_tokens``, 0: no bound),
* each run's peak resident memory (rank 0's ``ru_maxrss``),

each in every precision of ``--precisions`` (``train.precision``: fp32 and bf16 autocast by default) and with each
model class of ``--t5`` (``genrec``: the trainer's ``GenRecT5``; ``stock``: Hugging Face's T5 as the trainer used it
before ``genrec.t5fast``), side by side with the speed ratio to the first of them. ``--init FOLDER`` starts both
models from a ``save_pretrained`` folder (an LM, an export's recommender) with its tokenizer when it has one, and
``--denormals flush keep`` measures the code's flushing of subnormal floats (``genrec.t5fast.flush_denormals``)
against IEEE subnormals, which trained models produce and x86 cores compute slowly.

    python bench/train_throughput.py [--steps 40] [--precisions fp32 bf16] [--out bench/out/train_throughput.json]
    python bench/train_throughput.py --precisions fp32 --t5 stock genrec   # the CPU fast paths' gain
    python bench/train_throughput.py --stages generator --text-tokens 256 --generator-max-tokens 0   # memory
    python bench/train_throughput.py --init LM/model --denormals flush keep --processes 1 --stages recommender

Prints a table and writes JSON. Numbers depend on the machine and on other load; the JSON records both.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets" / "derived" / "Beauty"
IDS = ROOT.parent / "shared" / "datasets" / "idgenrec" / "Beauty" / "item_generative_indexing_phase_0.txt"
CACHE = ROOT / "bench" / "out" / "cache"


def matmul_peak(seconds: float = 3.0) -> float:
    """Best fp32 matmul FLOP/s over a few square sizes, all threads."""
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    best = 0.0
    for n in (512, 1024, 2048):
        a, b = torch.randn(n, n), torch.randn(n, n)
        torch.mm(a, b)
        reps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 3:
            torch.mm(a, b)
            reps += 1
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - start))
    return best


def tokenizer_dir(vocab: int) -> Path:
    out = CACHE / f"beauty-spm-{vocab}"
    if not out.exists():
        from genrec.dataset import Dataset
        from genrec.prompts import template_words
        from tokenization.spm import train_tokenizer

        ds = Dataset.load(DATA)
        train_tokenizer([it.text for it in ds.items.values()], out, vocab, extra_texts=template_words())
    return out


def flops_per_token(trainer, kind: str, batches: int = 3) -> float:
    """FLOPs (forward + backward) per token of ``kind``'s training step, counted on real batches."""
    from torch.utils.flop_counter import FlopCounterMode

    from pretrain.batching import EpochBatches, collate

    render = trainer._renderer(kind)
    batches_it = iter(EpochBatches(trainer.source, render, 0, 0, 1, 0, 512, trainer.train_cfg["max_tokens"], trainer.train_cfg["max_batch"]))
    engine_model = trainer.engines[kind].module
    model = type(engine_model)(engine_model.config)  # a plain copy: backward outside DeepSpeed's gradient hooks
    model.load_state_dict(engine_model.state_dict())
    model.to(trainer.device)
    total_flops = total_tokens = 0
    for _ in range(batches):
        t = {k: v.to(trainer.device) for k, v in collate(next(batches_it)).items()}
        with FlopCounterMode(display=False) as counter:
            model(**t).loss.backward()
        model.zero_grad(set_to_none=True)
        total_flops += counter.get_total_flops()
        total_tokens += int(t["attention_mask"].sum()) + int((t["labels"] != -100).sum())
    return total_flops / total_tokens


def worker(args: argparse.Namespace) -> None:
    """Under torchrun: one measured epoch of ``args.stage``; rank 0 writes the numbers to ``args.result``."""
    from genrec import dist
    from genrec.dataset import Dataset
    from idgen.idtable import IdTable
    from pretrain.engine import Trainer
    from pretrain.sources import LeaveOneOutSource
    from tokenization.spm import load_tokenizer

    if args.denormals == ["keep"]:  # undo genrec.modeling's flush before the first parallel region starts the threads
        import torch

        torch.set_flush_denormal(False)
    if args.t5 == ["stock"]:  # Hugging Face's own T5 class (no genrec.t5fast, loss on every position), for the ratio
        import genrec.modeling
        from transformers import T5ForConditionalGeneration

        genrec.modeling.GenRecT5 = T5ForConditionalGeneration
    ds = Dataset.load(DATA)
    has_tokenizer = args.init and (args.init / "tokenizer_config.json").exists()
    tok = load_tokenizer(args.init if has_tokenizer else tokenizer_dir(args.vocab))
    start = {"init": str(args.init)} if args.init else {}
    cfg = {
        "seed": 0,
        "model": {"recommender": {**start, "dropout_rate": args.dropout}, "generator": {**start, "dropout_rate": args.dropout}},
        "prompt": {"max_length": 512},
        "train": {"max_tokens": args.max_tokens, "max_batch": args.max_batch, "chunk_size": 2048,
                  "max_steps_per_epoch": args.steps, "checkpoint_every": 0, "log_every": 10**9,
                  "precision": args.precision, "threads": args.threads,
                  "generator_max_tokens": args.generator_max_tokens or None},
        "optim": {"recommender": {"lr": 1e-3}, "generator": {"lr": 1e-4}},
        "deepspeed": {"config": "zero2"},
        "softid": {"max_text_tokens": args.text_tokens},
    }
    trainer = Trainer(cfg, LeaveOneOutSource(ds, 20, prefixes_per_user=1), Path(args.result).with_suffix(".run"), tokenizer=tok)
    trainer.setup()
    table = IdTable.load(IDS)
    trainer.idtable = table
    fpt = flops_per_token(trainer, "recommender") if args.stage == "recommender" and dist.is_main() else 0.0
    trainer.train_epoch(args.stage, table, epoch=0)  # warm-up epoch (allocations, caches)
    stats = trainer.train_epoch(args.stage, table, epoch=1)
    if dist.is_main():
        import resource

        peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
        Path(args.result).write_text(json.dumps({**stats, "flops_per_token": fpt, "world": dist.world_size(),
                                                 "peak_rss_bytes": peak_rss,
                                                 "threads": __import__("torch").get_num_threads(),
                                                 "dtype": str(trainer.dtype)}))


def launch(nproc: int, stage: str, precision: str, t5: str, dropout: float, denormals: str, args: argparse.Namespace,
           result: Path) -> dict:
    threads = args.threads or max(1, (os.cpu_count() or 1) // nproc)
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), __file__, "--worker",
           "--stage", stage, "--precision", precision, "--result", str(result), "--steps", str(args.steps), "--vocab", str(args.vocab),
           "--max-tokens", str(args.max_tokens), "--max-batch", str(args.max_batch), "--dropout", str(dropout),
           "--threads", str(threads), "--text-tokens", str(args.text_tokens),
           "--generator-max-tokens", str(args.generator_max_tokens), "--t5", t5, "--denormals", denormals,
           *(["--init", str(args.init)] if args.init else [])]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"worker failed ({' '.join(cmd)}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads(result.read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=40, help="measured steps per run (after a warm-up epoch of the same length)")
    p.add_argument("--vocab", type=int, default=8000)
    p.add_argument("--max-tokens", type=int, default=8192)
    p.add_argument("--max-batch", type=int, default=64)
    p.add_argument("--threads", type=int, help="torch threads per process (default: cores / processes); 1 on a "
                                                "loaded machine, where spinning OpenMP threads wait for each other")
    p.add_argument("--dropouts", nargs="+", type=float, default=[0.1], help="T5 dropout rates, one run each (dropout "
                   "masks cost a fifth to a third of a CPU step at this size; the recipes' choice, not the code's)")
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16", "auto"])
    p.add_argument("--processes", nargs="+", type=int, default=[1, 2], help="recommender runs with this many processes")
    p.add_argument("--stages", nargs="+", default=["recommender", "generator"], choices=["recommender", "generator"])
    p.add_argument("--text-tokens", type=int, default=128, help="item text tokens the generator stage reads")
    p.add_argument("--generator-max-tokens", type=int, default=32768,
                   help="train.generator_max_tokens: distinct history items * longest text per generator batch (0: none)")
    p.add_argument("--t5", nargs="+", default=["genrec"], choices=["genrec", "stock"],
                   help="model class: genrec.modeling.GenRecT5 (the trainer's) and/or Hugging Face's stock "
                        "T5ForConditionalGeneration (bernoulli dropout, SDPA, loss over every decoder position)")
    p.add_argument("--init", type=Path, help="a save_pretrained T5 folder both models start from (default: random weights)")
    p.add_argument("--denormals", nargs="+", default=["flush"], choices=["flush", "keep"],
                   help="subnormal floats flushed to zero (the code's setting) or kept (IEEE), one run each")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "train_throughput.json")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--stage", default="recommender", help=argparse.SUPPRESS)
    p.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    p.add_argument("--dropout", type=float, default=0.1, help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    if not DATA.exists() or not IDS.exists():
        raise SystemExit(f"needs {DATA} and {IDS}")
    tokenizer_dir(args.vocab)
    peak = matmul_peak()
    tmp = CACHE / "runs"
    tmp.mkdir(parents=True, exist_ok=True)
    runs = [(f"recommender, {n} process{'es ZeRO-2' if n > 1 else ''}", n, "recommender")
            for n in args.processes if "recommender" in args.stages]
    if "generator" in args.stages:
        runs.append(("generator (soft IDs), 1 process", 1, "generator"))
    rows = []
    fpt_by_stage: dict[str, float] = {}
    for name, nproc, stage in runs:
        for prec, t5, drop, den in [(prec, t5, d, den) for den in args.denormals for d in args.dropouts for t5 in args.t5
                                    for prec in args.precisions]:
            r = launch(nproc, stage, prec, t5, drop, den, args, tmp / f"{stage}-{nproc}-{prec}-{t5}-{drop}-{den}.json")
            fpt = r["flops_per_token"] or fpt_by_stage.get(stage)  # counted once per stage (the same FLOPs in bf16)
            if fpt:
                fpt_by_stage[stage] = fpt
            achieved = fpt * r["tokens_per_s"] if fpt else None
            rows.append({"run": name, "processes": nproc, "stage": stage, "precision": prec, "t5": t5, "dropout": drop,
                         "denormals": den, "dtype": r["dtype"],
                         "samples_per_s": r["samples_per_s"], "tokens_per_s": r["tokens_per_s"],
                         "flops_per_token": fpt, "achieved_flops": achieved,
                         "fraction_of_peak": achieved / peak if achieved else None, "steps": r["steps"],
                         "seconds": r["seconds"], "threads": r["threads"],
                         "peak_rss_gb": r["peak_rss_bytes"] / 2**30})
    for r in rows:  # speed relative to the first row (denormals, dropout, precision, model class) of the same run
        base = next(b for b in rows if b["run"] == r["run"])
        r["ratio"] = r["samples_per_s"] / base["samples_per_s"]
    print(f"matmul peak (fp32): {peak / 1e9:.1f} GFLOP/s ({os.cpu_count()} cores)")
    print(f"{'run':36} {'t5':>6} {'denormals':>9} {'dropout':>7} {'precision':>9} {'samples/s':>10} {'ratio':>6} {'tokens/s':>10} {'GFLOP/s':>9} {'of peak':>8} "
          f"{'peak RSS':>9}")
    for r in rows:
        gf = f"{r['achieved_flops'] / 1e9:9.2f}" if r["achieved_flops"] else f"{'-':>9}"
        frac = f"{r['fraction_of_peak']:8.1%}" if r["fraction_of_peak"] else f"{'-':>8}"
        print(f"{r['run']:36} {r['t5']:>6} {r['denormals']:>9} {r['dropout']:7.2f} {r['precision']:>9} {r['samples_per_s']:10.1f} {r['ratio']:6.2f} {r['tokens_per_s']:10.0f} {gf} {frac} "
              f"{r['peak_rss_gb']:7.2f}GB")
    from genrec.io import write_json

    write_json(args.out, {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "machine": platform.processor() or platform.machine(),
                          "cpu_count": os.cpu_count(), "load_avg": os.getloadavg(), "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                          "matmul_peak_flops": peak, "model": str(args.init) if args.init else "genrec.modeling.TINY (d128, 2+2 layers)",
                          "dropouts": args.dropouts, "denormals": args.denormals, "text_tokens": args.text_tokens,
                          "generator_max_tokens": args.generator_max_tokens, "rows": rows})
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()

"""Run by tests under torchrun: train with the Trainer, then write this rank's weight digests.

Usage: python -m torch.distributed.run --nproc_per_node N tests/engine_worker.py CONFIG DATA OUT [key=value ...]
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch

from genrec import dist
from genrec.config import load_config
from genrec.dataset import Dataset
from pretrain.engine import Trainer
from pretrain.sources import LeaveOneOutSource
from tokenization.spm import load_tokenizer


def digest(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, p in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def main() -> None:
    config, data, out, *overrides = sys.argv[1:]
    cfg = load_config(config, overrides)
    dataset = Dataset.load(data)
    trainer = Trainer(cfg, LeaveOneOutSource(dataset), Path(out), tokenizer=load_tokenizer(cfg["tokenizer"]["path"]),
                      eval_dataset=dataset)
    summary = trainer.fit()
    weights = {name: digest(trainer._plain(name)) for name in trainer.engines}  # gathered under ZeRO-3
    (Path(out) / f"rank{dist.rank()}.json").write_text(json.dumps({"weights": weights, "summary": summary}, default=str))


if __name__ == "__main__":
    main()

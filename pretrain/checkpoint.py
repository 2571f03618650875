"""Atomic trainer checkpoints: both DeepSpeed engines, trainer state, per-rank RNG states and the current IdTable.

Layout of ``RUN/checkpoints/latest`` (written as ``.latest.tmp`` by all ranks, renamed by rank 0 only once every
rank has finished, so a kill at any moment leaves the previous checkpoint intact)::

    recommender/latest/...   DeepSpeed save_checkpoint (tag "latest") of the recommender engine
    generator/latest/...     the same for the generator engine
    rng-rank{R}.pt           python, numpy, torch (+cuda) RNG states of rank R
    state.json               schedule position, data position, best validation result, summary so far
    idtable.tsv              the IdTable the models were trained with at this point (none for language pretraining)
"""
from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genrec import dist
from genrec.io import write_json
from idgen.idtable import IdTable

LATEST = "latest"


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def save(run_dir: str | Path, engines: dict[str, Any], state: dict[str, Any], idtable: IdTable | None) -> Path:
    """Collective: every rank calls it at the same step."""
    root = Path(run_dir) / "checkpoints"
    tmp, final = root / f".{LATEST}.tmp", root / LATEST
    if dist.is_main():
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    dist.barrier()
    for name, engine in engines.items():
        engine.save_checkpoint(str(tmp / name), tag=LATEST, save_latest=False)
    torch.save(rng_state(), tmp / f"rng-rank{dist.rank()}.pt")
    dist.barrier()
    if dist.is_main():
        if idtable is not None:  # language pretraining has none
            idtable.save(tmp / "idtable.tsv")
        write_json(tmp / "state.json", state)
        old = root / f".{LATEST}.old"
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    dist.barrier()
    return final


def exists(run_dir: str | Path) -> bool:
    return (Path(run_dir) / "checkpoints" / LATEST / "state.json").exists()


def load(run_dir: str | Path, engines: dict[str, Any]) -> tuple[dict[str, Any], IdTable | None]:
    """Restore engines (weights, optimizer, scheduler) and this rank's RNG; return (trainer state, IdTable)."""
    path = Path(run_dir) / "checkpoints" / LATEST
    for name, engine in engines.items():
        engine.load_checkpoint(str(path / name), tag=LATEST)
    rng = path / f"rng-rank{dist.rank()}.pt"
    if rng.exists():
        set_rng_state(torch.load(rng, weights_only=False))
    state = json.loads((path / "state.json").read_text())
    table = path / "idtable.tsv"
    return state, IdTable.load(table) if table.exists() else None

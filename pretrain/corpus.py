"""The Fusion pretraining corpus (paper 3.1, 3.5, Table 3): many prepared datasets merged into one.

* keys are namespaced by dataset (``beauty:B00...``, users too), so the same ASIN in two domains stays two items
  unless ``merge_items`` (then items share a key; when their texts differ the first dataset's text is kept and the
  conflict counted);
* each dataset with more than ``max_users`` users is downsampled deterministically: users are ranked by
  ``sha256(seed, dataset, user)`` and the first ``max_users`` kept, in their original order, so the choice does
  not depend on file order and is the same on every machine; items no kept user touched are dropped;
* users keep their whole sequence, so the leave-one-out rule applies per user exactly as for one dataset: only
  the training samples (prefixes before the validation item) go into the shards.

The corpus folder holds the merged dataset in canonical form (item text once), ``corpus.json`` (sources, seed,
stats per domain and overall) and ``shards/`` (``pretrain.shards``). It is written atomically.
"""
from __future__ import annotations

import hashlib
import json
import random
import re
from pathlib import Path
from typing import Any, Mapping

from genrec.dataset import Dataset, Item
from genrec.io import DataError, atomic_dir, write_json
from genrec.splits import Sample, leave_one_out

from .shards import write_shards

CORPUS_FILE = "corpus.json"
SHARDS_DIR = "shards"
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


def downsample_users(users: Mapping[str, list[str]], max_users: int | None, seed: int, name: str) -> dict[str, list[str]]:
    """At most ``max_users`` users, chosen by a seeded hash of (dataset, user) and kept in their original order."""
    if max_users is None or max_users <= 0 or len(users) <= max_users:
        return dict(users)

    def rank(user: str) -> str:
        return hashlib.sha256(f"{seed}\x00{name}\x00{user}".encode()).hexdigest()

    keep = set(sorted(users, key=rank)[:max_users])
    return {u: seq for u, seq in users.items() if u in keep}


def table3_stats(ds: Dataset) -> dict[str, Any]:
    """The paper's Table 3 columns: users, items, interactions, density."""
    s = ds.stats()
    return {k: s[k] for k in ("users", "items", "interactions", "density")}


def merge_datasets(datasets: Mapping[str, Dataset], max_users: int | None, seed: int,
                   merge_items: bool = False) -> tuple[Dataset, dict[str, Any]]:
    """The merged Fusion dataset and its stats (per domain before/after downsampling, and overall)."""
    items: dict[str, Item] = {}
    users: dict[str, list[str]] = {}
    per_domain: dict[str, Any] = {}
    conflicts = 0
    for name, ds in datasets.items():
        if not NAME_RE.match(name):
            raise DataError(name, None, "dataset name must be letters, digits, '_', '-' or '.' (it prefixes keys)")
        kept = downsample_users(ds.users, max_users, seed, name)
        used = {k for seq in kept.values() for k in seq}
        domain = Dataset({k: ds.items[k] for k in ds.items if k in used}, kept, name)
        per_domain[name] = {"original": table3_stats(ds), **table3_stats(domain)}
        for key, item in domain.items.items():
            new_key = key if merge_items else f"{name}:{key}"
            if new_key in items:
                conflicts += items[new_key].text != item.text
                continue
            items[new_key] = Item(new_key, item.text, dict(item.fields))
        for user, seq in kept.items():
            users[f"{name}:{user}"] = [k if merge_items else f"{name}:{k}" for k in seq]
    merged = Dataset(items, users, "fusion")
    stats = {"datasets": per_domain, "overall": table3_stats(merged)}
    if merge_items:
        stats["merged_item_text_conflicts"] = conflicts
    return merged, stats


def training_samples(merged: Dataset, max_history: int) -> list[Sample]:
    """Leave-one-out training samples of every user, tagged with the user's dataset (the key's namespace)."""
    samples = leave_one_out(merged, "train", max_history)
    return [Sample(s.user, s.history, s.target, s.user.partition(":")[0]) for s in samples]


def build_corpus(datasets: Mapping[str, Dataset], out: str | Path, max_users: int | None = 30000, seed: int = 0,
                 merge_items: bool = False, max_history: int = 20, samples_per_shard: int = 2000,
                 shard_multiple: int = 8, sources: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Merge, downsample, write the corpus folder ``out`` atomically, and return the content of ``corpus.json``."""
    if not datasets:
        raise ValueError("build_corpus needs at least one dataset")
    merged, stats = merge_datasets(datasets, max_users, seed, merge_items)
    samples = training_samples(merged, max_history)
    random.Random(f"idgenrec-corpus:{seed}").shuffle(samples)  # mix domains across shards
    info = {
        "name": merged.name,
        "seed": seed,
        "max_users": max_users,
        "merge_items": merge_items,
        "max_history": max_history,
        "sources": dict(sources or {}),
        **stats,
        "train_samples": len(samples),
    }
    with atomic_dir(out) as tmp:
        merged.save(tmp)
        manifest = write_shards(samples, tmp / SHARDS_DIR, samples_per_shard, shard_multiple,
                                meta={"split": "train", "max_history": max_history})
        info["shards"] = len(manifest["shards"])
        write_json(tmp / CORPUS_FILE, info)
    return info


def load_corpus_info(corpus: str | Path) -> dict[str, Any]:
    path = Path(corpus) / CORPUS_FILE
    if not path.exists():
        raise DataError(path, None, "not a Fusion corpus folder (no corpus.json)")
    return json.loads(path.read_text(encoding="utf-8"))


def format_table(info: Mapping[str, Any]) -> str:
    """Table 3 as text: one row per domain and the Fusion total."""
    rows = [("dataset", "users", "items", "interactions", "density")]
    for name, s in info["datasets"].items():
        rows.append((name, f"{s['users']:,}", f"{s['items']:,}", f"{s['interactions']:,}", f"{s['density']:.5f}"))
    o = info["overall"]
    rows.append(("Fusion", f"{o['users']:,}", f"{o['items']:,}", f"{o['interactions']:,}", f"{o['density']:.5f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows)

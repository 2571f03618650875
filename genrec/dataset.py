"""The dataset model every command reads: items (key -> fields + plain text) and users (key -> chronological items).

The canonical saved form is the IDGenRec text format (``user_sequence.txt``, ``item_plain_text.txt``) plus
``items.jsonl`` (structured fields, optional) and ``stats.json``.
"""
from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .io import DataError, atomic_write, open_text

USER_FILE = "user_sequence.txt"
ITEM_FILE = "item_plain_text.txt"
FIELDS_FILE = "items.jsonl"
STATS_FILE = "stats.json"


@dataclass
class Item:
    key: str
    text: str
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass
class Dataset:
    """Items and chronological user sequences of one domain (or a merged corpus)."""

    items: dict[str, Item]
    users: dict[str, list[str]]
    name: str = ""

    def stats(self) -> dict[str, Any]:
        lengths = [len(s) for s in self.users.values()]
        n_inter = sum(lengths)
        n_users, n_items = len(self.users), len(self.items)
        return {
            "users": n_users,
            "items": n_items,
            "interactions": n_inter,
            "density": n_inter / (n_users * n_items) if n_users and n_items else 0.0,
            "mean_seq_len": n_inter / n_users if n_users else 0.0,
            "median_seq_len": float(statistics.median(lengths)) if lengths else 0.0,
        }

    def validate(self, source: str | Path = "<dataset>") -> None:
        """Every item in a sequence must have text; no empty sequences."""
        for user, seq in self.users.items():
            if not seq:
                raise DataError(source, None, f"user {user!r} has an empty sequence")
            for key in seq:
                if key not in self.items:
                    raise DataError(source, None, f"user {user!r} interacted with item {key!r}, which has no text")

    def save(self, out: str | Path) -> None:
        """Write the canonical form; each file is written to a temporary name and renamed."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        with atomic_write(out / ITEM_FILE) as f:
            for key, item in self.items.items():
                f.write(f"{key} {item.text}\n")
        if any(item.fields for item in self.items.values()):
            with atomic_write(out / FIELDS_FILE) as f:
                for key, item in self.items.items():
                    f.write(json.dumps({"item": key, **item.fields}, ensure_ascii=False) + "\n")
        with atomic_write(out / USER_FILE) as f:
            for user, seq in self.users.items():
                f.write(" ".join([user, *seq]) + "\n")
        with atomic_write(out / STATS_FILE) as f:
            json.dump({"name": self.name, **self.stats()}, f, indent=2)

    @classmethod
    def load(cls, path: str | Path, name: str | None = None) -> "Dataset":
        """Read a folder in the IDGenRec text format, checking every line."""
        path = Path(path)
        if not path.is_dir():
            raise DataError(path, None, "dataset folder not found")
        items = read_item_text(path / ITEM_FILE)
        fields_path = path / FIELDS_FILE
        if fields_path.exists():
            with open_text(fields_path) as f:
                for lineno, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        rec = json.loads(line)
                        key = rec.pop("item")
                    except (json.JSONDecodeError, KeyError, TypeError) as e:
                        raise DataError(fields_path, lineno, f"malformed JSON line ({e})") from None
                    if key in items:
                        items[key].fields = rec
        users = read_user_sequences(path / USER_FILE, items)
        return cls(items=items, users=users, name=name or path.name)


def read_item_text(path: Path) -> dict[str, Item]:
    items: dict[str, Item] = {}
    with open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            key, _, text = line.partition(" ")
            if not text.strip():
                raise DataError(path, lineno, f"item {key!r} has no text")
            if key in items:
                raise DataError(path, lineno, f"item {key!r} listed twice")
            items[key] = Item(key, text.strip())
    if not items:
        raise DataError(path, None, "empty file: no items")
    return items


def read_user_sequences(path: Path, items: dict[str, Item] | None = None) -> dict[str, list[str]]:
    """``user item item ...`` per line; with ``items``, every item must have text (errors name the line)."""
    users: dict[str, list[str]] = {}
    with open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) < 2:
                raise DataError(path, lineno, f"user {parts[0]!r} has no items")
            if parts[0] in users:
                raise DataError(path, lineno, f"user {parts[0]!r} listed twice")
            if items is not None:
                for key in parts[1:]:
                    if key not in items:
                        raise DataError(path, lineno, f"user {parts[0]!r}: item {key!r} has no text in {ITEM_FILE}")
            users[parts[0]] = parts[1:]
    if not users:
        raise DataError(path, None, "empty file: no users")
    return users

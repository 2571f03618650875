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

from .io import BadLines, DataError, atomic_write, read_lines, write_json

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
                    f.write(json.dumps({"item": key, **item.fields}, ensure_ascii=False, default=str) + "\n")
        with atomic_write(out / USER_FILE) as f:
            for user, seq in self.users.items():
                f.write(" ".join([user, *seq]) + "\n")
        write_json(out / STATS_FILE, {"name": self.name, **self.stats()})

    @classmethod
    def load(cls, path: str | Path, name: str | None = None, skip_bad_lines: bool = False) -> "Dataset":
        """Read a folder in the IDGenRec text format, checking every line (``skip_bad_lines``: skip and count)."""
        path = Path(path)
        if not path.is_dir():
            raise DataError(path, None, "dataset folder not found")
        bad = BadLines(skip_bad_lines)
        items = read_item_text(path / ITEM_FILE, bad)
        fields_path = path / FIELDS_FILE
        if fields_path.exists():
            for lineno, line in read_lines(fields_path, bad):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except ValueError as e:
                    bad(DataError(fields_path, lineno, f"malformed JSON line ({e})"))
                    continue
                if not isinstance(rec, dict) or "item" not in rec:
                    bad(DataError(fields_path, lineno, "malformed line (expected a record with an 'item' field)"))
                    continue
                key = rec.pop("item")
                if isinstance(key, str) and key in items:
                    items[key].fields = rec
        users = read_user_sequences(path / USER_FILE, items, bad)
        bad.report()
        return cls(items=items, users=users, name=name or path.name)


def read_item_text(path: Path, bad: BadLines | None = None) -> dict[str, Item]:
    """``key text`` per line: a key without text or listed twice is a bad line."""
    bad = bad or BadLines()
    items: dict[str, Item] = {}
    for lineno, line in read_lines(path, bad):
        parts = line.split(None, 1)
        if not parts:
            continue
        if len(parts) < 2:
            bad(DataError(path, lineno, f"item {parts[0]!r} has no text"))
        elif parts[0] in items:
            bad(DataError(path, lineno, f"item {parts[0]!r} listed twice"))
        else:
            items[parts[0]] = Item(parts[0], parts[1].strip())
    if not items:
        raise DataError(path, None, _nothing(path, bad, "items"))
    return items


def read_user_sequences(path: Path, items: dict[str, Item] | None = None, bad: BadLines | None = None) -> dict[str, list[str]]:
    """``user item item ...`` per line; with ``items``, every item must have text (errors name the line)."""
    bad = bad or BadLines()
    users: dict[str, list[str]] = {}
    for lineno, line in read_lines(path, bad):
        parts = line.split()
        if not parts:
            continue
        unknown = [key for key in parts[1:] if items is not None and key not in items]
        if len(parts) < 2:
            bad(DataError(path, lineno, f"user {parts[0]!r} has no items"))
        elif parts[0] in users:
            bad(DataError(path, lineno, f"user {parts[0]!r} listed twice"))
        elif unknown:
            bad(DataError(path, lineno, f"user {parts[0]!r}: item {unknown[0]!r} has no text in {ITEM_FILE}"))
        else:
            users[parts[0]] = parts[1:]
    if not users:
        raise DataError(path, None, _nothing(path, bad, "users"))
    return users


def _nothing(path: Path, bad: BadLines, what: str) -> str:
    skipped = bad.counts.get(str(path), 0)
    return f"no valid {what} (all {skipped} line(s) were bad)" if skipped else f"empty file: no {what}"

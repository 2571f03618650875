"""IdTable: item key -> textual ID, versioned per training round, saved atomically as TSV (+ a JSON report)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genrec.io import BadLines, DataError, atomic_write, read_lines, write_json

HEADER = "# idgenrec idtable"


@dataclass
class IdTable:
    ids: dict[str, str]
    version: int = 0
    report: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, key: str) -> str:
        return self.ids[key]

    def check(self) -> None:
        """Every ID non-empty and unique."""
        seen: dict[str, str] = {}
        for key, tid in self.ids.items():
            if not tid.strip():
                raise ValueError(f"item {key!r} has an empty ID")
            if tid in seen:
                raise ValueError(f"items {seen[tid]!r} and {key!r} share the ID {tid!r}")
            seen[tid] = key

    def churn(self, previous: "IdTable") -> float:
        """Fraction of the items present in both tables whose ID changed."""
        common = self.ids.keys() & previous.ids.keys()
        return sum(self.ids[k] != previous.ids[k] for k in common) / len(common) if common else 0.0

    def token_ids(self, tokenizer) -> dict[str, list[int]]:
        """Tokenised IDs (no EOS), in the order of ``self.ids``."""
        keys = list(self.ids)
        enc = tokenizer([self.ids[k] for k in keys], add_special_tokens=False)["input_ids"]
        return {k: list(e) for k, e in zip(keys, enc)}

    def save(self, path: str | Path) -> None:
        path = Path(path)
        with atomic_write(path) as f:
            f.write(f"{HEADER} version={self.version}\n")
            for key, tid in self.ids.items():
                f.write(f"{key}\t{tid}\n")
        if self.report:
            write_json(path.with_suffix(".report.json"), {"version": self.version, **self.report})

    @classmethod
    def load(cls, path: str | Path) -> "IdTable":
        path = Path(path)
        if not path.exists():
            raise DataError(path, None, "ID table not found")
        ids: dict[str, str] = {}
        version = 0
        for lineno, line in read_lines(path, BadLines()):
            line = line.rstrip("\r\n")
            if lineno == 1 and line.startswith(HEADER):
                try:
                    version = int(line.rsplit("version=", 1)[1]) if "version=" in line else 0
                except ValueError:
                    raise DataError(path, lineno, f"header has no integer version: {line!r}") from None
                continue
            if not line:
                continue
            key, sep, tid = line.partition("\t")
            if not sep:
                key, _, tid = line.partition(" ")  # the reference's space-separated phase files
            if key in ids:
                raise DataError(path, lineno, f"item {key!r} listed twice")
            ids[key] = tid.strip()
        report_path = path.with_suffix(".report.json")
        try:
            report = json.loads(report_path.read_text(encoding="utf-8")) if report_path.exists() else {}
        except ValueError as e:
            raise DataError(report_path, None, f"malformed JSON ({e})") from None
        if not isinstance(report, dict):
            raise DataError(report_path, None, "malformed report (expected a JSON object)")
        report.pop("version", None)
        return cls(ids, version, report)

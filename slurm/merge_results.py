"""Merge the per-task JSON files of a zero-shot job array (slurm/zeroshot.sbatch) into one table.

Each array task writes ``RESULTS/CHECKPOINT/DATASET.json`` with ``idgenrec zeroshot`` (``{"checkpoint", "split",
"rows": [{"method", "dataset", metric: value, ...}]}``). This collects every such file under the given folders (or
the files given), labels each row with the checkpoint folder its file lies in, prints an aligned table and writes
``{"columns": [...], "rows": [{"checkpoint", "split", "method", "dataset", metric: value, ...}]}`` atomically.

Usage: python3 slurm/merge_results.py RESULTS_DIR_OR_FILES... [--out merged.json]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from genrec.io import DataError, atomic_write

Row = dict[str, Any]
KEYS = ("checkpoint", "split", "method", "dataset")


def read_result(path: Path) -> list[Row]:
    """The rows of one ``idgenrec zeroshot`` result file, labelled with the checkpoint folder the file lies in."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(path, e.lineno, f"invalid JSON: {e.msg}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("rows"), list) or not doc["rows"]:
        raise DataError(path, None, 'expected an idgenrec zeroshot result: {"split": ..., "rows": [...]}')
    rows = []
    for i, row in enumerate(doc["rows"]):
        if not isinstance(row, dict) or not isinstance(row.get("dataset"), str):
            raise DataError(path, None, f"rows[{i}] has no dataset name")
        metrics = {k: v for k, v in row.items() if k not in KEYS}
        bad = [k for k, v in metrics.items() if isinstance(v, bool) or not isinstance(v, (int, float))]
        if bad or not metrics:
            raise DataError(path, None, f"rows[{i}]: metric values must be numbers (bad: {bad or 'none given'})")
        rows.append({"checkpoint": path.parent.name, "split": str(doc.get("split", "-")),
                     "method": str(row.get("method", "-")), "dataset": row["dataset"], **metrics})
    return rows


def collect(paths: list[Path]) -> list[Path]:
    """The JSON files named, plus every ``*/*.json`` under each folder named, in sorted order."""
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted(p.glob("*/*.json"))
            if not found:
                raise DataError(p, None, "no CHECKPOINT/DATASET.json result files in this folder")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise DataError(p, None, "file not found")
    return files


def merge(files: list[Path]) -> tuple[list[str], list[Row]]:
    """All rows sorted by (checkpoint, split, method, dataset) and the union of metric names (sorted); a row that
    appears twice is an error."""
    rows: dict[tuple[str, ...], Row] = {}
    for f in files:
        for row in read_result(f):
            key = tuple(row[k] for k in KEYS)
            if key in rows:
                raise DataError(f, None, f"{dict(zip(KEYS, key))} appears in more than one file")
            rows[key] = row
    columns = sorted({k for r in rows.values() for k in r} - set(KEYS))
    return columns, [rows[k] for k in sorted(rows)]


def _cell(value: float | int | None) -> str:
    return "-" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def format_table(columns: list[str], rows: list[Row]) -> str:
    header = [*KEYS, *columns]
    body = [[*(r[k] for k in KEYS), *(_cell(r.get(c)) for c in columns)] for r in rows]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in [header, *body])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="+", type=Path, help="result folders (RESULTS/CKPT/DATASET.json) or files")
    parser.add_argument("--out", type=Path, help="merged JSON table to write")
    args = parser.parse_args(argv)
    try:
        columns, rows = merge(collect(args.inputs))
    except DataError as e:
        print(f"merge_results: error: {e}", file=sys.stderr)
        return 2
    print(format_table(columns, rows))
    if args.out:
        with atomic_write(args.out) as f:
            json.dump({"columns": columns, "rows": [{c: r.get(c) for c in [*KEYS, *columns]} for r in rows]}, f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Shared reader machinery: line-checked JSON streaming, iterative k-core, chronological sequences, Dataset building.

Readers stream their files line by line and keep only what the result needs: interactions as compact
``(user, item, time, line)`` tuples, and metadata only for items that occur in the interactions.
"""
from __future__ import annotations

import ast
import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, NamedTuple, Sequence

from genrec.text import plain_text

from ..dataset import Dataset, Item
from ..io import BadLines, DataError, read_lines

log = logging.getLogger(__name__)


class Interaction(NamedTuple):
    user: str
    item: str
    time: Any  # anything orderable within one dataset (unix seconds, ISO date strings)
    order: int  # position in the source file: the stable tie-break for equal times


@dataclass(frozen=True)
class TextOptions:
    """How item fields become plain text (see :func:`genrec.text.plain_text`)."""

    field_order: Sequence[str] | None = None
    lowercase: bool = False
    max_field_chars: int | Mapping[str, int] | None = None

    def render(self, fields: Mapping[str, Any], default_order: Sequence[str]) -> str:
        order = self.field_order if self.field_order is not None else default_order
        return plain_text(fields, order, self.lowercase, self.max_field_chars)


def _twice(names: list[Any]) -> None:
    """A field named twice in one record is an error: JSON and Python literals would silently keep the last."""
    counts = Counter(names)
    if len(counts) != len(names):
        raise ValueError(f"duplicate field {next(k for k, n in counts.items() if n > 1)!r}")


def _unique_fields(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    record = dict(pairs)
    if len(record) != len(pairs):  # the cheap test first: this runs for every object of every line
        _twice([k for k, _ in pairs])
    return record


def parse_json(line: str) -> Any:
    """One JSON record (no field named twice)."""
    return json.loads(line, object_pairs_hook=_unique_fields)


def parse_literal(line: str) -> Any:
    """One Python-literal record (Amazon 2014 metadata): ``ast.literal_eval``, never ``eval``; no field named twice."""
    node = ast.parse(line.strip(), mode="eval").body
    if isinstance(node, ast.Dict):
        _twice([k.value for k in node.keys if isinstance(k, ast.Constant)])
    return ast.literal_eval(node)


def _why(e: Exception) -> str:
    """A parser's complaint, with the column in the line (the parsers count lines within the record)."""
    if isinstance(e, json.JSONDecodeError):
        return f"JSON: {e.msg} at column {e.colno}"
    if isinstance(e, SyntaxError):
        return f"{e.msg} at column {e.offset}" if e.offset else str(e.msg)
    first = str(e).splitlines()[0][:80] if str(e) else ""
    return f"{type(e).__name__}: {first}"


def records(path: str | Path, parse: Callable[[str], Any], bad: BadLines) -> Iterator[tuple[int, dict]]:
    """``(line number, dict)`` for every non-blank line; malformed lines go to ``bad``. A file without a single
    record (empty, or every line bad and skipped) is an error."""
    good = False
    for lineno, line in read_lines(path, bad):
        if not line.strip():
            continue
        try:
            rec = parse(line.rstrip("\r\n"))
        except (ValueError, SyntaxError, TypeError, RecursionError, MemoryError) as e:
            bad(DataError(path, lineno, f"malformed line ({_why(e)})"))
            continue
        if not isinstance(rec, dict):
            bad(DataError(path, lineno, f"malformed line (expected a record, got {type(rec).__name__})"))
            continue
        good = True
        yield lineno, rec
    if not good:
        skipped = bad.counts.get(str(path), 0)
        raise DataError(path, None, f"no valid records (all {skipped} line(s) were bad)" if skipped else "empty file: no records")


def require(rec: Mapping[str, Any], fields: Iterable[str], path: str | Path, lineno: int) -> list[Any]:
    """The values of required fields; a missing or empty one is a :class:`DataError` naming the field."""
    out = []
    for name in fields:
        value = rec.get(name)
        if value is None or value == "":
            raise DataError(path, lineno, f"missing field {name!r}")
        out.append(value)
    return out


def require_keys(rec: Mapping[str, Any], fields: Sequence[str], path: str | Path, lineno: int) -> list[str]:
    """Required user/item keys: strings (or integers) without whitespace, as the canonical text format needs."""
    out = []
    for name, value in zip(fields, require(rec, fields, path, lineno)):
        key = str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else None
        if key is None or key.split() != [key]:
            raise DataError(path, lineno, f"field {name!r} is not a key (a word without spaces): {value!r:.60}")
        out.append(key)
    return out


def kcore(interactions: list[Interaction], k: int) -> list[Interaction]:
    """Drop users and items with fewer than ``k`` interactions, repeatedly, until every one left has ``k``."""
    if k <= 1:
        return interactions
    rounds = 0
    while True:
        users = Counter(x.user for x in interactions)
        items = Counter(x.item for x in interactions)
        kept = [x for x in interactions if users[x.user] >= k and items[x.item] >= k]
        rounds += 1
        if len(kept) == len(interactions):
            log.info("%d-core: stable after %d round(s), %d interactions", k, rounds, len(kept))
            return kept
        interactions = kept


def dedupe(interactions: Iterable[Interaction]) -> list[Interaction]:
    """Keep each (user, item) pair once, at its earliest time (then earliest line)."""
    first: dict[tuple[str, str], Interaction] = {}
    for x in interactions:
        key = (x.user, x.item)
        if key not in first or (x.time, x.order) < (first[key].time, first[key].order):
            first[key] = x
    return list(first.values())


def sequences(interactions: Iterable[Interaction]) -> dict[str, list[str]]:
    """Each user's items oldest first; equal times keep file order. Users in order of first appearance in the file."""
    by_user: dict[str, list[Interaction]] = {}
    for x in sorted(interactions, key=lambda x: x.order):
        by_user.setdefault(x.user, []).append(x)
    return {u: [x.item for x in sorted(xs, key=lambda x: (x.time, x.order))] for u, xs in by_user.items()}


def build_dataset(
    interactions: list[Interaction],
    items: dict[str, Item],
    k: int,
    name: str,
    source: str | Path,
    skip_items_without_text: bool,
) -> Dataset:
    """Items without text -> error (or dropped when skipping), then k-core, then chronological sequences."""
    missing = sorted({x.item for x in interactions} - items.keys())
    if missing:
        if not skip_items_without_text:
            raise DataError(source, None, f"{len(missing)} interacted item(s) have no text, e.g. {missing[0]!r}")
        log.warning("dropped %d interacted item(s) without text (%s)", len(missing), source)
        gone = set(missing)
        interactions = [x for x in interactions if x.item not in gone]
    interactions = kcore(dedupe(interactions), k)
    if not interactions:
        raise DataError(source, None, f"no interactions left after {k}-core filtering")
    users = sequences(interactions)
    used = {x.item for x in interactions}
    kept_items = {key: item for key, item in items.items() if key in used}
    return Dataset(items=kept_items, users=users, name=name)


def kcore_dataset(ds: Dataset, k: int) -> Dataset:
    """k-core of an already sequential dataset (positions stand in for times)."""
    inter = [Interaction(u, it, t, 0) for u, seq in ds.users.items() for t, it in enumerate(seq)]
    inter = [x._replace(order=i) for i, x in enumerate(inter)]
    kept = kcore(inter, k)
    if not kept:
        raise DataError(ds.name, None, f"no interactions left after {k}-core filtering")
    users = sequences(kept)
    used = {x.item for x in kept}
    return Dataset(items={key: it for key, it in ds.items.items() if key in used}, users=users, name=ds.name)

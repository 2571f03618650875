"""Shared reader machinery: line-checked JSON streaming, iterative k-core, chronological sequences, Dataset building.

Readers stream their files line by line and keep only what the result needs: interactions as compact
``(user, item, time, line)`` tuples, and metadata only for items that occur in the interactions.
"""
from __future__ import annotations

import ast
import gzip
import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, NamedTuple, Sequence

from tqdm import tqdm

from tokenization.text import plain_text

from ..dataset import Dataset, Item
from ..io import DataError

log = logging.getLogger(__name__)


class Interaction(NamedTuple):
    user: str
    item: str
    time: Any  # anything orderable within one dataset (unix seconds, ISO date strings)
    order: int  # position in the source file: the stable tie-break for equal times


@dataclass(frozen=True)
class TextOptions:
    """How item fields become plain text (see :func:`tokenization.text.plain_text`)."""

    field_order: Sequence[str] | None = None
    lowercase: bool = False
    max_field_chars: int | Mapping[str, int] | None = None

    def render(self, fields: Mapping[str, Any], default_order: Sequence[str]) -> str:
        order = self.field_order if self.field_order is not None else default_order
        return plain_text(fields, order, self.lowercase, self.max_field_chars)


class BadLines:
    """Counts skipped lines per file when skipping is allowed; raises the error otherwise."""

    def __init__(self, skip: bool):
        self.skip = skip
        self.counts: Counter[str] = Counter()

    def __call__(self, error: DataError) -> None:
        if not self.skip:
            raise error
        self.counts[error.path] += 1
        log.debug("skipped %s", error)

    def report(self) -> None:
        for path, n in self.counts.items():
            log.warning("skipped %d bad line(s) in %s", n, path)


def parse_json(line: str) -> Any:
    return json.loads(line)


def parse_literal(line: str) -> Any:
    """One Python-literal record (Amazon 2014 metadata): ``ast.literal_eval``, never ``eval``."""
    return ast.literal_eval(line)


def lines(path: str | Path, bad: BadLines) -> Iterator[tuple[int, str]]:
    """``(line number, text)``, reading bytes so a non-UTF-8 line is reported (or skipped) at its exact line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, None, "file not found")
    opener = gzip.open if path.suffix == ".gz" else open
    lineno = 0
    with opener(path, "rb") as f, tqdm(desc=f"reading {path.name}", unit=" lines", mininterval=2, disable=None) as bar:
        while True:
            try:
                raw = f.readline()
            except (EOFError, OSError) as e:  # truncated or corrupt gzip: nothing after this is readable
                raise DataError(path, lineno + 1, f"unreadable ({type(e).__name__}: {e})") from None
            if not raw:
                return
            lineno += 1
            bar.update()
            try:
                yield lineno, raw.decode("utf-8")
            except UnicodeDecodeError as e:
                bad(DataError(path, lineno, f"not UTF-8 (byte {raw[e.start]:#04x} at column {e.start + 1})"))


def records(path: str | Path, parse: Callable[[str], Any], bad: BadLines) -> Iterator[tuple[int, dict]]:
    """``(line number, dict)`` for every non-blank line; malformed lines go to ``bad``. An empty file is an error."""
    seen = False
    for lineno, line in lines(path, bad):
        if not line.strip():
            continue
        seen = True
        try:
            rec = parse(line)
        except (ValueError, SyntaxError, TypeError, RecursionError) as e:
            first = str(e).splitlines()[0][:80] if str(e) else ""
            bad(DataError(path, lineno, f"malformed line ({type(e).__name__}: {first})"))
            continue
        if not isinstance(rec, dict):
            bad(DataError(path, lineno, f"malformed line (expected a record, got {type(rec).__name__})"))
            continue
        yield lineno, rec
    if not seen:
        raise DataError(path, None, "empty file: no records")


def require(rec: Mapping[str, Any], fields: Iterable[str], path: str | Path, lineno: int) -> list[Any]:
    """The values of required fields; a missing or empty one is a :class:`DataError` naming the field."""
    out = []
    for name in fields:
        value = rec.get(name)
        if value is None or value == "":
            raise DataError(path, lineno, f"missing field {name!r}")
        out.append(value)
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

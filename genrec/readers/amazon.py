"""Amazon review datasets: 2014 (McAuley et al., Python-literal metadata) and 2018 (Ni et al., JSON lines).

Both read the reviews first (``reviewerID``, ``asin``, ``unixReviewTime``), then stream the metadata keeping only
items that were reviewed, so memory follows the interactions, not the (much larger) catalog.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

from ..dataset import Dataset, Item
from ..io import BadLines, DataError
from .common import Interaction, TextOptions, build_dataset, parse_json, parse_literal, records, require, require_keys

FIELDS_2014 = ("title", "brand", "categories")
FIELDS_2018 = ("title", "brand", "category")


def parse_json_or_literal(line: str) -> Any:
    """JSON, or a Python literal (some 2014 dumps mix both)."""
    try:
        return parse_json(line)
    except ValueError:
        return parse_literal(line)


def unix_time(value: Any, path: str | Path, lineno: int) -> int:
    """Whole seconds since 1970 (an int, a float or a numeric string); anything else is a :class:`DataError`."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    try:
        seconds = float(value) if isinstance(value, (float, str)) else math.nan
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds):
        raise DataError(path, lineno, f"field 'unixReviewTime' is not a unix time: {value!r:.60}")
    return int(seconds)


def read_reviews(path: str | Path, bad: BadLines, parse: Callable[[str], Any] = parse_json) -> list[Interaction]:
    out: list[Interaction] = []
    for lineno, rec in records(path, parse, bad):
        try:
            user, item = require_keys(rec, ("reviewerID", "asin"), path, lineno)
            (when,) = require(rec, ("unixReviewTime",), path, lineno)
            when = unix_time(when, path, lineno)
        except DataError as e:
            bad(e)
            continue
        out.append(Interaction(user, item, when, len(out)))
    return out


def _flatten_unique(value: Any) -> list[str]:
    """``[["Beauty", "Makeup"], ["Beauty", "Nails"]]`` -> ``["Beauty", "Makeup", "Nails"]``."""
    out: list[str] = []
    stack = [value]
    flat: list[Any] = []
    while stack:
        v = stack.pop()
        if isinstance(v, (list, tuple)):
            stack.extend(reversed(v))
        elif v not in (None, ""):
            flat.append(str(v))
    for v in flat:
        if v not in out:
            out.append(v)
    return out


def read_meta(
    path: str | Path,
    wanted: set[str],
    bad: BadLines,
    parse: Callable[[str], Any],
    category_field: str,
    text: TextOptions,
    default_order: tuple[str, ...],
) -> dict[str, Item]:
    items: dict[str, Item] = {}
    for lineno, rec in records(path, parse, bad):
        try:
            (asin,) = require_keys(rec, ("asin",), path, lineno)
        except DataError as e:
            bad(e)
            continue
        if asin not in wanted or asin in items:
            continue
        fields = {k: v for k, v in rec.items() if k != "asin" and v not in (None, "", [], {})}
        if category_field in fields:
            fields[category_field] = _flatten_unique(fields[category_field])
        body = text.render(fields, default_order)
        if body:
            items[asin] = Item(asin, body, {k: fields[k] for k in (text.field_order or default_order) if k in fields})
    return items


def read_amazon2014(
    reviews: str | Path,
    meta: str | Path,
    k: int = 5,
    text: TextOptions = TextOptions(),
    skip_bad_lines: bool = False,
    name: str = "",
) -> Dataset:
    """``reviews_<Category>_5.json(.gz)`` + ``meta_<Category>.json(.gz)`` (one Python-literal dict per line)."""
    bad = BadLines(skip_bad_lines)
    inter = read_reviews(reviews, bad, parse_json_or_literal)
    items = read_meta(meta, {x.item for x in inter}, bad, parse_literal, "categories", text, FIELDS_2014)
    bad.report()
    return build_dataset(inter, items, k, name or Path(reviews).name.split(".")[0], meta, skip_bad_lines)


def read_amazon2018(
    reviews: str | Path,
    meta: str | Path,
    k: int = 5,
    text: TextOptions = TextOptions(),
    skip_bad_lines: bool = False,
    name: str = "",
) -> Dataset:
    """``<Category>(_5).json(.gz)`` + ``meta_<Category>.json(.gz)``, both JSON lines (``category``/``description`` lists)."""
    bad = BadLines(skip_bad_lines)
    inter = read_reviews(reviews, bad, parse_json)
    items = read_meta(meta, {x.item for x in inter}, bad, parse_json, "category", text, FIELDS_2018)
    bad.report()
    return build_dataset(inter, items, k, name or Path(reviews).name.split(".")[0], meta, skip_bad_lines)

"""Yelp academic dataset: ``review.json`` (user_id, business_id, date) + ``business.json`` (the items' text).

Reviews are read first (optionally within a date range), then businesses are streamed keeping only reviewed ones.
Attribute values in the dump are often stringified Python literals (``"u'free'"``, ``"{'garage': False}"``);
they are parsed with ``ast.literal_eval`` so nested attributes render as ``attributes: Parking: garage: no``.
"""
from __future__ import annotations

import ast
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from ..dataset import Dataset, Item
from ..io import BadLines, DataError
from .common import Interaction, TextOptions, build_dataset, parse_json, records, require, require_keys

FIELDS = ("name", "categories", "city", "state")


_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}(?: [0-9]{2}:[0-9]{2}(?::[0-9]{2})?)?")
_LITERAL_STARTS = ("{", "[", "(", "'", '"', "u'", 'u"')


def _attribute(value: Any) -> Any:
    """Stringified literals inside ``attributes`` become real values (nested dicts recursively)."""
    if isinstance(value, str) and (value.startswith(_LITERAL_STARTS) or value in ("True", "False", "None")):
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
    if isinstance(value, dict):
        return {k: _attribute(v) for k, v in value.items() if v is not None}
    return value


def review_date(value: Any, path: str | Path, lineno: int) -> str:
    """``YYYY-MM-DD`` with an optional ``HH:MM[:SS]``: kept as text, which then orders chronologically."""
    if not isinstance(value, str) or not _DATE.fullmatch(value):
        raise DataError(path, lineno, f"field 'date' is not a date (YYYY-MM-DD HH:MM:SS): {value!r:.60}")
    try:
        datetime.fromisoformat(value)
    except ValueError:
        raise DataError(path, lineno, f"field 'date' is not a calendar date: {value!r:.60}") from None
    return value


def read_yelp(
    business: str | Path,
    review: str | Path,
    date_range: tuple[str, str] | None = None,
    k: int = 5,
    text: TextOptions = TextOptions(),
    skip_bad_lines: bool = False,
    name: str = "yelp",
) -> Dataset:
    """Reviews with ``start <= date < end`` (ISO dates compare as strings) when ``date_range`` is given."""
    bad = BadLines(skip_bad_lines)
    inter: list[Interaction] = []
    for lineno, rec in records(review, parse_json, bad):
        try:
            user, item = require_keys(rec, ("user_id", "business_id"), review, lineno)
            (date,) = require(rec, ("date",), review, lineno)
            date = review_date(date, review, lineno)
        except DataError as e:
            bad(e)
            continue
        if date_range and not (date_range[0] <= date[: len(date_range[0])] and date[: len(date_range[1])] < date_range[1]):
            continue
        inter.append(Interaction(user, item, date, len(inter)))
    if not inter:
        raise DataError(review, None, f"no reviews{' in the date range' if date_range else ''}")
    wanted = {x.item for x in inter}
    items: dict[str, Item] = {}
    for lineno, rec in records(business, parse_json, bad):
        try:
            (key,) = require_keys(rec, ("business_id",), business, lineno)
        except DataError as e:
            bad(e)
            continue
        if key not in wanted or key in items:
            continue
        fields = {k: v for k, v in rec.items() if k != "business_id" and v not in (None, "", [], {})}
        if isinstance(fields.get("categories"), str):
            fields["categories"] = [c.strip() for c in fields["categories"].split(",") if c.strip()]
        if "attributes" in fields:
            fields["attributes"] = _attribute(fields["attributes"])
        body = text.render(fields, FIELDS)
        if body:
            items[key] = Item(key, body, {f: fields[f] for f in (text.field_order or FIELDS) if f in fields})
    bad.report()
    return build_dataset(inter, items, k, name, business, skip_bad_lines)

"""Item metadata -> the paper's plain text (``field: value; field: value``) that ID generation reads.

Lists are joined with ``, `` (nested lists flattened), nested dicts become ``key: sub: value``, HTML entities are
unescaped and all whitespace (newlines included) collapses to one space, so one item is always one line of the
canonical ``item_plain_text.txt``. Field order, lower-casing and per-field truncation are configurable.
"""
from __future__ import annotations

import html
import re
from typing import Any, Mapping, Sequence

_SPACE = re.compile(r"\s+")
_TAG = re.compile(r"<[^>]{0,200}>")


def clean(value: str) -> str:
    """Unescape HTML entities (twice, for double-escaped dumps), drop tags, collapse whitespace."""
    return _SPACE.sub(" ", _TAG.sub(" ", html.unescape(html.unescape(value)))).strip()


def render_value(value: Any) -> str:
    """One field value as text: strings cleaned, lists joined with ``, ``, dicts as ``key: value``."""
    if value is None:
        return ""
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Mapping):
        parts = []
        for key, sub in value.items():
            text = render_value(sub)
            if text:
                parts.append(f"{clean(str(key))}: {text}")
        return ", ".join(parts)
    if isinstance(value, (list, tuple, set)):
        return ", ".join(t for t in (render_value(v) for v in value) if t)
    return clean(str(value))


def truncate(text: str, limit: int) -> str:
    """At most ``limit`` characters, cut at a word boundary when one exists in the kept part."""
    if len(text) <= limit:
        return text
    space = text.rfind(" ", 0, limit + 1)  # a space right after the limit still ends a whole word
    return (text[:space] if space > 0 else text[:limit]).rstrip(" ,;:")


def plain_text(
    fields: Mapping[str, Any],
    field_order: Sequence[str] | None = None,
    lowercase: bool = False,
    max_field_chars: int | Mapping[str, int] | None = None,
) -> str:
    """``field: value; field: value`` for the non-empty fields.

    ``field_order`` lists the fields to keep, in order (``None``: all fields in their own order);
    ``max_field_chars`` caps every field (an int) or named fields (a mapping) in characters.
    """
    names = list(field_order) if field_order is not None else list(fields)
    parts = []
    for name in names:
        text = render_value(fields.get(name))
        if not text:
            continue
        limit = max_field_chars.get(name) if isinstance(max_field_chars, Mapping) else max_field_chars
        if limit is not None:
            text = truncate(text, limit)
        parts.append(f"{name}: {text}")
    out = "; ".join(parts)
    return out.lower() if lowercase else out

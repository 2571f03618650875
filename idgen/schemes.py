"""Fixed ID schemes for the one T5 trainer: the same training and decoding as IDGenRec, only the IDs differ.

* **P5-SID** (sequential indexing, Hua et al., "How to Index Item IDs", SIGIR-AP'23): items numbered 1, 2, ... in
  order of first appearance in the training sequences (users in dataset order), so items that co-occur early share
  number prefixes. ``style="subword"`` writes the plain number and lets the SentencePiece tokenizer split it into
  subword pieces (the P5 setting); ``style="digits"`` spaces the digits so every digit is one token.
* **Title IDs**: the item's title (or name; without one, its field values) truncated to ``max_words`` words, made
  unique by a numeric suffix — the naive semantic ID that IDGenRec's learned IDs improve on. A rule of the item text
  alone, so it also names items a model never saw (``zeroshot.harness.dataset_ids``).

Both return an :class:`~idgen.idtable.IdTable` that is never regenerated during training.
"""
from __future__ import annotations

import re
from typing import Any, Iterable, Mapping

from genrec.dataset import Dataset, Item
from genrec.splits import visible_items
from .idtable import IdTable

SCHEMES = ("idgenrec", "p5sid", "title")
_TITLE_FIELDS = ("title", "name")


def first_appearance_order(dataset: Dataset) -> list[str]:
    """Item keys in order of first appearance in the training sequences, then items seen only later (validation /
    test targets), then items never interacted with — each group in its own first-seen or key order."""
    order: dict[str, None] = {}
    for seq in dataset.users.values():
        order.update(dict.fromkeys(visible_items(seq, "train")))
    for seq in dataset.users.values():
        order.update(dict.fromkeys(seq))
    order.update(dict.fromkeys(sorted(dataset.items.keys() - order.keys())))
    return list(order)


def p5sid_table(dataset: Dataset, style: str = "subword", start: int = 1) -> IdTable:
    """Sequential numeric IDs by first appearance; ``style`` is ``subword`` (``"1024"``) or ``digits`` (``"1 0 2 4"``)."""
    if style not in ("subword", "digits"):
        raise ValueError(f"unknown P5-SID style {style!r} (subword or digits)")
    ids = {}
    for number, key in enumerate(first_appearance_order(dataset), start):
        text = str(number)
        ids[key] = " ".join(text) if style == "digits" else text
    table = IdTable(ids, 0, {"scheme": "p5sid", "style": style})
    table.check()
    return table


def item_title(item: Item) -> str:
    """The title (or name) field, read from structured fields or from the ``title: ...; brand: ...`` plain text.
    An item without one (every Sports item has only brand and categories) gets its field values in order, without
    the field names, which would otherwise become the first words of every such ID; plain text without fields is
    returned whole."""
    for name in _TITLE_FIELDS:
        value = item.fields.get(name)
        if isinstance(value, str) and value.strip():
            return value
    fields = [part.partition(": ") for part in item.text.split("; ")]
    for name, sep, value in fields:
        if sep and name.strip().lower() in _TITLE_FIELDS and value.strip():
            return value
    values = [value for _, sep, value in fields if sep and value.strip()]
    return "; ".join(values) if values else item.text


def title_words(text: str, max_words: int, lowercase: bool = True) -> str:
    """First ``max_words`` alphanumeric words of ``text`` (punctuation dropped, so IDs tokenise cleanly)."""
    words = re.findall(r"[^\W_]+(?:['.-][^\W_]+)*", text.lower() if lowercase else text)
    return " ".join(words[:max_words])


def title_table(items: Mapping[str, Item] | Iterable[Item], max_words: int = 5, lowercase: bool = True) -> IdTable:
    """Title IDs made unique by suffix: the second ``"opi nail lacquer"`` becomes ``"opi nail lacquer 2"``.
    Items are processed in the given order; an item with no usable words gets its key as ID."""
    if max_words < 1:
        raise ValueError("max_words must be at least 1")
    seq = list(items.values()) if isinstance(items, Mapping) else list(items)
    ids: dict[str, str] = {}
    taken: set[str] = set()
    suffixed = 0
    for item in seq:
        base = title_words(item_title(item), max_words, lowercase) or item.key
        tid, n = base, 1
        while tid in taken:
            n += 1
            tid = f"{base} {n}"
        suffixed += n > 1
        taken.add(tid)
        ids[item.key] = tid
    table = IdTable(ids, 0, {"scheme": "title", "max_words": max_words, "suffixed": suffixed})
    table.check()
    return table


def build_idtable(scheme: str, dataset: Dataset, cfg: Mapping[str, Any] | None = None) -> IdTable | None:
    """The fixed IdTable of ``scheme`` (config keys under ``ids``: ``p5sid_style``, ``title_words``), or ``None`` for
    ``idgenrec``, whose IDs the generator produces and regenerates."""
    cfg = cfg or {}
    if scheme == "idgenrec":
        return None
    if scheme == "p5sid":
        return p5sid_table(dataset, style=cfg.get("p5sid_style", "subword"))
    if scheme == "title":
        return title_table(dataset.items, max_words=int(cfg.get("title_words", 5)))
    raise ValueError(f"unknown ID scheme {scheme!r} (one of {', '.join(SCHEMES)})")

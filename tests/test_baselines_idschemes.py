"""Fixed ID schemes (P5-SID, title IDs): unique, non-empty, deterministic, numbered by first appearance."""
from __future__ import annotations

from pathlib import Path

import pytest

from idgen.schemes import build_idtable, first_appearance_order, item_title, p5sid_table, title_table
from genrec.dataset import Dataset, Item
from idgen.idtable import IdTable

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def _toy() -> Dataset:
    items = {k: Item(k, f"title: Product {k}; brand: B") for k in ["k1", "k2", "k3", "k4", "k5", "k6"]}
    # Training parts (all but the last two items): u1 -> k3 k1, u2 -> k2 k3 k4; k5/k6 appear only as targets,
    # k6 before k5 in user order; an item no one interacted with is numbered last.
    users = {"u1": ["k3", "k1", "k6", "k5"], "u2": ["k2", "k3", "k4", "k5", "k6"]}
    items["k0"] = Item("k0", "title: Unused")
    return Dataset(items, users, "toy")


def test_p5sid_numbers_items_by_first_appearance_in_training():
    ds = _toy()
    assert first_appearance_order(ds) == ["k3", "k1", "k2", "k4", "k6", "k5", "k0"]
    table = p5sid_table(ds)
    assert table.ids == {"k3": "1", "k1": "2", "k2": "3", "k4": "4", "k6": "5", "k5": "6", "k0": "7"}
    assert table.report["scheme"] == "p5sid"


def test_p5sid_digit_style_and_errors():
    ds = _toy()
    ds.items.update({f"x{j}": Item(f"x{j}", "title: x") for j in range(10)})
    table = p5sid_table(ds, style="digits")
    assert table.ids["x9"] == "1 7" and table.ids["k3"] == "1"
    table.check()
    with pytest.raises(ValueError, match="style"):
        p5sid_table(ds, style="hex")


def test_title_ids_truncated_and_made_unique_by_suffix():
    items = [
        Item("a", "title: OPI Nail Lacquer, Red; brand: OPI"),
        Item("b", "title: OPI Nail Lacquer - Blue; brand: OPI"),
        Item("c", "brand: X", {"title": "OPI nail lacquer 2"}),  # truncates to a taken title
        Item("d", "title: OPI Nail Lacquer!!"),
        Item("e", "title: ???"),
        Item("f", "name: Joe's Diner; city: Reno"),
        Item("g", "brand: Ghost; categories: Hunting & Fishing, Hunting"),  # no title: the field values, no names
        Item("h", "Plain text, no fields"),
    ]
    table = title_table(items, max_words=3)
    assert table.ids == {
        "a": "opi nail lacquer",
        "b": "opi nail lacquer 2",
        "c": "opi nail lacquer 3",
        "d": "opi nail lacquer 4",
        "e": "e",
        "f": "joe's diner",
        "g": "ghost hunting fishing",
        "h": "plain text no",
    }
    assert table.report["suffixed"] == 3
    assert item_title(items[2]) == "OPI nail lacquer 2"
    # A natural title equal to a suffixed one is skipped over.
    gels = title_table([Item("g1", "title: Gel 2"), Item("g2", "title: Gel"), Item("g3", "title: Gel")], max_words=2)
    assert gels.ids == {"g1": "gel 2", "g2": "gel", "g3": "gel 3"}
    with pytest.raises(ValueError):
        title_table(items, max_words=0)


def test_build_idtable_dispatches_schemes(synth_dataset, tokenizer):
    assert build_idtable("idgenrec", synth_dataset) is None
    for scheme, cfg in (("p5sid", {"p5sid_style": "digits"}), ("title", {"title_words": 4})):
        table = build_idtable(scheme, synth_dataset, cfg)
        assert isinstance(table, IdTable) and len(table) == len(synth_dataset.items)
        table.check()
        assert all(tokens for tokens in table.token_ids(tokenizer).values())
    assert build_idtable("title", synth_dataset) == build_idtable("title", synth_dataset)
    with pytest.raises(ValueError, match="unknown ID scheme"):
        build_idtable("semantic", synth_dataset)


@pytest.mark.realdata
@pytest.mark.skipif(not (DATASETS / "derived" / "Beauty").exists(), reason="shared datasets not present")
def test_schemes_unique_on_beauty():
    ds = Dataset.load(DATASETS / "derived" / "Beauty")
    for table in (p5sid_table(ds), title_table(ds.items)):
        assert len(table) == 12101
        table.check()

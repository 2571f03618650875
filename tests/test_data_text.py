"""Item plain text the paper's way: ``field: value; ...``, lists, nested dicts, HTML, case, order, truncation."""
from __future__ import annotations

from genrec.text import plain_text, render_value, truncate


def test_fields_lists_and_nested_dicts():
    fields = {"title": "Shampoo", "categories": ["Beauty", ["Hair Care", "Shampoos"]], "attributes": {"size": {"ml": 250}, "vegan": True}}
    assert plain_text(fields) == "title: Shampoo; categories: Beauty, Hair Care, Shampoos; attributes: size: ml: 250, vegan: yes"


def test_html_whitespace_and_empty_values():
    fields = {"title": "Tom &amp; Jerry&#39;s <b>Best</b>\n Soap", "brand": "", "price": None, "tags": [], "x": [None, ""]}
    assert plain_text(fields) == "title: Tom & Jerry's Best Soap"
    assert render_value("a &amp;amp; b") == "a & b"  # double-escaped dumps


def test_field_order_selects_and_orders():
    fields = {"title": "T", "brand": "B", "description": "D"}
    assert plain_text(fields, field_order=["brand", "title", "missing"]) == "brand: B; title: T"


def test_lowercase_and_truncation():
    fields = {"title": "A Very Long Product Title Indeed", "brand": "ACME"}
    assert plain_text(fields, lowercase=True) == "title: a very long product title indeed; brand: acme"
    assert plain_text(fields, max_field_chars=12) == "title: A Very Long; brand: ACME"
    assert plain_text(fields, max_field_chars={"title": 6}) == "title: A Very; brand: ACME"
    assert truncate("Supercalifragilistic", 5) == "Super"
    assert truncate("short", 10) == "short"
    assert truncate("Nail Polish Set", 11) == "Nail Polish"

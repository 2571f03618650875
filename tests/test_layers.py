"""Layers import downward only: the core imports nothing above it, and only the top package ties every layer."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ["genrec", "tokenization", "idgen", "zeroshot", "pretrain", "finetune", "idgenrec"]  # bottom to top


def imported_packages(path: Path) -> set[str]:
    """Top-level packages of this project that a module imports (at any depth, lazily inside functions too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & set(LAYERS)


@pytest.mark.parametrize("layer", LAYERS)
def test_a_layer_imports_only_itself_and_the_layers_below(layer):
    allowed = set(LAYERS[: LAYERS.index(layer) + 1])
    upward = {f"{p.relative_to(ROOT)} imports {sorted(imported_packages(p) - allowed)}"
              for p in sorted((ROOT / layer).rglob("*.py")) if imported_packages(p) - allowed}
    assert not upward, upward

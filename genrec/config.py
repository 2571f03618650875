"""Recipes are YAML files; ``key.sub=value`` overrides (values parsed as YAML) change any key from the command line."""
from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml

from .io import DataError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


class _Loader(yaml.SafeLoader):
    """Safe YAML where ``1e-4`` is a float (YAML 1.2), not the string PyYAML's 1.1 rules make of it."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[0-9][0-9_]*[eE][-+]?[0-9]+|\.[0-9_]+(?:[eE][-+]?[0-9]+)?)$"),
    list("-+0123456789."),
)


def parse_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


def resolve_config_path(name: str | Path) -> Path:
    """A path, or the name of a recipe in ``configs/`` (``standard`` -> ``configs/standard.yaml``)."""
    p = Path(name)
    if p.exists():
        return p
    for cand in (CONFIG_DIR / p, CONFIG_DIR / f"{p}.yaml"):
        if cand.exists():
            return cand
    raise DataError(p, None, "config file not found")


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """Load a YAML recipe (``base: other.yaml`` inherits) and apply ``a.b=value`` overrides."""
    cfg: dict[str, Any] = {}
    if path is not None:
        p = resolve_config_path(path)
        try:
            cfg = parse_yaml(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise DataError(p, getattr(getattr(e, "problem_mark", None), "line", -1) + 1 or None, f"invalid YAML: {e}") from None
        if not isinstance(cfg, dict):
            raise DataError(p, None, "a config file must hold a mapping")
        if "base" in cfg:
            base = load_config(p.parent / cfg.pop("base"))
            cfg = merge(base, cfg)
    for ov in overrides:
        set_key(cfg, ov)
    return cfg


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def set_key(cfg: dict[str, Any], override: str) -> None:
    """Apply one ``a.b.c=value`` override in place."""
    key, sep, raw = override.partition("=")
    if not sep or not key:
        raise ValueError(f"override {override!r} is not of the form key=value")
    node = cfg
    *parents, leaf = key.strip().split(".")
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"override {override!r}: {part!r} is not a section")
    node[leaf] = parse_yaml(raw) if raw.strip() else None

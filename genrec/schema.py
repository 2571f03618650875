"""The recipe schema: every config key declared once, with its type, default and a one-line doc.

Keys are declared as dataclass fields, next to the code that reads them::

    @dataclass
    class PromptSettings:
        \"\"\"How prompts are rendered (genrec.prompts).\"\"\"

        separator: str = ","  # between the history items' IDs
        max_length: int = 512  # prompt tokens; longer histories lose their oldest items

The trailing comment is the key's doc (comment-only lines right below continue it); a field whose type is another
dataclass is a sub-section; ``dict[str, Any]`` is a free-form mapping (e.g. model sizes handed to ``T5Config``);
``Literal[...]`` lists the allowed values. :func:`from_dataclass` turns such a class into a :class:`Section`;
:func:`part` puts sections and top-level keys together, and :func:`combine` merges the parts each layer declares
(two layers may add keys to one section, e.g. ``data``) into the full recipe.

:meth:`Section.validate` rejects unknown keys (naming the nearest valid ones) and values of the wrong type (naming
the key and the expected type) before any work is done; :meth:`Section.render` prints a resolved config with the
docs (``idgenrec config show``). The core only holds the mechanism: each layer declares its own sections.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import inspect
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Union

import yaml


class ConfigError(ValueError):
    """A recipe key that does not exist or holds a value of the wrong type (a one-line message)."""


@dataclass(frozen=True)
class Key:
    """One scalar (or list / free-form mapping) setting."""

    type: Any
    default: Any
    doc: str = ""


@dataclass
class Section:
    """A mapping of named keys and sub-sections."""

    keys: dict[str, "Key | Section"] = field(default_factory=dict)
    doc: str = ""

    # ------------------------------------------------------------------ validation

    def validate(self, cfg: Mapping[str, Any] | None, where: str = "") -> None:
        """Raise :class:`ConfigError` on the first unknown key or wrongly typed value of ``cfg`` (missing keys are
        fine: they take their defaults)."""
        self._validate(cfg or {}, where, self)

    def _validate(self, cfg: Mapping[str, Any], where: str, root: "Section") -> None:
        for name, value in cfg.items():
            path = f"{where}.{name}" if where else str(name)
            spec = self.keys.get(name)
            if spec is None:
                raise ConfigError(f"unknown config key {path!r}{root._suggest(path, self, where)}")
            if isinstance(spec, Section):
                if not isinstance(value, Mapping):
                    raise ConfigError(f"config key {path!r} is a section: expected a mapping of its keys, got {value!r}")
                spec._validate(value, path, root)
            elif not type_ok(value, spec.type):
                raise ConfigError(f"config key {path!r}: expected {type_name(spec.type)}, got {value!r} "
                                  f"({type(value).__name__})")

    def paths(self, where: str = "") -> list[str]:
        """Every key's dotted path (sections included)."""
        out = []
        for name, spec in self.keys.items():
            path = f"{where}.{name}" if where else name
            out.append(path)
            if isinstance(spec, Section):
                out += spec.paths(path)
        return out

    def _suggest(self, path: str, section: "Section", where: str) -> str:
        leaf = path.rsplit(".", 1)[-1]
        near = [f"{where}.{k}" if where else k for k in difflib.get_close_matches(leaf, list(section.keys), n=3)]
        if not near:  # the right key in the wrong section (train.lr -> optim.recommender.lr)?
            near = [p for p in self.paths() if difflib.get_close_matches(leaf, [p.rsplit(".", 1)[-1]], cutoff=0.8)][:3]
        if near:
            return f"; did you mean {', '.join(near)}?"
        return f"; valid keys{' of ' + where if where else ''}: {', '.join(section.keys)}"

    # ------------------------------------------------------------------ defaults and display

    def resolve(self, cfg: Mapping[str, Any] | None) -> dict[str, Any]:
        """``cfg`` with every absent key at its default (``cfg`` must be valid)."""
        cfg = cfg or {}
        out = {}
        for k, s in self.keys.items():
            if isinstance(s, Section):
                out[k] = s.resolve(cfg.get(k))
            else:
                out[k] = copy.deepcopy(cfg[k] if k in cfg else s.default)
        return out

    def render(self, cfg: Mapping[str, Any] | None = None, indent: int = 0) -> str:
        """YAML of the resolved ``cfg`` with each key's type and doc as a comment."""
        resolved = self.resolve(cfg)
        rows: list[tuple[str, str]] = []
        self._rows(resolved, cfg or {}, indent, rows)
        width = min(48, max(len(text) for text, _ in rows))
        return "\n".join(f"{text:<{width}}  # {note}" if note else text for text, note in rows)

    def _rows(self, resolved: Mapping[str, Any], given: Mapping[str, Any], indent: int, rows: list) -> None:
        pad = "  " * indent
        for k, s in self.keys.items():
            if isinstance(s, Section):
                rows.append((f"{pad}{k}:", s.doc))
                s._rows(resolved[k], given.get(k) or {}, indent + 1, rows)
            else:
                note = f"{type_name(s.type)}; {s.doc}" if s.doc else type_name(s.type)
                if k not in given:
                    note += " [default]"
                rows.append((f"{pad}{k}: {_flow(resolved[k])}", note))


def _flow(value: Any) -> str:
    """One line of YAML (flow style) for a value."""
    return yaml.safe_dump(value, default_flow_style=True, width=10_000, sort_keys=False).strip().removesuffix("\n...")


# ---------------------------------------------------------------------- types


def type_ok(value: Any, tp: Any) -> bool:
    """Whether ``value`` (as YAML parses it) fits the annotation ``tp``."""
    if tp is Any:
        return True
    if tp is None or tp is type(None):
        return value is None
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        return any(type_ok(value, a) for a in args)
    if origin is Literal:
        return value in args
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if origin is list or tp is list:
        return isinstance(value, list) and (not args or all(type_ok(v, args[0]) for v in value))
    if origin is dict or tp is dict:
        return isinstance(value, dict) and (not args or all(type_ok(v, args[1]) for v in value.values()))
    raise TypeError(f"schema: unsupported type {tp!r}")


def type_name(tp: Any) -> str:
    """``int``, ``float or null``, ``one of auto, fp32, bf16``, ``list of int``, ``mapping``..."""
    if tp is Any:
        return "any value"
    if tp is None or tp is type(None):
        return "null"
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(type_name(a) for a in sorted(args, key=lambda a: a is type(None)))
    if origin is Literal:
        return "one of " + ", ".join(map(str, args))
    if origin is list:
        return f"list of {type_name(args[0])}"
    if origin is dict or tp is dict:
        return "mapping" if not args or args[1] is Any else f"mapping of {type_name(args[1])}"
    return getattr(tp, "__name__", str(tp))


# ---------------------------------------------------------------------- declaration


_FIELD_LINE = re.compile(r"^(\s+)(\w+)\s*:[^#]*?(?:#\s?(.*))?$")
_COMMENT_LINE = re.compile(r"^(\s+)#\s?(.*)$")


def field_docs(cls: type) -> dict[str, str]:
    """Each field's trailing ``# doc`` comment (plus comment-only lines right below it) in ``cls``'s source."""
    docs: dict[str, str] = {}
    current = None
    for line in inspect.getsource(cls).splitlines():
        comment = _COMMENT_LINE.match(line)
        if comment and current:
            docs[current] = f"{docs[current]} {comment.group(2).strip()}".strip()
            continue
        m = _FIELD_LINE.match(line)
        current = m.group(2) if m and not line.lstrip().startswith(("def ", "@", "return", "class ")) else None
        if current:
            docs[current] = (m.group(3) or "").strip()
    return docs


def _class_doc(cls: type) -> str:
    doc = inspect.getdoc(cls) or ""
    return "" if doc.startswith(f"{cls.__name__}(") else doc.split("\n\n")[0].replace("\n", " ")


@functools.lru_cache(maxsize=None)
def from_dataclass(cls: type) -> Section:
    """The section declared by dataclass ``cls``: one key per field (type, default, trailing-comment doc)."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        if metadata_doc := f.metadata.get("doc"):
            docs[f.name] = metadata_doc
    instance = cls()
    keys: dict[str, Key | Section] = {}
    for f in dataclasses.fields(cls):
        tp, default = hints[f.name], getattr(instance, f.name)
        if dataclasses.is_dataclass(tp):
            sub = from_dataclass(tp)
            keys[f.name] = Section(_with_defaults(sub, default), docs.get(f.name) or sub.doc)
        else:
            keys[f.name] = Key(tp, default, docs.get(f.name, ""))
    return Section(keys, _class_doc(cls))


def _with_defaults(section: Section, instance: Any) -> dict[str, Key | Section]:
    """``section``'s keys with the defaults of a given instance (``optim.recommender`` vs ``optim.generator``)."""
    return {k: dataclasses.replace(s, default=getattr(instance, k)) if isinstance(s, Key) else s
            for k, s in section.keys.items()}


def part(**entries: "type | Section | Key") -> Section:
    """What one layer declares: top-level keys (:class:`Key`) and sections (dataclasses or :class:`Section`)."""
    keys = {}
    for name, e in entries.items():
        keys[name] = from_dataclass(e) if isinstance(e, type) and dataclasses.is_dataclass(e) else e
    return Section(keys)


def combine(*parts: Section, doc: str = "") -> Section:
    """Merge sections key by key (sub-sections recursively); a key declared twice is an error."""
    keys: dict[str, Key | Section] = {}
    docs = [p.doc for p in parts if p.doc]
    for p in parts:
        for name, spec in p.keys.items():
            have = keys.get(name)
            if have is None:
                keys[name] = spec
            elif isinstance(have, Section) and isinstance(spec, Section):
                keys[name] = combine(have, spec)
            else:
                raise TypeError(f"schema: config key {name!r} is declared twice")
    return Section(keys, doc or " ".join(docs))


def load(cls: type, cfg: Mapping[str, Any] | None, where: str) -> Any:
    """An instance of dataclass ``cls`` from a recipe section, checked against ``cls``'s declaration."""
    from_dataclass(cls).validate(cfg, where)
    return cls(**dict(cfg or {}))

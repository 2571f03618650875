"""Prompt templates (paper 2.1) rendered at the token level from the *current* ID table.

A prompt is built by concatenating token segments: template text, the user phrase, and each history item's ID
tokens joined by a separator. Building at the token level gives the exact span of every history item in the
encoder input, which the generator stage needs to splice soft ID embeddings in by index, and it guarantees that an
item's ID is the same token sequence in the prompt and as a decoding target.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

DEFAULT_TEMPLATES = Path(__file__).resolve().parent / "templates" / "sequential.txt"


def load_templates(source: str | Path | Sequence[str] | None = None) -> list[str]:
    """The templates of a file (one per line, ``#`` comments skipped; ``None``: the paper's 10) or of a list of
    strings (how an export's ``config.yaml`` carries them); each needs ``{user}`` and ``{history}`` exactly once."""
    from .io import DataError

    if source is not None and not isinstance(source, (str, Path)):
        where: str | Path = "prompt.templates"
        lines = [(i, str(t)) for i, t in enumerate(source, 1)]
    else:
        where = Path(source) if source else DEFAULT_TEMPLATES
        if not where.exists():
            raise DataError(where, None, "template file not found")
        lines = list(enumerate(where.read_text(encoding="utf-8").splitlines(), 1))
    templates: list[str] = []
    for lineno, line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        for slot in ("{user}", "{history}"):
            if line.count(slot) != 1:
                raise DataError(where, lineno, f"template must contain {slot} exactly once")
        templates.append(line)
    if not templates:
        raise DataError(where, None, "no templates")
    return templates


def template_words(source: str | Path | Sequence[str] | None = None) -> list[str]:
    """Plain words of all templates, used to train the tokenizer so prompts tokenise compactly."""
    return [t.replace("{user}", "the user").replace("{history}", "") for t in load_templates(source)]


@dataclass
class Prompt:
    input_ids: list[int]
    item_spans: list[tuple[int, int]]  # [start, end) of each history item's ID tokens, oldest first


class PromptBuilder:
    """Turns (history ID token lists, optional user ID tokens, template index) into encoder input ids."""

    def __init__(self, tokenizer, templates: Sequence[str] | None = None, separator: str = ",", max_length: int = 512):
        self.tokenizer = tokenizer
        self.templates = list(templates) if templates is not None else load_templates()
        self.max_length = max_length
        self.eos = tokenizer.eos_token_id
        self.sep = self._encode(separator)
        self._parts = [self._split(t) for t in self.templates]

    @classmethod
    def from_config(cls, tokenizer, prompt: Mapping[str, Any] | None = None) -> PromptBuilder:
        """The builder a config's ``prompt`` section describes (``templates``: a file or a list, ``separator``,
        ``max_length``). Training, evaluation and ``recommend`` all build prompts through it, so a model is
        evaluated on prompts shaped as it was trained on."""
        prompt = prompt or {}
        return cls(tokenizer, load_templates(prompt.get("templates")), separator=prompt.get("separator", ","),
                   max_length=int(prompt.get("max_length", 512)))

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text.strip() else []

    @functools.lru_cache(maxsize=None)
    def _phrase(self, text: str) -> tuple[int, ...]:
        return tuple(self._encode(text))

    def _split(self, template: str) -> list[str]:
        """Template -> alternating literal text and slot names."""
        out, rest = [], template
        while rest:
            i_u, i_h = rest.find("{user}"), rest.find("{history}")
            cands = [(i, s) for i, s in ((i_u, "{user}"), (i_h, "{history}")) if i >= 0]
            if not cands:
                out.append(rest)
                break
            i, slot = min(cands)
            if i:
                out.append(rest[:i])
            out.append(slot)
            rest = rest[i + len(slot):]
        return out

    def build(self, history: Sequence[Sequence[int]], template: int = 0, user: Sequence[int] | None = None) -> Prompt:
        """History items beyond ``max_length`` are dropped from the oldest end."""
        parts = self._parts[template % len(self._parts)]
        fixed = 1  # eos
        for p in parts:
            if p == "{user}":
                fixed += len(self._phrase("user")) + len(user) if user else len(self._phrase("the user"))
            elif p != "{history}":
                fixed += len(self._phrase(p))
        budget = self.max_length - fixed
        kept: list[Sequence[int]] = []
        for ids in reversed(history):
            cost = len(ids) + (len(self.sep) if kept else 0)
            if cost > budget:
                break
            kept.append(ids)
            budget -= cost
        kept.reverse()
        input_ids: list[int] = []
        spans: list[tuple[int, int]] = []
        for p in parts:
            if p == "{user}":
                input_ids += [*self._phrase("user"), *user] if user else list(self._phrase("the user"))
            elif p == "{history}":
                for j, ids in enumerate(kept):
                    if j:
                        input_ids += self.sep
                    spans.append((len(input_ids), len(input_ids) + len(ids)))
                    input_ids += ids
            else:
                input_ids += self._phrase(p)
        input_ids.append(self.eos)
        return Prompt(input_ids, spans)

"""Tag warm-start: a short supervised pretraining that teaches the ID generator to write a concise tag.

The paper starts its generator from a T5 fine-tuned on article tag generation; no such checkpoint is available
offline, so the generator first learns to map an item's plain text to a tag derived from the text itself: the most
informative words of its title (or name), in order, without field names, numbers or stop words (3-6 words,
topped up from the other fields when the title is short). Phase-0 IDs then read like the reference's short
title-word IDs instead of random tokens.
"""
from __future__ import annotations

import logging
import random
import re
from dataclasses import dataclass

from genrec.dist import device, is_main

log = logging.getLogger(__name__)

STOP_WORDS = frozenset("""
a an and are as at be by for from has have in into is it its of on or our the this that to with without your you
new set pack count size oz fl ml ounce ounces lb lbs piece pieces pcs pc inch inches by na unknown
""".split())
TITLE_FIELDS = ("title", "name")
_FIELD = re.compile(r"(?:^|;\s*)([A-Za-z_][\w ]*?):\s")
_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")


def fields_of(text: str) -> dict[str, str]:
    """``field: value; field: value`` plain text (``tokenization.text``) split into fields (or ``{"": text}``)."""
    marks = list(_FIELD.finditer(text))
    if not marks:
        return {"": text}
    out: dict[str, str] = {}
    for m, nxt in zip(marks, [*marks[1:], None]):
        out.setdefault(m.group(1).strip().lower(), text[m.end(): nxt.start() if nxt else len(text)].strip())
    return out


def tag_target(text: str, min_words: int = 3, max_words: int = 6) -> str:
    """The warm-start target of an item's plain text: up to ``max_words`` informative title words, in order."""
    fields = fields_of(text)
    title = next((fields[f] for f in TITLE_FIELDS if f in fields), None)
    sources = ([title] if title else []) + [v for k, v in fields.items() if k not in TITLE_FIELDS]
    words: list[str] = []
    for i, src in enumerate(sources):
        if i > 0 and len(words) >= min_words:
            break
        for w in _WORD.findall(src.lower()):
            if len(w) > 1 and w not in STOP_WORDS and w not in words:
                words.append(w)
                if len(words) == max_words:
                    return " ".join(words)
    return " ".join(words)


@dataclass
class WarmstartConfig:
    """Tag warm-start of a fresh generator (used when model.generator has no init; steps: 0 disables it)."""

    steps: int = 300  # optimizer steps
    batch_size: int = 32  # (text, tag) pairs per step
    lr: float = 2e-3  # AdamW learning rate
    max_text_tokens: int = 256  # item text truncation
    min_words: int = 3  # a tag draws on fields beyond the title until it has this many words
    max_words: int = 6  # words in a tag
    seed: int = 0  # sample order and initialisation (pretrain: the recipe's seed unless set here)
    init: str | None = None  # the model it starts from (init_lm sets the LM); null: a fresh model.generator


def warmstart(model, tokenizer, texts: list[str], cfg: WarmstartConfig) -> list[float]:
    """Train ``model`` in place on (text -> :func:`tag_target`) pairs; returns the loss of every step."""
    import torch
    from tqdm.auto import tqdm

    pairs = [(t, tag_target(t, cfg.min_words, cfg.max_words)) for t in texts]
    pairs = [p for p in pairs if p[1]]
    if not pairs:
        raise ValueError("warm-start: no text yields a tag")
    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)
    dev = device()
    model.to(dev).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    losses: list[float] = []
    order: list[int] = []
    for _ in tqdm(range(cfg.steps), desc="tag warm-start", disable=not is_main()):
        if len(order) < cfg.batch_size:
            order += rng.sample(range(len(pairs)), len(pairs))
        batch = [pairs[order.pop()] for _ in range(min(cfg.batch_size, len(pairs)))]
        enc = tokenizer([p[0] for p in batch], truncation=True, max_length=cfg.max_text_tokens, padding=True,
                        return_tensors="pt").to(dev)
        labels = tokenizer([p[1] for p in batch], padding=True, return_tensors="pt")["input_ids"].to(dev)
        labels[labels == tokenizer.pad_token_id] = -100
        loss = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    log.info("tag warm-start: %d steps, loss %.3f -> %.3f", cfg.steps, losses[0], losses[-1])
    return losses


"""Tag warm-start: a short supervised pretraining that teaches the ID generator to write a concise tag.

The paper starts its generator from a T5 fine-tuned on article tag generation; no such checkpoint is available
offline, so the generator first learns to map an item's plain text to a tag derived from the text itself: the most
informative words of its title (or name), in order, without field names, numbers or stop words (3-6 words,
topped up from the other fields when the title is short). Phase-0 IDs then read like the reference's short
title-word IDs instead of random tokens. Torch is imported only by the functions that train, so Algorithm 1's
registry can use :func:`tag_target` cheaply.
"""
from __future__ import annotations

import logging
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

STOP_WORDS = frozenset("""
a an and are as at be by for from has have in into is it its of on or our the this that to with without your you
new set pack count size oz fl ml ounce ounces lb lbs piece pieces pcs pc inch inches by na unknown
""".split())
TITLE_FIELDS = ("title", "name")
_FIELD = re.compile(r"(?:^|;\s*)([A-Za-z_][\w ]*?):\s")
_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")


def fields_of(text: str) -> dict[str, str]:
    """``field: value; field: value`` plain text (``genrec.text``) split into fields (or ``{"": text}``)."""
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
    """Tag warm-start of a fresh generator (the recipe's ``warmstart`` section; used when model.generator has no
    init, or ``init`` is set; steps: 0 disables it)."""

    steps: int = 300  # optimizer steps (0: no warm-start)
    batch_size: int = 32  # (text, tag) pairs per step
    lr: float = 2e-3  # AdamW learning rate
    minutes: float | None = None  # time budget: stop after this many minutes even if steps remain (null: none)
    max_text_tokens: int = 256  # item text truncation
    min_words: int = 3  # a tag draws on fields beyond the title until it has this many words
    max_words: int = 6  # words in a tag
    seed: int = 0  # sample order and initialisation (finetune / pretrain: the recipe's seed unless set here)
    init: str | None = None  # the model it starts from (init_lm sets the LM); null: a fresh model.generator

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None, seed: int = 0) -> "WarmstartConfig":
        """From a recipe's ``warmstart`` settings, checked against the fields above (:mod:`genrec.schema`)."""
        from genrec import schema

        return schema.load(cls, {"seed": seed, **(d or {})}, "warmstart")


def warmstart(model, tokenizer, texts: list[str], cfg: WarmstartConfig, state_path: str | Path | None = None) -> list[float]:
    """Train ``model`` in place on (text -> :func:`tag_target`) pairs; returns the loss of every step.

    Ends after ``cfg.steps`` steps or ``cfg.minutes``, whichever comes first. With ``state_path``, a stop signal
    (``genrec.stop``) saves model, optimizer, step, data order and RNG there before the :class:`~genrec.stop.Stop`
    propagates, and a call with a saved state continues from it exactly.
    """
    import torch
    from tqdm.auto import tqdm

    from genrec import stop
    from genrec.dist import device, is_main
    from genrec.io import atomic_write

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
    spent = 0.0
    state_path = Path(state_path) if state_path else None
    if state_path is not None and state_path.exists():
        state = torch.load(state_path, map_location=dev, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        rng.setstate(state["rng"])
        torch.set_rng_state(state["torch_rng"])
        losses, order, spent = state["losses"], state["order"], state["seconds"]
        log.info("tag warm-start: resumed at step %d", len(losses))
    budget = None if cfg.minutes is None else 60.0 * float(cfg.minutes)
    start = time.perf_counter() - spent
    bar = tqdm(total=cfg.steps, initial=len(losses), desc="tag warm-start", disable=not is_main())
    try:
        while len(losses) < cfg.steps and (budget is None or time.perf_counter() - start < budget):
            stop.check()
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
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    except stop.Stop as e:
        if state_path is not None:
            state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "rng": rng.getstate(),
                     "torch_rng": torch.get_rng_state(), "losses": losses, "order": order,
                     "seconds": time.perf_counter() - start}
            state_path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(state_path, "wb") as f:
                torch.save(state, f)
            e.saved.append(f"warm-start state at step {len(losses)} in {state_path}")
        raise
    finally:
        bar.close()
    model.eval()
    if losses:
        log.info("tag warm-start: %d steps in %.0fs, loss %.3f -> %.3f", len(losses), time.perf_counter() - start,
                 losses[0], losses[-1])
    return losses


def ensure_generator(cfg: dict[str, Any], texts: list[str], run_dir: str | Path, resume: bool = False) -> None:
    """Set ``model.generator.init`` to a tag-warm-started generator (:func:`warm_generator`) when the recipe gives
    no generator (no ``model.generator.init``, no ``init=`` export) or asks for a warm-start from a given model
    (``warmstart.init``, e.g. the language model of ``init_lm``), and the IDs are the generator's
    (``ids.scheme: idgenrec``); ``cfg["tokenizer"]["path"]`` must be set. Used by ``finetune`` and ``pretrain``."""
    generator = cfg.setdefault("model", {}).setdefault("generator", {})
    start = (cfg.get("warmstart") or {}).get("init")
    if (generator.get("init") and not start) or (cfg.get("ids") or {}).get("scheme", "idgenrec") != "idgenrec":
        return
    path = warm_generator(cfg, texts, cfg["tokenizer"]["path"], run_dir, resume)
    if path:
        generator["init"] = path


def warm_generator(cfg: dict[str, Any], texts: list[str], tokenizer_dir: str | Path, run_dir: str | Path,
                   resume: bool = False) -> str | None:
    """The generator folder to start from when the recipe gives none: a fresh generator (``model.generator`` sizes)
    tag-warm-started on ``texts`` (a dataset's or corpus's item text) into ``RUN/warmstart``, on rank 0.

    The paper starts from a tag-generation T5; a randomly initialised generator writes noise and Algorithm 1 then
    crawls through every retry. Returns ``None`` when the recipe's ``warmstart.steps`` is 0. A finished warm-start
    in the run folder is reused; a stopped one continues from ``RUN/warmstart.state.pt`` with ``resume``.
    """
    warm = WarmstartConfig.from_dict(cfg.get("warmstart"), int(cfg.get("seed", 0)))
    if warm.steps <= 0:
        return None
    out = Path(run_dir) / "warmstart"
    state_path = Path(run_dir) / "warmstart.state.pt"

    def train() -> str:
        import torch

        from genrec.io import atomic_dir
        from genrec.modeling import load_t5, model_from_config
        from tokenization.spm import load_tokenizer

        if (out / "config.json").exists():
            return str(out)
        if not resume:
            state_path.unlink(missing_ok=True)
        threads = (cfg.get("train") or {}).get("threads")
        if threads and not torch.cuda.is_available():  # as the trainer will (an oversubscribed CPU spins)
            torch.set_num_threads(int(threads))
        tokenizer = load_tokenizer(tokenizer_dir)
        torch.manual_seed(warm.seed + 1)
        model = (load_t5(warm.init) if warm.init
                 else model_from_config((cfg.get("model") or {}).get("generator") or {}, len(tokenizer)))
        warmstart(model, tokenizer, texts, warm, state_path)
        with atomic_dir(out) as tmp:
            model.save_pretrained(str(tmp), safe_serialization=True)
        state_path.unlink(missing_ok=True)
        return str(out)

    from genrec.stop import main_only

    return main_only(train)

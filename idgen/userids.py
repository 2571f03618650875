"""User IDs (paper 2.1): the ID generator applied to the items a prompt shows, never the item it asks for.

Every prompt's user ID is generated from that prompt's own history (the items' plain text, newest first, so
truncation drops the oldest): a validation prompt's from the items before the validation target, a test prompt's
from the items before the test target, and each training prefix's from the items before *its* target. Naming a
user once from the whole training sequence (one ID per split) would put the targets of the user's later prefixes
into the earlier prefixes' prompts; the recommender would learn to read answers off user IDs, which evaluation
prompts never offer. Identical histories share their ID. With ``prompt.user_ids: true`` in a recipe the trainer,
the evaluation harness and ``idgenrec recommend`` put them into the prompts (:func:`prompt_user_ids`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from genrec.dataset import Item
from genrec.splits import Sample

from .idtable import IdTable

MAX_ITEMS = 20  # the most recent items a user's input text is built from


def history_key(history: Sequence[str]) -> str:
    """The key of a history (item keys, oldest first) in a user-ID table: its item keys joined by spaces."""
    return " ".join(history)


def history_text(texts: Sequence[str], max_items: int = MAX_ITEMS) -> str:
    """The generator input for a history given oldest first: the newest ``max_items`` texts, newest first."""
    return "; ".join(reversed(list(texts)[-max_items:]))


def prompt_texts(samples: Iterable[Sample], items: Mapping[str, Item], max_items: int = MAX_ITEMS) -> dict[str, str]:
    """The generator input of every distinct history among ``samples`` (key: :func:`history_key`); samples with an
    empty history have none."""
    return {history_key(s.history): history_text([items[k].text for k in s.history], max_items)
            for s in samples if s.history}


def profile_ids(model, tokenizer, texts: Mapping[str, str], section: Mapping[str, Any] | None = None,
                progress: bool = True, desc: str = "user IDs") -> IdTable:
    """An ID per text (key -> text): the generator's first non-empty candidate at Algorithm 1's first try, decoded
    by the same diverse beam search as item IDs with the ``idgen`` section's settings.

    Unlike item IDs these are not made unique: a user ID is a profile the recommender reads, never an answer it must
    decode, and users who have seen the same items should read alike (a uniqueness loop would set them apart at
    random, and cannot end when many users share one visible text). Keys whose candidates are all empty are left
    out (their prompts say "the user").
    """
    from tqdm.auto import tqdm

    from .algorithm import chunks, normalize, propose
    from .config import IdGenConfig
    from .generator import Generator

    cfg = IdGenConfig.from_dict({k: v for k, v in (section or {}).items() if k not in ("workers", "ray_address")})
    gen = Generator(model, tokenizer, cfg.max_text_tokens)
    ids: dict[str, str] = {}
    keys = sorted(texts)
    bar = tqdm(total=len(keys), desc=desc, unit="user", disable=not progress)
    for batch in chunks(keys, cfg.batch_size):
        for key, candidates in propose(gen, dict(texts), batch, [0] * len(batch), cfg).items():
            named = [c for c in (normalize(c, cfg.normalize) for c in candidates) if c]
            if named:
                ids[key] = named[0]
        gen.forget(batch)
        bar.update(len(batch))
    bar.close()
    return IdTable(ids)


def enabled(cfg: Mapping[str, Any] | None) -> bool:
    """Whether a recipe puts user IDs into its prompts (``prompt.user_ids``, off by default as they are optional)."""
    return bool(((cfg or {}).get("prompt") or {}).get("user_ids", False))


def prompt_user_ids(model, tokenizer, samples: Iterable[Sample], items: Mapping[str, Item],
                    cfg: Mapping[str, Any] | None, progress: bool = False,
                    save_to: str | Path | None = None) -> dict[str, str]:
    """The user ID of every distinct history among ``samples`` (:func:`history_key` -> ID), named by ``model`` on
    the main rank and sent to all ranks (call on every rank); ``save_to``: also write the table there. The model
    runs in eval mode (its mode is restored)."""
    from genrec import dist

    ids = None
    if dist.is_main():
        was = model.training
        model.eval()
        try:
            table = profile_ids(model, tokenizer, prompt_texts(samples, items), (cfg or {}).get("idgen"), progress)
        finally:
            model.train(was)
        if save_to is not None:
            table.save(save_to)
        ids = table.ids
    return dist.broadcast_object(ids)


def prompt_user_tokens(ids: Mapping[str, str], tokenizer) -> dict[str, list[int]]:
    """:func:`prompt_user_ids`' table as prompt tokens, by history key."""
    return IdTable(dict(ids)).token_ids(tokenizer)

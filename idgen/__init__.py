"""ID generation (paper 2.2-2.3): the T5 ID generator, diverse beam search, Algorithm 1, Ray sharding, IdTable.

:func:`generate` is the one entry point (trainer, harness, CLI). Torch and Ray are imported only when it runs.
"""
from __future__ import annotations

from typing import Any

from .config import IdGenConfig
from .idtable import IdTable

__all__ = ["IdGenConfig", "IdTable", "generate", "generate_from_section"]


def generate(
    model,
    tokenizer,
    items: dict[str, Any],
    cfg: IdGenConfig | dict[str, Any] | None = None,
    workers: int = 0,
    ray_address: str | None = None,
    previous: IdTable | None = None,
    progress: bool = True,
    state_dir: str | None = None,
) -> IdTable:
    """The IdTable of ``items`` (key -> plain text, or anything with a ``.text``) by Algorithm 1.

    ``workers`` > 0 or a ``ray_address`` shards the work over Ray actors (same table as one process; ``state_dir``
    keeps their registry's log, in one process the claims saved on a stop, so a rerun resumes); ``previous`` adds the churn against an earlier table to the
    report.
    """
    cfg = cfg if isinstance(cfg, IdGenConfig) else IdGenConfig.from_dict(cfg)
    texts = {k: getattr(v, "text", v) for k, v in items.items()}
    if workers or ray_address:
        from .distributed import generate_ids_ray

        return generate_ids_ray(model, tokenizer, texts, cfg, workers=max(1, workers), ray_address=ray_address,
                                previous=previous, state_dir=state_dir, progress=progress)
    from .algorithm import generate_ids

    return generate_ids(model, tokenizer, texts, cfg, previous=previous, progress=progress, state_dir=state_dir)


def generate_from_section(
    model,
    tokenizer,
    items: dict[str, Any],
    section: dict[str, Any] | None,
    version: int | None = None,
    previous: IdTable | None = None,
    progress: bool = True,
    state_dir: str | None = None,
) -> IdTable:
    """:func:`generate` driven by a recipe's ``idgen`` section: Algorithm 1 settings plus where to run it
    (``workers``, ``ray_address``), so trainer, harness and demo read a recipe the same way."""
    settings = dict(section or {})
    workers = int(settings.pop("workers", 0) or 0)
    ray_address = settings.pop("ray_address", None)
    if version is not None:
        settings["version"] = version
    return generate(model, tokenizer, items, settings, workers=workers, ray_address=ray_address, previous=previous,
                    progress=progress, state_dir=state_dir)

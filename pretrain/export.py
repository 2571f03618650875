"""The export folder (docs/architecture.md) that ``zeroshot`` and ``recommend`` read.

``export/{recommender,generator,tokenizer}`` are ``save_pretrained`` folders (safetensors), next to ``idtable.tsv``
and the resolved run ``config.yaml`` (its ``prompt.templates`` holds the templates themselves). The folder is
assembled under a temporary name and renamed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from genrec.io import atomic_dir
from genrec.prompts import load_templates
from idgen.idtable import IdTable


def export(out: str | Path, recommender, generator, tokenizer, idtable: IdTable, cfg: dict[str, Any]) -> Path:
    out = Path(out)
    with atomic_dir(out) as tmp:
        recommender.save_pretrained(str(tmp / "recommender"), safe_serialization=True)
        generator.save_pretrained(str(tmp / "generator"), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp / "tokenizer"))
        idtable.save(tmp / "idtable.tsv")
        # the templates themselves, not a path that may not exist where the checkpoint is evaluated
        prompt = dict(cfg.get("prompt") or {})
        prompt["templates"] = load_templates(prompt.get("templates"))
        (tmp / "config.yaml").write_text(yaml.safe_dump({**cfg, "prompt": prompt}, sort_keys=False))
    return out

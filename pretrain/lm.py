"""Language pretraining on item text: T5's span-corruption objective, the stage both models can start from.

The paper's recommender and generator start from T5-small pretrained on web text; without a hub this module makes
such a start from the item text of any number of prepared datasets (every field the readers keep, as the
Dataset's item plain text):

* **text corpus** (``build_text_corpus``): every item's plain text as a ``TextRecord`` (key namespaced by dataset,
  ``beauty:B00...``) in webdataset shards written by ``pretrain.shards`` (as the Fusion corpus), minus a held-out
  set (``valid.jsonl``, chosen by a seeded hash) for the validation loss;
* **span corruption** (``SpanCorruption``), applied at load time in the DataLoader workers, so every epoch draws a
  fresh mask: T5's ``random_spans_noise_mask`` (noise tokens = round(length x density), spans =
  round(noise / mean span length), both segmentations random, the text starts with a kept span); each noise
  span becomes one sentinel ``<extra_id_i>`` in the input, and the target lists ``<extra_id_i>`` + the span for
  every span, both ending in ``</s>``. The mask is a pure function of (seed, epoch, item key);
* **training** by the one trainer (``pretrain.engine``, stage kind ``lm``, recommender engine): same precision,
  schedule, checkpoints, exact resume, signals and ``train.stage_seconds`` budgets as the other stages;
  validation is the held-out span-corruption loss (a fixed mask), and the result is a ``save_pretrained`` folder
  ``LM/model`` holding the model and the tokenizer (T5 layout + 100 sentinels, trained on the same text);
* **one init path** (``apply_init_lm``): ``init_lm: LM`` starts the recommender, the generator and the tag
  warm-start from that folder and takes the tokenizer from it.

``idgenrec pretrain lm --dataset NAME=DIR ... --out LM`` (``pretrain.cli``) runs it; ``configs/lm.yaml`` is the
recipe, and the Fusion recipe runs it as its first stage when ``pretrain.lm.minutes`` > 0.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from genrec.io import DataError, atomic_dir, write_json
from genrec.recipe import init_spec

from .batching import IGNORE, Example, collate, token_budget_batches
from .shards import ShardSource, TextRecord, write_shards

if TYPE_CHECKING:
    from genrec.dataset import Dataset

log = logging.getLogger(__name__)

LM = "lm"  # the trainer's stage kind
SHARDS_DIR, VALID_FILE, INFO_FILE, MODEL_DIR = "shards", "valid.jsonl", "text.json", "model"
LM_ENTRIES = ["text", MODEL_DIR]  # what an LM folder holds beside the trainer's run entries


# ---------------------------------------------------------------- T5's noise mask


def random_segmentation(num_items: int, num_segments: int, rng: random.Random) -> list[int]:
    """``num_items`` split at random into ``num_segments`` non-empty segments; their lengths, in order (T5's
    ``_random_segmentation``: shuffle ``num_segments - 1`` segment starts among the ``num_items - 1`` gaps)."""
    if not 1 <= num_segments <= num_items:
        raise ValueError(f"cannot split {num_items} items into {num_segments} non-empty segments")
    starts = [1] * (num_segments - 1) + [0] * (num_items - num_segments)
    rng.shuffle(starts)
    lengths = [0] * num_segments
    segment = 0
    for first in [0, *starts]:
        segment += first
        lengths[segment] += 1
    return lengths


def random_spans_noise_mask(length: int, noise_density: float, mean_noise_span_length: float,
                            rng: random.Random) -> list[bool]:
    """T5's ``random_spans_noise_mask``: which of ``length`` tokens are noise (True), in alternating spans.

    Noise tokens: ``round(length * noise_density)``, at least 1 and at most ``length - 1``; noise spans:
    ``round(noise / mean_noise_span_length)``, at least 1. Noise and kept tokens are each segmented at random into
    that many spans, interleaved kept-first. As in T5, a length below 2 is treated as 2 and the mask cut back.
    """
    orig_length, length = length, max(length, 2)
    num_noise = min(max(int(round(length * noise_density)), 1), length - 1)
    num_spans = max(int(round(num_noise / mean_noise_span_length)), 1)
    noise_lengths = random_segmentation(num_noise, num_spans, rng)
    kept_lengths = random_segmentation(length - num_noise, num_spans, rng)
    mask: list[bool] = []
    for kept, noise in zip(kept_lengths, noise_lengths):
        mask += [False] * kept + [True] * noise
    return mask[:orig_length]


def span_corrupt(tokens: Sequence[int], mask: Sequence[bool], sentinels: Sequence[int], eos: int) -> tuple[list[int], list[int]]:
    """(input, target) of T5's span corruption: each noise span becomes the next sentinel in the input; the
    target is every sentinel followed by the span it replaced; both end in ``eos``."""
    inputs: list[int] = []
    targets: list[int] = []
    span = 0
    previous = False
    for token, noise in zip(tokens, mask):
        if noise and not previous:
            if span == len(sentinels):
                raise ValueError(f"{len(tokens)} tokens need more than the tokenizer's {len(sentinels)} sentinels "
                                 "(lower lm.max_tokens, or train the tokenizer with more tokenizer.extra_ids)")
            inputs.append(sentinels[span])
            targets.append(sentinels[span])
            span += 1
        (targets if noise else inputs).append(token)
        previous = noise
    return inputs + [eos], targets + [eos]


@dataclass(frozen=True)
class LMConfig:
    """T5 span corruption on item text (the ``lm`` section)."""

    noise_density: float = 0.15  # share of each text's tokens that are noise (T5)
    mean_noise_span_length: float = 3.0  # mean length of a noise span (T5)
    max_tokens: int = 256  # item text tokens kept (the start of the text) before corruption
    valid_items: int = 500  # held-out items for the validation loss (at most a tenth of all items)
    samples_per_shard: int = 2000  # text records per shard

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "LMConfig":
        """From a recipe's ``lm`` settings, checked against the fields above (:mod:`genrec.schema`)."""
        from genrec import schema

        cfg = schema.load(cls, d, "lm")
        if not 0.0 < cfg.noise_density < 1.0 or cfg.mean_noise_span_length < 1.0 or cfg.max_tokens < 2:
            raise ValueError(f"lm: need 0 < noise_density < 1, mean_noise_span_length >= 1, max_tokens >= 2 ({cfg})")
        return cfg


@dataclass(frozen=True)
class SpanCorruption:
    """TextRecord -> ``Example`` (input = corrupted text, labels = sentinels + spans) with a mask drawn from
    ``(seed, epoch, record key)``: the same in any process, fresh every epoch. Runs in the DataLoader workers."""

    tokenizer: Any
    sentinels: tuple[int, ...]
    cfg: LMConfig
    seed: int
    epoch: int | str

    def __call__(self, record: TextRecord) -> Example:
        tokens = self.tokenizer(record.text, add_special_tokens=False, truncation=True,
                                max_length=self.cfg.max_tokens)["input_ids"]
        rng = random.Random(f"idgenrec-lm:{self.seed}:{self.epoch}:{record.key}")
        mask = random_spans_noise_mask(len(tokens), self.cfg.noise_density, self.cfg.mean_noise_span_length, rng)
        inputs, targets = span_corrupt(tokens, mask, self.sentinels, self.tokenizer.eos_token_id)
        return Example(inputs, [], (), targets)


def corruption(tokenizer, cfg: Mapping[str, Any] | None, seed: int, epoch: int | str) -> SpanCorruption:
    """The span corruption of one epoch (``epoch="valid"``: the fixed mask of the held-out loss)."""
    from tokenization.spm import sentinel_ids

    sentinels = tuple(sentinel_ids(tokenizer))
    lm = LMConfig.from_dict(cfg)
    needed = max(int(round(max(int(round(lm.max_tokens * lm.noise_density)), 1) / lm.mean_noise_span_length)), 1)
    if len(sentinels) < needed:
        raise ValueError(f"span corruption of up to {lm.max_tokens} tokens needs {needed} sentinels; the tokenizer "
                         f"has {len(sentinels)} (train it with tokenizer.extra_ids=100, as configs/lm.yaml does)")
    return SpanCorruption(tokenizer, sentinels, lm, seed, epoch)


# ---------------------------------------------------------------- the text corpus


def _held_out(keys: list[str], n: int, seed: int) -> set[str]:
    def rank(key: str) -> str:
        return hashlib.sha256(f"{seed}\x00lm-valid\x00{key}".encode()).hexdigest()

    return set(sorted(keys, key=rank)[:n])


def build_text_corpus(datasets: Mapping[str, "Dataset"], out: str | Path, cfg: LMConfig, seed: int = 0) -> dict[str, Any]:
    """Every item's plain text of ``datasets`` (keys ``NAME:KEY``) as text shards + a held-out ``valid.jsonl``.

    The held-out items (``cfg.valid_items``, at most a tenth) are chosen by a seeded hash of their keys and never
    enter the shards. Written atomically; returns the content of ``text.json``.
    """
    from .corpus import NAME_RE

    records: list[TextRecord] = []
    for name, ds in datasets.items():
        if not NAME_RE.match(name):
            raise DataError(name, None, "dataset name must be letters, digits, '_', '-' or '.' (it prefixes keys)")
        records += [TextRecord(f"{name}:{key}", item.text, name) for key, item in ds.items.items() if item.text.strip()]
    if not records:
        raise DataError(out, None, "no item text in the given datasets")
    valid = _held_out([r.key for r in records], min(cfg.valid_items, len(records) // 10), seed)
    train = [r for r in records if r.key not in valid]
    random.Random(f"idgenrec-lm-corpus:{seed}").shuffle(train)  # mix datasets across shards
    info = {"seed": seed, "items": {n: len(ds.items) for n, ds in datasets.items()}, "train_items": len(train),
            "valid_items": len(valid)}
    with atomic_dir(out) as tmp:
        manifest = write_shards(train, tmp / SHARDS_DIR, cfg.samples_per_shard)
        with open(tmp / VALID_FILE, "w", encoding="utf-8") as f:
            for r in records:
                if r.key in valid:
                    f.write(json.dumps({"key": r.key, "text": r.text, "dataset": r.dataset}, ensure_ascii=False) + "\n")
        info["shards"] = len(manifest["shards"])
        write_json(tmp / INFO_FILE, info)
    return info


class TextSource(ShardSource):
    """The streaming source of a text corpus folder (``build_text_corpus``) plus its held-out records."""

    def __init__(self, folder: str | Path, **kw: Any):
        folder = Path(folder)
        super().__init__(folder / SHARDS_DIR, {}, **kw)
        self.valid: list[TextRecord] = []
        path = folder / VALID_FILE
        lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
        for n, line in enumerate(lines, 1):
            try:
                rec = json.loads(line)
                self.valid.append(TextRecord(str(rec["key"]), str(rec["text"]), str(rec["dataset"])))
            except (json.JSONDecodeError, KeyError) as e:
                raise DataError(path, n, f"not a text record ({e})") from None


# ---------------------------------------------------------------- validation and the LM folder


def held_out_loss(model, tokenizer, records: Sequence[TextRecord], cfg: Mapping[str, Any] | None, seed: int,
                  rank: int, world: int, max_tokens: int, max_batch: int) -> dict[str, float]:
    """Mean span-corruption loss per target token on the held-out records (a fixed mask), over all ranks."""
    import torch

    from genrec import dist

    corrupt = corruption(tokenizer, cfg, seed, "valid")
    examples = [corrupt(r) for r in records[rank::world]]
    total = count = 0.0
    was = model.training
    model.eval()
    dev = next(model.parameters()).device
    with torch.no_grad():
        for batch in token_budget_batches(examples, max_tokens, max_batch, random.Random(0)):
            b = {k: v.to(dev) for k, v in collate(batch).items()}
            n = int((b["labels"] != IGNORE).sum())
            total += float(model(**b).loss) * n
            count += n
    model.train(was)
    total, count = (sum(c) for c in zip(*dist.all_gather_object((total, count))))
    if not count:
        return {}
    return {"loss": total / count, "perplexity": math.exp(min(total / count, 50.0)), "tokens": int(count)}


def export_lm(out: str | Path, model, tokenizer) -> Path:
    """The LM folder: model and tokenizer ``save_pretrained`` side by side (``load_t5`` and ``load_tokenizer``
    both read it), written atomically."""
    with atomic_dir(out) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
    return Path(out)


def lm_model_dir(path: str | Path) -> Path:
    """The ``save_pretrained`` folder of an LM: ``path`` itself or ``path/model`` (the run folder of
    ``idgenrec pretrain lm --out path``)."""
    path = Path(path)
    for folder in (path, path / MODEL_DIR):
        if (folder / "config.json").exists() and (folder / "tokenizer_config.json").exists():
            return folder
    raise DataError(path, None, "not a language-model folder (no config.json + tokenizer_config.json here or in "
                                f"{MODEL_DIR}/; see 'idgenrec pretrain lm')")


def apply_init_lm(cfg: dict[str, Any]) -> None:
    """``init_lm: LM`` -> the recommender, the generator and the tag warm-start start from the LM, and the
    tokenizer is the LM's (model sizes then come from the LM)."""
    lm = cfg.get("init_lm")
    if not lm:
        return
    if cfg.get("init"):
        raise ValueError("give init (an export folder) or init_lm (a language model), not both")
    folder = str(lm_model_dir(lm))
    cfg["init_lm"] = folder
    models = cfg.setdefault("model", {})
    for part in ("recommender", "generator"):
        models[part] = init_spec(folder, models.get(part))
    cfg.setdefault("tokenizer", {})["path"] = folder
    cfg.setdefault("warmstart", {})["init"] = folder


# ---------------------------------------------------------------- the whole stage


def check_lm_config(cfg: Mapping[str, Any]) -> LMConfig:
    """The ``lm`` section, after checking that the schedule is the ``lm`` stage alone."""
    order = list((cfg.get("train") or {}).get("order") or [])
    if order != [LM]:
        raise ValueError(f"language pretraining needs train.order: [{LM}] (configs/lm.yaml), got {order}")
    return LMConfig.from_dict(cfg.get("lm"))


def train_lm(datasets: Mapping[str, "Dataset"], out: str | Path, cfg: dict[str, Any], resume: bool = False) -> dict[str, Any]:
    """Text corpus (``OUT/text``) and tokenizer (``OUT/tokenizer``, unless ``tokenizer.path``) on rank 0, then the
    ``lm`` stage on the one trainer; the LM folder is ``OUT/model``. Both are kept when they exist (resume)."""
    from genrec import dist
    from genrec.prompts import template_words
    from tokenization.spm import load_tokenizer, train_tokenizer

    from .engine import Trainer

    out = Path(out)
    lm = check_lm_config(cfg)
    seed = int(cfg.get("seed", 0))
    dist.init(single_process_group=True)
    tok = cfg.setdefault("tokenizer", {})
    if dist.is_main():
        if not (out / "text" / INFO_FILE).exists():
            info = build_text_corpus(datasets, out / "text", lm, seed)
            log.info("text corpus: %d training items in %d shards, %d held out", info["train_items"], info["shards"],
                     info["valid_items"])
        if not tok.get("path") and not (out / "tokenizer").exists():
            texts = [it.text for ds in datasets.values() for it in ds.items.values()]
            train_tokenizer(texts, out / "tokenizer", int(tok.get("vocab_size", 8000)),
                            extra_texts=template_words((cfg.get("prompt") or {}).get("templates")),
                            extra_ids=int(tok.get("extra_ids", 100)))
    dist.barrier()
    tok["path"] = tok.get("path") or str(out / "tokenizer")
    data = cfg.get("data") or {}
    source = TextSource(out / "text", num_workers=int(data.get("workers", 2)),
                        shuffle_buffer=int(data.get("shuffle_buffer", 1000)),
                        skip_corrupt=bool(data.get("skip_corrupt", False)), timeout=float(data.get("timeout", 600)))
    return Trainer(cfg, source, out, tokenizer=load_tokenizer(tok["path"]), resume=resume).fit()

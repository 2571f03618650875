"""Evaluation harness: checkpoint folder -> IDs for every item of a dataset -> trie -> ranked lists -> HR/NDCG.

Used by ``idgenrec zeroshot`` (datasets the recommender never saw get IDs from the checkpoint's generator, the same
Algorithm 1 as in training, or from the title rule when the checkpoint was trained on ``ids.scheme: title``) and by
``idgenrec recommend``. Test users are sorted by prompt length and dealt out to
ranks round-robin, so every rank decodes similar lengths; each rank returns ``(sample index, ranking)`` pairs and
the gathered pairs cover every user exactly once (no sampler padding), which :func:`evaluate` checks.

Settings live in the ``eval`` section of the config (defaults in :data:`EVAL_DEFAULTS`) and ``idgen`` (Algorithm 1);
the forward passes run in ``train.precision`` (``genrec.precision``).
"""
from __future__ import annotations

import logging
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import yaml

from genrec import dist, schema, stop
from genrec.dataset import Dataset
from genrec.io import DataError, write_json
from genrec.precision import from_config
from genrec.splits import Sample, leave_one_out
from idgen import userids
from idgen.idtable import IdTable

log = logging.getLogger(__name__)

@dataclass
class EvalSettings:
    """Evaluation (HR@k / NDCG@k with constrained beam search over the item-ID trie)."""

    ks: list[int] = field(default_factory=lambda: [5, 10])  # cut-offs of HR@k and NDCG@k
    max_history: int = 20  # history items in an evaluation prompt
    template: int = 0  # prompt template index
    num_beams: int = 20  # beams of the constrained search (>= the largest cut-off)
    batch_size: int = 64  # prompts per decoding batch
    length_penalty: float = 1.0  # beam score length penalty
    early_stopping: bool = False  # stop a beam search once num_beams hypotheses are finished
    exclude_history: bool = False  # never recommend an item of the user's history
    workers: int | None = None  # CPU only: batches decoded side by side by as many threads (null: 2 when torch has
    # >= 2 threads, see genrec.decoding.rank_prompts); ignored on other devices
    valid_users: int = 0  # the valid split on a fixed random sample of this many users (0: all), to keep model
    # selection cheap on big datasets
    test_users: int = 0  # the test split on a fixed random sample of this many users (0: all): a first look only,
    # printed with a warning, since such numbers are not comparable to full-test numbers
    test_length_penalties: list[float] | None = None  # the trainer scores its selected export on test once per length
    # penalty listed here (as well as once with length_penalty), e.g. [0.0, 1.0]; null: only length_penalty
    ids: Literal["auto", "generate", "idtable"] = "auto"  # auto: the checkpoint's idtable when it names every item
    # of the dataset, else the items are named afresh; generate: always afresh (zero-shot), by the checkpoint's ID
    # scheme (ids.scheme: idgenrec -> its generator, title -> the title rule); idtable: always the table


EVAL_DEFAULTS: dict[str, Any] = asdict(EvalSettings())
EVAL = schema.part(eval=EvalSettings)


def eval_settings(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    """``EVAL_DEFAULTS`` overridden by ``cfg["eval"]``, checked against :class:`EvalSettings`."""
    given = dict((cfg or {}).get("eval") or {})
    out = asdict(schema.load(EvalSettings, given, "eval"))
    if max(out["ks"]) > out["num_beams"]:
        raise ValueError(f"eval.num_beams={out['num_beams']} must be >= the largest cut-off {max(out['ks'])}")
    return out


@dataclass
class Checkpoint:
    """The pieces of an export folder (docs/architecture.md); ``generator`` / ``idtable`` may be absent."""

    path: Path
    recommender: Any
    tokenizer: Any
    generator: Any = None
    idtable: IdTable | None = None
    config: dict[str, Any] = field(default_factory=dict)


def _require(path: Path, what: str, marker: str) -> Path:
    if not (path / marker).exists():
        raise DataError(path, None, f"checkpoint has no {what} (expected a save_pretrained folder with {marker})")
    return path


def load_checkpoint(path: str | Path, require_generator: bool = True) -> Checkpoint:
    """Load ``recommender/``, ``tokenizer/``, ``generator/`` (unless not required), ``idtable.tsv`` and ``config.yaml``."""
    from genrec.modeling import load_t5
    from tokenization.spm import load_tokenizer

    path = Path(path)
    if not path.is_dir():
        raise DataError(path, None, "checkpoint folder not found")
    tokenizer = load_tokenizer(_require(path / "tokenizer", "tokenizer", "tokenizer_config.json"))
    recommender = load_t5(_require(path / "recommender", "recommender", "config.json"))
    generator = None
    if (path / "generator").exists() or require_generator:
        generator = load_t5(_require(path / "generator", "generator", "config.json"))
    idtable = IdTable.load(path / "idtable.tsv") if (path / "idtable.tsv").exists() else None
    config: dict[str, Any] = {}
    if (path / "config.yaml").exists():
        try:
            config = yaml.safe_load((path / "config.yaml").read_text()) or {}
        except yaml.YAMLError as e:
            raise DataError(path / "config.yaml", None, f"invalid YAML: {e}") from None
    for model in (recommender, generator):
        if model is not None and model.config.vocab_size < len(tokenizer):
            raise DataError(path, None, f"model vocabulary ({model.config.vocab_size}) is smaller than the tokenizer's ({len(tokenizer)})")
    return Checkpoint(path, recommender, tokenizer, generator, idtable, config)


def generate_item_ids(ckpt: Checkpoint, items: Mapping[str, str], cfg: Mapping[str, Any] | None = None) -> IdTable:
    """IDs for ``items`` (key -> plain text) from the checkpoint's generator (Algorithm 1, ``idgen`` settings).

    Rank 0 generates and broadcasts, so every rank holds the same table.
    """
    import idgen

    if ckpt.generator is None:
        raise DataError(ckpt.path, None, "checkpoint has no generator: cannot name items it was not trained on")
    section = (ckpt.config if cfg is None else cfg).get("idgen")
    table = idgen.generate_from_section(ckpt.generator, ckpt.tokenizer, dict(items), section) if dist.is_main() else None
    return dist.broadcast_object(table)


def id_scheme(ckpt: Checkpoint) -> str:
    """The ID scheme the checkpoint's recommender was trained on (``ids.scheme``): idgenrec, title or p5sid."""
    return (ckpt.config.get("ids") or {}).get("scheme", "idgenrec")


def dataset_ids(ckpt: Checkpoint, dataset: Dataset, cfg: Mapping[str, Any]) -> IdTable:
    """The IdTable over every item of ``dataset`` according to ``eval.ids``: the checkpoint's own table, or new IDs
    named the way the checkpoint's recommender was trained to read them (its generator, or the fixed title rule)."""
    how = eval_settings(cfg)["ids"]
    table = ckpt.idtable
    covered = table is not None and all(k in table.ids for k in dataset.items)
    if how == "idtable" or (how == "auto" and covered):
        if table is None:
            raise DataError(ckpt.path, None, "eval.ids=idtable but the checkpoint has no idtable.tsv")
        missing = [k for k in dataset.items if k not in table.ids]
        if missing:
            raise DataError(ckpt.path / "idtable.tsv", None, f"{len(missing)} items of {dataset.name!r} have no ID, e.g. {missing[:5]}")
        log.info("%s: %d item IDs from the checkpoint's ID table", dataset.name, len(dataset.items))
        return IdTable({k: table.ids[k] for k in dataset.items}, table.version)
    scheme = id_scheme(ckpt)
    if scheme == "title":  # a fixed rule of the item text: it names unseen items as it named the training items
        from idgen.schemes import build_idtable

        log.info("%s: naming %d items by the title scheme the checkpoint was trained with", dataset.name, len(dataset.items))
        return build_idtable(scheme, dataset, ckpt.config.get("ids"))
    if scheme != "idgenrec":
        raise DataError(ckpt.path / "config.yaml", None, f"ids.scheme={scheme!r} IDs are built from a dataset's "
                        f"interactions, so they cannot name the {len(dataset.items)} unseen items of {dataset.name!r}")
    log.info("%s: naming %d items with the checkpoint's generator", dataset.name, len(dataset.items))
    return generate_item_ids(ckpt, {k: it.text for k, it in dataset.items.items()}, cfg)


def eval_samples(dataset: Dataset, split: str, settings: Mapping[str, Any]) -> list:
    """The leave-one-out samples of ``split`` that an evaluation scores: ``eval.valid_users`` / ``eval.test_users``
    subsample valid / test to a fixed random sample of users (seed 0, so every method scores the same users)."""
    samples = leave_one_out(dataset, split, settings["max_history"])
    if not samples:
        raise DataError(dataset.name or "<dataset>", None, f"no user has a {split} sample (every sequence is too short)")
    limit = int(settings.get(f"{split}_users") or 0)
    if 0 < limit < len(samples):
        if split == "test" and dist.is_main():
            log.warning("eval.test_users=%d: testing a random sample of %d of %d users; these numbers are NOT "
                        "comparable to full-test numbers", limit, limit, len(samples))
        chosen = sorted(random.Random(0).sample(range(len(samples)), limit))
        samples = [samples[i] for i in chosen]
    return samples


def popularity_metrics(dataset: Dataset, split: str, cfg: Mapping[str, Any] | None = None,
                       fit_dataset: Dataset | None = None) -> dict[str, float]:
    """HR@k / NDCG@k of the popularity baseline on the very users :func:`evaluate` scores.

    Items are ranked by how often they are a training target of ``fit_dataset`` (default ``dataset`` itself: a
    supervised reference that a zero-shot model does not get), restricted to ``dataset``'s items; ``eval`` settings
    (``ks``, ``max_history``, ``exclude_history``, ``valid_users``, ``test_users``) apply as in :func:`evaluate`.
    """
    from genrec.baselines.popularity import Popularity
    from genrec.metrics import hr_ndcg

    settings = eval_settings(cfg)
    samples = eval_samples(dataset, split, settings)
    fit = leave_one_out(fit_dataset or dataset, "train", settings["max_history"])
    model = Popularity.fit([s for s in fit if s.target in dataset.items], dataset.items)
    ranked = model.recommend(samples, max(settings["ks"]), settings["exclude_history"])
    return {"users": len(samples), **hr_ndcg(ranked, [s.target for s in samples], settings["ks"])}


def evaluate(model, tokenizer, idtable: IdTable, dataset: Dataset, split: str, cfg: Mapping[str, Any] | None = None,
             progress: bool = True, generator=None) -> dict[str, float]:
    """HR@k / NDCG@k of ``model`` on ``split`` of ``dataset``, ranking all items of ``idtable``; every rank returns them.

    Users are sharded over ranks (``genrec.dist``); the result holds ``users``, the number of users counted. With
    ``prompt.user_ids`` on, ``generator`` names every prompt's user from that prompt's history (never its target).
    """
    from genrec.metrics import hr_ndcg

    samples, rankings = rank_samples(model, tokenizer, idtable, dataset, split, cfg, progress, generator)
    return {"users": len(samples), **hr_ndcg(rankings, [s.target for s in samples], eval_settings(cfg)["ks"])}


def rank_samples(model, tokenizer, idtable: IdTable, dataset: Dataset, split: str, cfg: Mapping[str, Any] | None = None,
                 progress: bool = True, generator=None) -> tuple[list[Sample], list[list[str]]]:
    """The samples :func:`evaluate` scores and each one's top ``max(eval.ks)`` item keys, on every rank."""
    from genrec.decoding import rank_prompts
    from genrec.prompts import PromptBuilder
    from genrec.trie import PrefixTrie

    settings = eval_settings(cfg)
    samples = eval_samples(dataset, split, settings)
    missing = sorted({k for s in samples for k in (*s.history, s.target)} - set(idtable.ids))
    if missing:
        raise DataError(dataset.name or "<dataset>", None, f"{len(missing)} items have no ID in the ID table, e.g. {missing[:5]}")
    token_ids = idtable.token_ids(tokenizer)
    trie = PrefixTrie(token_ids, tokenizer.eos_token_id, tokenizer.pad_token_id).to(dist.device())
    users: dict[str, list[int]] = {}
    if userids.enabled(cfg):
        if generator is None:
            raise ValueError("prompt.user_ids is on: evaluation needs the generator to name the users")
        users = userids.prompt_user_tokens(userids.prompt_user_ids(generator, tokenizer, samples, dataset.items, cfg),
                                           tokenizer)
    builder = PromptBuilder.from_config(tokenizer, (cfg or {}).get("prompt"))
    prompts = [builder.build([token_ids[h] for h in s.history], settings["template"],
                             users.get(userids.history_key(s.history))).input_ids for s in samples]

    mine = shard(sorted(range(len(samples)), key=lambda i: len(prompts[i])), dist.rank(), dist.world_size())
    exclude = None
    if settings["exclude_history"]:
        index = {key: i for i, key in enumerate(trie.keys)}
        exclude = [[index[h] for h in samples[i].history] for i in mine]
    model.to(dist.device())
    ranked = rank_prompts(
        model, [prompts[i] for i in mine], trie, batch_size=settings["batch_size"], num_beams=settings["num_beams"],
        k=max(settings["ks"]), length_penalty=settings["length_penalty"], early_stopping=settings["early_stopping"],
        exclude=exclude, progress=progress and dist.is_main(),
        workers=settings["workers"] if dist.device().type == "cpu" else 1, dtype=from_config(cfg, dist.device()),
    )
    stop.check_all()  # a stop signal during decoding: every rank stops here, none waits in the gather
    gathered = [pair for part in dist.all_gather_object(list(zip(mine, ranked))) for pair in part]
    by_index = dict(gathered)
    if len(gathered) != len(samples) or len(by_index) != len(samples):
        raise RuntimeError(f"gathered {len(gathered)} rankings ({len(by_index)} users) for {len(samples)} users")
    return samples, [[key for key, _ in by_index[i]] for i in range(len(samples))]


def shard(order: Sequence[int], rank: int, world: int) -> list[int]:
    """Rank ``rank``'s share of ``order``: every ``world``-th element, so shards differ in size by at most one."""
    return list(order[rank::world])


def format_table(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str]) -> str:
    """A plain-text table, one row per (method, dataset)."""
    head = ["method", "dataset", "users", *metrics]
    body = [[str(r.get("method", "")), str(r.get("dataset", "")), str(r.get("users", "")),
             *(f"{r[m]:.4f}" if isinstance(r.get(m), float) else str(r.get(m, "")) for m in metrics)] for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()

    return "\n".join([line(head), line(["-" * w for w in widths]), *(line(b) for b in body)])


def metric_names(ks: Sequence[int]) -> list[str]:
    return [f"{m}@{k}" for k in ks for m in ("HR", "NDCG")]


def write_results(path: str | Path, rows: Sequence[Mapping[str, Any]], meta: Mapping[str, Any]) -> None:
    """``{"rows": [...], **meta}`` as JSON, written atomically."""
    write_json(path, {**meta, "rows": list(rows)})

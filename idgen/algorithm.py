"""Algorithm 1 (paper 2.3): unique, non-empty textual IDs by diverse beam search with escalating diversity.

Every item starts at try 0. Try ``t`` decodes ``groups`` candidates with diversity penalty
``lambda = 1 + t % lambda_max`` inside the length window ``[max(1, w * window), (w + 1) * window)``, ``w = t //
lambda_max``: lambda rises by one per failed try and, past ``lambda_max``, the window moves on and lambda resets.
A candidate is accepted if it is non-empty after normalisation and not taken; an item whose candidates are all
taken retries. Work proceeds in rounds: each round proposes candidates for every pending item (in batches, on
any number of processes), then :class:`ClaimBook` resolves the claims in sorted item-key order. The table thus
depends only on model, data and config, not on worker count or timing, nor on batch size as long as the model's
kernels give each row the same numbers in any batch (true on CPU; checked by the tests). Unlike the paper's
item-after-item loop, an item's retry comes after every other item's earlier tries: the same escalation, in an
order that can be parallelised.

**Last resort.** Algorithm 1 has no bound of its own: with an untrained generator or items whose texts are identical
(Sports has up to 298 items with the same brand and categories) it never ends. An item still pending after
``max_tries`` = ``lambda_max`` x ``max_windows`` tries, or still pending after ``max_rounds`` rounds (a bound for
weak generators, whose rounds fail for most items and cost a full decoding pass each), is named deterministically
instead, in sorted key order:

1. ``text``: the shortest run of its own text words that no other ID has: the first 1, 2, ... (at most
   ``window``) words of its tag (``idgen.warmstart.tag_target``: informative title words in order, no field names,
   numbers or stop words), normalised as IDs are;
2. ``counter``: otherwise its best candidate (the first non-empty candidate of its last try; else its tag, else
   ``item``) followed by the smallest counter ``2, 3, ...`` that makes it free.

The result depends only on the claims before it, so it is the same on 1 or N workers; the report counts items per
escalation level and per last-resort kind.

Torch is imported only by the functions that decode, so the Ray registry actor (which only needs
:class:`ClaimBook`) starts in a second instead of four.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from .config import IdGenConfig
from .idtable import IdTable

if TYPE_CHECKING:
    from .generator import Generator

_WORD = re.compile(r"\w+")


def normalize(text: str, how: str = "words") -> str:
    """The form an ID is stored and compared in."""
    if how == "words":
        return " ".join(_WORD.findall(text.lower()))
    if how == "strip":
        return " ".join(text.split())
    raise ValueError(f"unknown normalisation {how!r} (words or strip)")


class ClaimBook:
    """The taken IDs and the state of every item; decides claims. Used in-process and by the Ray registry actor.

    Claims are idempotent: claiming for an item that already has an ID returns that ID. ``texts`` (key -> plain
    text) feeds the last resort's text continuation (without it, the counter alone).
    """

    def __init__(self, keys: Iterable[str], cfg: IdGenConfig, texts: Mapping[str, str] | None = None):
        self.cfg = cfg
        self.texts = texts or {}
        self.pending: dict[str, int] = {k: 0 for k in sorted(keys)}  # key -> try number
        self.ids: dict[str, str] = {}
        self.taken: dict[str, str] = {}  # ID -> key
        self.accepted_try: dict[str, int] = {}
        self.first_rejected: set[str] = set()
        self.round = 0
        self.proposals: dict[str, list[str]] = {}
        self.last_resort: dict[str, str] = {}  # key -> "text" | "counter"

    def claim(self, key: str, candidates: list[str]) -> str | None:
        """The first candidate that is non-empty and free becomes ``key``'s ID (its existing ID if it has one)."""
        if key in self.ids:
            return self.ids[key]
        for i, cand in enumerate(candidates):
            tid = normalize(cand, self.cfg.normalize)
            if tid and tid not in self.taken:
                self.ids[key], self.taken[tid] = tid, key
                if i > 0 or self.pending.get(key, 0) > 0:
                    self.first_rejected.add(key)
                return tid
        return None

    def propose(self, round_: int, proposals: dict[str, list[str]]) -> dict[str, list[str]]:
        """Record candidates for pending items of round ``round_``; stale or repeated proposals change nothing.

        Returns the proposals that were new.
        """
        if round_ != self.round:
            return {}
        fresh = {k: list(v) for k, v in proposals.items() if k in self.pending and k not in self.proposals}
        self.proposals.update(fresh)
        return fresh

    def resolve(self, round_: int) -> dict[str, int]:
        """Decide round ``round_``'s claims in sorted key order; returns the items still pending with their try."""
        if round_ < self.round:
            return dict(self.pending)
        for key in [k for k in self.pending if k in self.ids]:  # claimed directly through ``claim``
            self.accepted_try[key] = self.pending.pop(key)
        missing = [k for k in self.pending if k not in self.proposals]
        if missing:
            raise RuntimeError(f"round {round_}: no candidates proposed for {len(missing)} items, e.g. {missing[:5]}")
        for key in sorted(self.pending):
            if self.claim(key, self.proposals[key]) is not None:
                self.accepted_try[key] = self.pending.pop(key)
            else:
                self.pending[key] += 1
        spent = self.cfg.max_rounds is not None and self.round + 1 >= self.cfg.max_rounds
        for key in sorted(k for k, t in self.pending.items() if spent or t >= self.cfg.max_tries):
            self._last_resort(key)
        self.round += 1
        self.proposals = {}
        return dict(self.pending)

    def _last_resort(self, key: str) -> None:
        """Name an item that used up its tries: the shortest free run of its own tag words, else a counter."""
        from .warmstart import tag_target

        norm = self.cfg.normalize
        words = normalize(tag_target(self.texts.get(key, ""), 1, self.cfg.window), norm).split()
        for n in range(1, len(words) + 1):
            tid = " ".join(words[:n])
            if tid not in self.taken:
                return self._assign(key, tid, "text")
        best = next((c for c in (normalize(p, norm) for p in self.proposals.get(key, [])) if c), "")
        base = best or " ".join(words) or "item"
        n = 2
        while f"{base} {n}" in self.taken:
            n += 1
        self._assign(key, f"{base} {n}", "counter")

    def _assign(self, key: str, tid: str, kind: str) -> None:
        self.ids[key], self.taken[tid] = tid, key
        self.first_rejected.add(key)
        self.last_resort[key] = kind
        self.accepted_try[key] = self.pending.pop(key)

    def report(self) -> dict[str, Any]:
        """Collisions resolved, items per escalation level and last-resort kind, and the share of items (%) accepted
        at each lambda of each length window."""
        n = max(1, len(self.ids))
        by_window: dict[str, dict[str, float]] = {}
        levels = {"first_try": 0, "higher_lambda": 0, "longer_window": 0, "last_resort_text": 0, "last_resort_counter": 0}
        for key, t in self.accepted_try.items():
            kind = self.last_resort.get(key)
            level = (f"last_resort_{kind}" if kind else "first_try" if t == 0 else
                     "higher_lambda" if t < self.cfg.lambda_max else "longer_window")
            levels[level] += 1
        for key, t in sorted(self.accepted_try.items(), key=lambda kv: kv[1]):
            if key in self.last_resort:
                continue
            lam = str(self.cfg.schedule(t)[0])
            cell = by_window.setdefault(self.cfg.window_name(t), {})
            cell[lam] = cell.get(lam, 0.0) + 100.0 / n
        return {
            "items": len(self.ids),
            "rounds": self.round,
            "collisions_resolved": len(self.first_rejected),
            "second_try_pct": 100.0 * sum(t > 0 for t in self.accepted_try.values()) / n,
            "longer_window_pct": 100.0 * sum(t >= self.cfg.lambda_max for t in self.accepted_try.values()) / n,
            "items_by_level": levels,
            "accepted_pct_by_window_lambda": {w: {k: round(v, 4) for k, v in d.items()} for w, d in by_window.items()},
        }

    def state(self) -> dict[str, Any]:
        """The claims so far (JSON), at a round boundary: what a stopped run keeps to resume Algorithm 1."""
        return {"round": self.round, "pending": self.pending, "ids": self.ids, "accepted_try": self.accepted_try,
                "first_rejected": sorted(self.first_rejected), "last_resort": self.last_resort}

    def restore(self, state: dict[str, Any]) -> None:
        self.round, self.pending, self.ids = state["round"], state["pending"], state["ids"]
        self.accepted_try, self.last_resort = state["accepted_try"], state["last_resort"]
        self.first_rejected = set(state["first_rejected"])
        self.taken = {tid: key for key, tid in self.ids.items()}
        self.proposals = {}

    def table(self, previous: IdTable | None = None) -> IdTable:
        report = self.report()
        table = IdTable(dict(sorted(self.ids.items())), self.cfg.version, report)
        if previous is not None:
            report["churn"] = table.churn(previous)
        table.check()
        return table


def sentinels(tokenizer) -> list[int]:
    """Special tokens other than pad / eos / unk (e.g. T5's ``<extra_id_N>``), which an ID never contains: a
    generator started from a span-corruption LM would otherwise begin every ID with ``<extra_id_0>``."""
    return sorted(set(tokenizer.all_special_ids) - {tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id})


def propose(gen: Generator, items: dict[str, str], keys: list[str], tries: list[int], cfg: IdGenConfig) -> dict[str, list[str]]:
    """Candidates (``groups`` decoded strings, group order) of one batch of items at their tries.

    Items not yet seen by ``gen`` are encoded first; retries reuse their cached encoder states.
    """
    import torch

    from genrec.precision import autocast, resolve

    from .dbs import diverse_beam_search

    with autocast(resolve(cfg.precision, gen.device), gen.device):
        gen.encode({k: items[k] for k in keys}, cfg.batch_size)
        sched = [cfg.schedule(t) for t in tries]
        seqs = diverse_beam_search(
            gen.model,
            gen.batch(keys),
            torch.tensor([s[0] for s in sched], dtype=torch.float32),
            torch.tensor([s[1] for s in sched]),
            torch.tensor([s[2] for s in sched]),
            cfg.groups,
            banned=sentinels(gen.tokenizer),
        )
    flat = gen.tokenizer.batch_decode([s for item in seqs for s in item], skip_special_tokens=True)
    return {k: flat[i * cfg.groups:(i + 1) * cfg.groups] for i, k in enumerate(keys)}


def chunks(keys: list[str], size: int) -> list[list[str]]:
    return [keys[i:i + size] for i in range(0, len(keys), size)]


CLAIMS_FILE = "claims.json"


def generate_ids(model, tokenizer, items: dict[str, str], cfg: IdGenConfig, previous: IdTable | None = None,
                 progress: bool = True, state_dir: str | Path | None = None) -> IdTable:
    """Algorithm 1 in one process: the IdTable of ``items`` (key -> plain text).

    A stop signal (``genrec.stop``) ends the work within one batch; with ``state_dir`` the claims of the rounds
    resolved so far are written there first and a later call with the same folder continues from them.
    """
    from tqdm.auto import tqdm

    from genrec import stop
    from genrec.dist import is_main
    from genrec.io import atomic_write

    from .generator import Generator

    was_training = model.training
    gen = Generator(model, tokenizer, cfg.max_text_tokens)
    book = ClaimBook(items, cfg, items)
    saved = Path(state_dir) / CLAIMS_FILE if state_dir else None
    if saved is not None and saved.exists():
        book.restore(json.loads(saved.read_text(encoding="utf-8")))
    bar = tqdm(total=0, desc="ID generation", unit="proposal", disable=not (progress and is_main()))
    try:
        while book.pending:
            pending = sorted(book.pending)
            bar.total += len(pending)
            for batch in chunks(pending, cfg.batch_size):
                stop.check()
                book.propose(book.round, propose(gen, items, batch, [book.pending[k] for k in batch], cfg))
                bar.update(len(batch))
            book.resolve(book.round)
            gen.forget([k for k in pending if k not in book.pending])
            bar.set_postfix(round=book.round, pending=len(book.pending))
    except stop.Stop as e:
        if saved is not None:
            saved.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(saved) as f:
                json.dump(book.state(), f)
            e.saved.append(f"ID generation claims of {book.round} rounds ({len(book.ids)} items) in {saved}")
        raise
    finally:
        bar.close()
        model.train(was_training)
    return book.table(previous)

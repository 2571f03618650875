"""Prompt rendering and token-budget batching with dynamic padding, resumable at batch granularity.

Samples are rendered with the current IdTable by :class:`RenderTransform` (a template per example that is a hash of
seed/epoch/sample, so rendering is a pure function of the sample): a streaming source runs it in its DataLoader
workers (rendering costs ~50 us per sample, a tenth of the wall time of a GPU step at 2,000 samples/s), an
in-memory source in the training process. Examples are read in chunks; each chunk is sorted by length and cut into
batches whose padded size stays under a token budget, and the batches are shuffled (seed/epoch/chunk). Padding therefore grows only with the longest prompt of
similar-length neighbours, not of the whole batch. The position ``(chunk, source state at chunk start, batches done)``
is enough to rebuild the same batches after a restart.
"""
from __future__ import annotations

import random
import zlib
from dataclasses import dataclass
from itertools import islice
from typing import Any, Callable, Iterator, Sequence

import torch

from genrec.prompts import PromptBuilder
from genrec.splits import Sample
from idgen.softid import SpanIndex
from idgen.userids import history_key

IGNORE = -100


@dataclass
class Example:
    input_ids: list[int]
    spans: list[tuple[int, int]]
    items: tuple[str, ...]  # the history items behind ``spans`` (those kept after truncation), oldest first
    labels: list[int]  # target ID tokens + EOS


@dataclass(frozen=True)
class CopyRelabel:
    """Copy relabelling (``train.copy_relabel``), a training-time augmentation of the recommender stage.

    A recommender trained on one set of IDs learns which known ID follows which; what transfers to the IDs of an
    unseen domain is an operation on the prompt, "the next ID reuses a word of the history" (the brand, the product
    line), and memorising the source domains' transitions does not teach it (``bench/history_copy.py``). With
    probability ``prob`` each word of a sample's target ID that also occurs in its history's IDs is replaced, in every
    history span and in the target, by a made-up word (one consistent mapping per sample), so it can only be predicted
    by copying it from the prompt. The made-up words are pieces of the vocabulary glued together and spelt again by
    the tokenizer, so they come out in the short fragments an unseen domain's words are cut into (a Beauty brand in a
    Sports + Phones tokenizer: "rosemary" -> "▁", "rose", "m", "ary"), not as the one known piece the source
    domains' own words are. Only words of letters are relabelled (numbers and counters stay); template text,
    user IDs and EOS are never touched; a relabelled prompt may be a few tokens longer. Evaluation and the generator
    stage never relabel."""

    prob: float
    word_start: frozenset[int]  # pieces that begin a word ("▁lip", "▁")
    letters: frozenset[int]  # pieces of letters, with or without the word mark, and the bare mark
    mark: int | None  # the bare word mark "▁" (SentencePiece's start of a word it spells in pieces)
    bank: tuple[tuple[int, ...], ...]  # made-up lowercase words as the tokenizer spells them

    @classmethod
    def from_tokenizer(cls, tokenizer, prob: float, bank_size: int = 20_000, seed: int = 0) -> CopyRelabel:
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"train.copy_relabel must be a probability in [0, 1], got {prob}")
        special = set(tokenizer.all_special_ids)
        word_start, letters, fragments, mark = set(), set(), [], None
        for i, piece in enumerate(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))):
            if i in special or not piece:
                continue
            text = piece[1:] if piece.startswith("▁") else piece
            if piece.startswith("▁"):
                word_start.add(i)
            if piece == "▁":
                mark = i
            if text == "" or text.isalpha():
                letters.add(i)
                if text.islower():
                    fragments.append(text)
        if not fragments:
            raise ValueError("train.copy_relabel: the tokenizer has no pieces of lowercase letters")
        rng = random.Random(seed)
        made_up = sorted({"".join(rng.choice(fragments) for _ in range(rng.randint(1, 3))) for _ in range(bank_size)})
        bank = [tuple(ids) for ids in tokenizer(made_up, add_special_tokens=False)["input_ids"]]
        return cls(prob, frozenset(word_start), frozenset(letters), mark,
                   tuple(w for w in bank if w and w[0] in word_start and all(t in letters for t in w)))

    def words(self, tokens: Sequence[int]) -> list[tuple[int, ...]]:
        """``tokens`` cut into words, each a word-start piece and the pieces that continue it."""
        out: list[list[int]] = []
        for t in tokens:
            if t in self.word_start or not out:
                out.append([])
            out[-1].append(t)
        return [tuple(w) for w in out]

    def relabels(self, word: tuple[int, ...]) -> bool:
        """A word of letters (not a bare word mark)."""
        return all(t in self.letters for t in word) and word != (self.mark,)

    def __call__(self, ex: Example, rng: random.Random) -> Example:
        if rng.random() >= self.prob:
            return ex
        history = [self.words(ex.input_ids[s:e]) for s, e in ex.spans]
        seen = {w for ws in history for w in ws}
        target = self.words(ex.labels[:-1])
        mapping: dict[tuple[int, ...], tuple[int, ...]] = {}
        for w in target:
            if w in seen and w not in mapping and self.relabels(w):
                for _ in range(8):  # a made-up word that is not already in the sample, so the words stay distinct
                    new = rng.choice(self.bank)
                    if new not in seen and new not in mapping.values():
                        mapping[w] = new
                        break
        if not mapping:
            return ex
        input_ids: list[int] = []
        spans: list[tuple[int, int]] = []
        done = 0
        for (s, e), ws in zip(ex.spans, history):
            input_ids += ex.input_ids[done:s]
            start = len(input_ids)
            for w in ws:
                input_ids += mapping.get(w, w)
            spans.append((start, len(input_ids)))
            done = e
        input_ids += ex.input_ids[done:]
        labels = [t for w in target for t in mapping.get(w, w)] + ex.labels[-1:]
        return Example(input_ids, spans, ex.items, labels)


class Renderer:
    """Sample -> Example with one IdTable's token IDs (``IdTable.token_ids``) and optional user ID tokens (by
    ``idgen.userids.history_key`` of the sample's history); ``relabel`` applies to training renders only."""

    def __init__(self, builder: PromptBuilder, id_tokens: dict[str, list[int]], user_tokens: dict[str, list[int]] | None = None,
                 relabel: CopyRelabel | None = None):
        self.builder = builder
        self.id_tokens = id_tokens
        self.user_tokens = user_tokens
        self.relabel = relabel
        self.eos = builder.eos

    @property
    def n_templates(self) -> int:
        return len(self.builder.templates)

    def __call__(self, sample: Sample, template: int = 0) -> Example:
        user = self.user_tokens.get(history_key(sample.history)) if self.user_tokens else None
        prompt = self.builder.build([self.id_tokens[k] for k in sample.history], template, user)
        kept = sample.history[len(sample.history) - len(prompt.item_spans):]
        return Example(prompt.input_ids, prompt.item_spans, kept, [*self.id_tokens[sample.target], self.eos])


@dataclass(frozen=True)
class RenderTransform:
    """Sample -> Example with the template (and, in training, the renderer's copy relabelling) drawn from a hash of
    (seed, epoch, sample): the same in any process."""

    render: Renderer
    seed: int
    epoch: int
    train: bool = True

    def _key(self, sample: Sample) -> str:
        return f"{self.seed}/{self.epoch}/{sample.user}/{len(sample.history)}/{sample.target}"

    def template(self, sample: Sample) -> int:
        if not self.train:
            return 0
        return zlib.crc32(self._key(sample).encode()) % self.render.n_templates

    def __call__(self, sample: Sample) -> Example:
        ex = self.render(sample, self.template(sample))
        if self.train and self.render.relabel is not None:
            ex = self.render.relabel(ex, random.Random(f"relabel/{self._key(sample)}"))
        return ex


@dataclass(frozen=True)
class ItemTextBudget:
    """The generator stage's second budget: the soft-ID pass runs the generator, with gradients, on the text of every
    distinct history item of a batch, padded to the longest (``collate_generator``'s ``text_ids``), and its memory
    grows with ``distinct items * longest text``, which the prompt budget ``max_tokens`` does not bound: with 64
    prompts of up to 20 items and 256-token texts (up to 1,280 x 256 text tokens) a d_model-128 run reached 12-15 GB
    in its generator stages and was killed (``train.generator_max_tokens``)."""

    lengths: dict[str, int]  # each item's text tokens (as truncated for the generator)
    max_tokens: int  # distinct history items * their longest text, per batch

    def longest(self, items: tuple[str, ...]) -> int:
        return max((self.lengths[k] for k in items), default=0)


def token_budget_batches(examples: list[Example], max_tokens: int, max_batch: int, rng: random.Random,
                         text_budget: ItemTextBudget | None = None) -> list[list[Example]]:
    """Length-sorted batches with ``rows * (longest prompt + longest target) <= max_tokens`` (and, with
    ``text_budget``, its cost of the batch's distinct history items within its ``max_tokens``), in shuffled order.
    An example over a budget on its own is a batch of one."""
    order = sorted(examples, key=lambda e: (len(e.input_ids), len(e.labels)))
    batches: list[list[Example]] = []
    cur: list[Example] = []
    items: set[str] = set()  # the batch's distinct history items (with text_budget)
    longest = text_longest = 0
    for ex in order:
        size = len(ex.input_ids) + len(ex.labels)
        over_text = False
        if text_budget is not None:
            ex_longest = text_budget.longest(ex.items)
            distinct = len(items) + len(set(ex.items).difference(items))
            over_text = distinct * max(text_longest, ex_longest) > text_budget.max_tokens
        if cur and (len(cur) >= max_batch or (len(cur) + 1) * max(longest, size) > max_tokens or over_text):
            batches.append(cur)
            cur, longest, text_longest = [], 0, 0
            items.clear()
        cur.append(ex)
        longest = max(longest, size)
        if text_budget is not None:
            items.update(ex.items)
            text_longest = max(text_longest, ex_longest)
    if cur:
        batches.append(cur)
    rng.shuffle(batches)
    return batches


def _pad(rows: list[list[int]], value: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([r + [value] * (width - len(r)) for r in rows], dtype=torch.long)


def collate(batch: list[Example], pad: int = 0) -> dict[str, torch.Tensor]:
    """Recommender-stage tensors: ``input_ids``, ``attention_mask``, ``labels`` (pad = -100)."""
    input_ids = _pad([e.input_ids for e in batch], pad)
    return {"input_ids": input_ids, "attention_mask": (input_ids != pad).long(), "labels": _pad([e.labels for e in batch], IGNORE)}


def collate_generator(
    batch: list[Example], id_tokens: dict[str, list[int]], text_tokens: dict[str, list[int]], pad: int = 0
) -> dict[str, Any]:
    """Recommender tensors plus what the soft-ID splice needs: the batch's distinct history items (their text and
    current ID tokens) and a ``SpanIndex`` of every occurrence."""
    out: dict[str, Any] = collate(batch, pad)
    rows: dict[str, int] = {}
    occ_b, occ_s, occ_l, occ_i = [], [], [], []
    for b, ex in enumerate(batch):
        for key, (s, e) in zip(ex.items, ex.spans):
            occ_b.append(b)
            occ_s.append(s)
            occ_l.append(e - s)
            occ_i.append(rows.setdefault(key, len(rows)))
    keys = list(rows)
    if not keys:
        raise ValueError("generator-stage batch without history items (is prompt.max_length too small?)")
    text_ids = _pad([text_tokens[k] for k in keys], pad)
    id_ids = _pad([id_tokens[k] for k in keys], pad)
    id_len = torch.tensor([len(id_tokens[k]) for k in keys])
    out.update(
        text_ids=text_ids,
        text_mask=(text_ids != pad).long(),
        id_ids=id_ids,
        id_mask=torch.arange(id_ids.shape[1])[None, :] < id_len[:, None],
        spans=SpanIndex(*(torch.tensor(v, dtype=torch.long) for v in (occ_b, occ_s, occ_l, occ_i))),
    )
    return out


class EpochBatches:
    """Iterates one epoch's batches of ``source`` for this rank; ``position`` says where it stands (for resume).

    Records become ``Example``s through ``transform`` when given (e.g. span corruption, ``pretrain.lm``), else
    through a ``RenderTransform`` of ``render``.
    """

    def __init__(
        self,
        source,
        render: Renderer | None,
        epoch: int,
        rank: int,
        world: int,
        seed: int,
        chunk_size: int,
        max_tokens: int,
        max_batch: int,
        resume: dict | None = None,
        train: bool = True,
        transform: Callable[[Any], Example] | None = None,
        text_budget: ItemTextBudget | None = None,
    ):
        self.source, self.render, self.epoch = source, render, epoch
        self.rank, self.world, self.seed = rank, world, seed
        self.chunk_size, self.max_tokens, self.max_batch = chunk_size, max_tokens, max_batch
        self.resume = resume
        self.train = train
        self.transform = transform
        self.text_budget = text_budget
        self.position: dict = dict(resume) if resume else {"chunk": 0, "source": None, "batches": 0}

    def count(self) -> int | None:
        """This rank's batches in the whole epoch, when the source can list its share up front (``share``; an
        in-memory source): the epoch rendered once more, chunk by chunk, keeping nothing (~50 us a sample).
        ``None`` for a streaming source."""
        share = getattr(self.source, "share", None)
        if share is None:
            return None
        transform = RenderTransform(self.render, self.seed, self.epoch, self.train)
        samples = share(self.epoch, self.rank, self.world, self.seed)
        return sum(len(token_budget_batches([transform(s) for s in samples[i:i + self.chunk_size]], self.max_tokens,
                                            self.max_batch, random.Random(0), self.text_budget))
                   for i in range(0, len(samples), self.chunk_size))

    def __iter__(self) -> Iterator[list[Example]]:
        chunk, skip = 0, 0
        if self.resume and self.resume.get("source") is not None:
            self.source.restore(self.resume["source"])
            chunk, skip = self.resume["chunk"], self.resume["batches"]
        transform = self.transform or RenderTransform(self.render, self.seed, self.epoch, self.train)
        stream = self.source.epoch(self.epoch, self.rank, self.world, self.seed, transform=transform)
        while True:
            start_state = self.source.state()
            examples = list(islice(stream, self.chunk_size))
            if not examples:
                return
            rng = random.Random(f"{self.seed}/{self.epoch}/{chunk}/{self.rank}")
            for i, batch in enumerate(token_budget_batches(examples, self.max_tokens, self.max_batch, rng,
                                                                 self.text_budget)):
                if i < skip:
                    continue
                self.position = {"chunk": chunk, "source": start_state, "batches": i + 1}
                yield batch
            chunk, skip = chunk + 1, 0

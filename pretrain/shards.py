"""Training samples as webdataset tar shards, and the streaming ``SampleSource`` that reads them (paper 3.5).

Shards hold only what never changes between ID rounds: (user key, history item keys, target item key, dataset).
Item text lives once in the corpus folder and prompts are rendered by the trainer from the *current* IdTable, so
shards are written once and never rewritten when IDs change. Language pretraining (``pretrain.lm``) writes and
streams shards of item text (``TextRecord``, format ``TEXT_FORMAT``) with the same code.

Layout: ``shard-000000.tar ...`` plus ``manifest.json`` (sample counts, byte sizes and sha256 of every shard). Each
tar member is ``<9-digit index>.json``. Shards are reproducible byte for byte (fixed mtime/owner).

Streaming (``ShardSource.epoch``):

* the shard list is permuted per epoch (seeded), then split by rank (``perm[rank::world]``) and, inside a rank,
  by DataLoader worker (``rank_shards[w::workers]``); each worker reads, checks (sha256 + count) and decodes its
  shards and passes them through a seeded webdataset shuffle buffer, then applies the caller's ``transform``
  (e.g. prompt rendering + tokenisation), all in the worker process;
* the DataLoader interleaves workers round-robin (exhausted workers skipped), so the rank's stream is a pure
  function of (manifest, epoch, rank, world, workers, seed);
* every rank yields exactly ``max`` over ranks of the rank's sample count (known from the manifest, so no
  communication is needed): shorter ranks are padded by repeating their first samples, like PyTorch's
  ``DistributedSampler``; with balanced shards every sample is seen exactly once per epoch;
* ``state()`` is ``{epoch, consumed, ...}``; ``restore()`` makes the next ``epoch()`` call of that epoch skip the
  consumed samples (each worker skips its own share before the transform, derived from the round-robin order);
* a corrupted or truncated shard raises ``DataError`` naming the shard, or with ``skip_corrupt=True`` is skipped
  with a warning (the rank still yields its planned number of samples). Errors travel from workers as values, and
  the DataLoader has a timeout, so a bad shard never hangs the run.
"""
from __future__ import annotations

import hashlib
import io
import itertools
import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from genrec.dataset import Dataset, Item
from genrec.io import DataError, atomic_write, write_json
from genrec.splits import Sample

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = "idgenrec-samples/1"
TEXT_FORMAT = "idgenrec-text/1"  # shards of TextRecord (item text for language pretraining)
SHARD_PATTERN = "shard-%06d.tar"
MEMBER_SUFFIX = "json"


@dataclass(frozen=True)
class TextRecord:
    """One item's plain text (language pretraining, ``pretrain.lm``): shards of these hold text, not samples."""

    key: str
    text: str
    dataset: str


FORMATS = (FORMAT, TEXT_FORMAT)


def _encode(record: Sample | TextRecord) -> bytes:
    if isinstance(record, TextRecord):
        rec = {"key": record.key, "text": record.text, "dataset": record.dataset}
    else:
        rec = {"user": record.user, "history": list(record.history), "target": record.target, "dataset": record.dataset}
    return json.dumps(rec, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _decode(data: bytes) -> Sample | TextRecord:
    rec = json.loads(data.decode("utf-8"))
    if "text" in rec:
        return TextRecord(str(rec["key"]), str(rec["text"]), str(rec["dataset"]))
    return Sample(str(rec["user"]), tuple(str(k) for k in rec["history"]), str(rec["target"]), str(rec["dataset"]))


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_shards(
    samples: Sequence[Sample] | Sequence[TextRecord],
    out: str | Path,
    samples_per_shard: int = 2000,
    shard_multiple: int = 8,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``samples`` (in the given order) to balanced shards in ``out`` and return the manifest.

    ``samples`` may also be ``TextRecord``s (the manifest then says ``TEXT_FORMAT``). The number of shards is ``ceil(len / samples_per_shard)`` rounded up to a multiple of ``shard_multiple`` (when
    there are enough samples), and shard sizes differ by at most one, so splitting shards over ranks x workers
    stays balanced. Each shard is written atomically; ``manifest.json`` is written last, so a folder without a
    manifest is an interrupted write.
    """
    if samples_per_shard < 1 or shard_multiple < 1:
        raise ValueError("samples_per_shard and shard_multiple must be >= 1")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    n = len(samples)
    n_shards = max(1, -(-n // samples_per_shard))
    if n >= shard_multiple:
        n_shards = -(-n_shards // shard_multiple) * shard_multiple
    bounds = [n * i // n_shards for i in range(n_shards + 1)]
    shards: list[dict[str, Any]] = []
    per_dataset: dict[str, int] = {}
    for s, (lo, hi) in enumerate(zip(bounds, bounds[1:])):
        buf = io.BytesIO()
        with wds.TarWriter(buf, encoder=False, mtime=0, user="idgenrec", group="idgenrec") as tw:
            for i in range(lo, hi):
                tw.write({"__key__": f"{i:09d}", MEMBER_SUFFIX: _encode(samples[i])})
                per_dataset[samples[i].dataset] = per_dataset.get(samples[i].dataset, 0) + 1
        data = buf.getvalue()
        name = SHARD_PATTERN % s
        with atomic_write(out / name, "wb") as f:
            f.write(data)
        shards.append({"name": name, "samples": hi - lo, "bytes": len(data), "sha256": _sha256(data)})
    manifest = {
        "format": TEXT_FORMAT if n and isinstance(samples[0], TextRecord) else FORMAT,
        "samples": n,
        "datasets": dict(sorted(per_dataset.items())),
        "shards": shards,
        **(meta or {}),
    }
    write_json(out / MANIFEST, manifest)
    return manifest


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """Load and check ``manifest.json`` of a shard folder (every listed shard must exist)."""
    path = Path(folder) / MANIFEST
    if not path.exists():
        raise DataError(path, None, "no shard manifest (not a shard folder, or an interrupted write)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(path, e.lineno, f"malformed JSON ({e.msg})") from None
    if manifest.get("format") not in FORMATS:
        raise DataError(path, None, f"unknown format {manifest.get('format')!r} (expected one of {FORMATS})")
    shards = manifest.get("shards") or []
    if not shards:
        raise DataError(path, None, "manifest lists no shards")
    for sh in shards:
        if not (Path(folder) / sh["name"]).exists():
            raise DataError(Path(folder) / sh["name"], None, "shard listed in the manifest is missing")
    if sum(sh["samples"] for sh in shards) != manifest["samples"]:
        raise DataError(path, None, "shard sample counts do not add up to the manifest total")
    return manifest


def read_shard(path: str | Path, expected: dict[str, Any] | None = None) -> list[tuple[str, Sample]]:
    """All (key, sample) pairs of one shard, checked against its manifest entry; any problem names the shard."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(path, None, f"cannot read shard ({e.strerror})") from None
    if expected is not None:
        if len(data) != expected["bytes"]:
            raise DataError(path, None, f"truncated or corrupted shard: {len(data)} bytes, manifest says {expected['bytes']}")
        if _sha256(data) != expected["sha256"]:
            raise DataError(path, None, "corrupted shard: sha256 differs from the manifest")
    out: list[tuple[str, Sample]] = []
    try:
        files = wds.tariterators.tar_file_expander([{"url": str(path), "stream": io.BytesIO(data)}])
        for rec in wds.tariterators.group_by_keys(files):
            if MEMBER_SUFFIX not in rec:
                raise ValueError(f"sample {rec['__key__']!r} has no .{MEMBER_SUFFIX} member")
            out.append((rec["__key__"], _decode(rec[MEMBER_SUFFIX])))
    except Exception as e:  # tarfile, JSON and key errors all mean the same thing here: this shard is unusable
        raise DataError(path, None, f"corrupted shard ({type(e).__name__}: {e.args[0] if e.args else e})") from None
    if expected is not None and len(out) != expected["samples"]:
        raise DataError(path, None, f"shard holds {len(out)} samples, manifest says {expected['samples']}")
    return out


@dataclass(frozen=True)
class _Failure:
    """A shard error raised inside a worker, carried to the main process as a value (keeps the exception type)."""

    path: str
    problem: str


@dataclass(frozen=True)
class EpochPlan:
    """Which shards each worker of one rank reads in one epoch, and how many samples the rank yields."""

    workers: list[list[dict[str, Any]]]  # manifest entries per worker
    rank_samples: int  # samples in this rank's shards
    length: int  # samples every rank yields (max over ranks)

    @property
    def worker_samples(self) -> list[int]:
        return [sum(sh["samples"] for sh in shards) for shards in self.workers]


def plan_epoch(shards: Sequence[dict[str, Any]], epoch: int, rank: int, world: int, workers: int, seed: int,
               folder: str | Path = "<shards>") -> EpochPlan:
    """Shard-level split of one epoch: a seeded permutation, then ``[rank::world]``, then ``[worker::workers]``."""
    if world > len(shards):
        raise DataError(folder, None, f"{len(shards)} shards cannot feed {world} ranks; write more shards")
    order = list(range(len(shards)))
    random.Random(f"idgenrec-shards:{seed}:{epoch}").shuffle(order)
    totals = [sum(shards[i]["samples"] for i in order[r::world]) for r in range(world)]
    mine = [shards[i] for i in order[rank::world]]
    n_workers = max(1, workers)
    return EpochPlan([mine[w::n_workers] for w in range(n_workers)], totals[rank], max(totals))


def round_robin_skips(worker_samples: Sequence[int], consumed: int) -> list[int]:
    """How many of the first ``consumed`` interleaved samples came from each worker (round-robin, exhausted skipped)."""
    skips = [0] * len(worker_samples)
    remaining = consumed
    active = [w for w, n in enumerate(worker_samples) if n > 0]
    while remaining > 0 and active:
        room = min(worker_samples[w] - skips[w] for w in active)
        full_rounds = min(room, remaining // len(active))
        if full_rounds:
            for w in active:
                skips[w] += full_rounds
            remaining -= full_rounds * len(active)
        else:
            for w in active[:remaining]:
                skips[w] += 1
            remaining = 0
        active = [w for w in active if skips[w] < worker_samples[w]]
    return skips


def next_worker(worker_samples: Sequence[int], skips: Sequence[int]) -> int:
    """The worker whose sample comes next in the round-robin order after ``skips`` (0 when all are exhausted).

    Restarting the interleave at this worker (streams rotated to start with it) continues the original order.
    """
    active = [w for w, n in enumerate(worker_samples) if skips[w] < n]
    if not active:
        return 0
    current_round = min(skips[w] for w in active)
    return next(w for w in active if skips[w] == current_round)


def _interleave(streams: list[Iterator[Any]]) -> Iterator[Any]:
    """Round-robin over streams, dropping exhausted ones: the order a DataLoader gives with ``batch_size=None``."""
    active = list(streams)
    while active:
        still = []
        for s in active:
            try:
                yield next(s)
            except StopIteration:
                continue
            still.append(s)
        active = still


class _WorkerStream:
    """The pure per-worker pipeline: read + check shards -> shuffle buffer -> skip -> transform."""

    def __init__(self, folder: Path, shards: list[dict[str, Any]], rng_seed: str, shuffle_buffer: int,
                 skip: int, transform: Callable[[Sample], Any] | None, skip_corrupt: bool):
        self.folder, self.shards, self.rng_seed = folder, shards, rng_seed
        self.by_name = {sh["name"]: sh for sh in shards}
        self.shuffle_buffer, self.skip, self.transform, self.skip_corrupt = shuffle_buffer, skip, transform, skip_corrupt

    def _read(self, urls: Iterable[dict[str, Any]]) -> Iterator[Any]:
        for src in urls:
            entry = self.by_name[Path(src["url"]).name]
            try:
                pairs = read_shard(src["url"], entry)
            except DataError as e:
                if not self.skip_corrupt:
                    yield _Failure(e.path, e.problem)
                    return
                log.warning("skipping shard %s: %s", e.path, e.problem)
                continue
            for key, sample in pairs:
                yield (entry["name"], key, sample)

    def _finish(self, records: Iterator[Any]) -> Iterator[Any]:
        for rec in itertools.islice(records, self.skip, None):
            if isinstance(rec, _Failure) or self.transform is None:
                yield rec
            else:
                shard, key, sample = rec
                yield (shard, key, self.transform(sample))

    def __iter__(self) -> Iterator[Any]:
        if not self.shards:
            return iter(())
        pipeline = wds.DataPipeline(
            wds.SimpleShardList([str(self.folder / sh["name"]) for sh in self.shards]),
            self._read,
            wds.shuffle(self.shuffle_buffer, self.shuffle_buffer, rng=random.Random(self.rng_seed))
            if self.shuffle_buffer > 1 else None,
            self._finish,
        )
        return iter(pipeline)


class _RankDataset(IterableDataset):
    """What the DataLoader runs: worker ``i`` iterates its own ``_WorkerStream``."""

    def __init__(self, streams: list[_WorkerStream]):
        self.streams = streams

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        return iter(self.streams[info.id if info is not None else 0])


def _identity(x: Any) -> Any:
    return x


class ShardSource:
    """A streaming ``SampleSource`` over a shard folder (see the module docstring for the guarantees).

    ``transform`` (given to ``epoch``) runs in the DataLoader workers; with the ``spawn``/``forkserver`` start
    methods it must be picklable. ``state()`` counts samples handed out by the current ``epoch()`` iterator, so a
    trainer should call it after the step that used them.
    """

    def __init__(self, folder: str | Path, items: dict[str, Item], num_workers: int = 2, shuffle_buffer: int = 1000,
                 skip_corrupt: bool = False, timeout: float = 600.0, dataset: Dataset | None = None):
        self.folder = Path(folder)
        self.manifest = read_manifest(self.folder)
        self.items = items
        self.dataset = dataset  # the corpus's merged dataset when known (fixed ID schemes and validation use it)
        self.num_workers, self.shuffle_buffer = num_workers, shuffle_buffer
        self.skip_corrupt, self.timeout = skip_corrupt, timeout
        self._state: dict[str, Any] = {"epoch": 0, "consumed": 0}
        self._pending: dict[str, Any] | None = None

    @classmethod
    def from_corpus(cls, corpus: str | Path, **kw: Any) -> "ShardSource":
        """The source of a Fusion corpus folder (``pretrain.corpus.build_corpus``): items from its dataset files."""
        corpus = Path(corpus)
        dataset = Dataset.load(corpus, "fusion")
        return cls(corpus / "shards", dataset.items, dataset=dataset, **kw)

    def __len__(self) -> int:
        return int(self.manifest["samples"])

    def epoch_length(self, epoch: int, world: int = 1, seed: int = 0) -> int:
        """Samples every rank yields in ``epoch`` (the same on all ranks)."""
        return plan_epoch(self.manifest["shards"], epoch, 0, world, self.num_workers, seed).length

    def state(self) -> dict[str, Any]:
        return dict(self._state)

    def restore(self, state: dict[str, Any]) -> None:
        self._pending = dict(state)
        self._state = dict(state)

    def epoch(self, epoch: int, rank: int = 0, world: int = 1, seed: int = 0,
              transform: Callable[[Sample], Any] | None = None) -> Iterator[Any]:
        """This rank's samples of ``epoch`` (``transform(sample)`` when given, computed in the workers)."""
        plan = plan_epoch(self.manifest["shards"], epoch, rank, world, self.num_workers, seed, self.folder)
        start = 0
        if self._pending is not None:
            pending, self._pending = self._pending, None
            if int(pending.get("epoch", -1)) == epoch:
                start = min(int(pending.get("consumed", 0)), plan.length)
                layout = (world, max(1, self.num_workers), seed)
                if (pending.get("world"), pending.get("workers"), pending.get("seed")) != layout:
                    log.warning("resuming epoch %d with another (world, workers, seed) than %s: the sample order "
                                "changes, so the rest of this epoch is approximate", epoch, layout)
        # set eagerly: a caller may ask state() before taking the first sample (that is the start position)
        self._state = {"epoch": epoch, "consumed": start, "world": world, "workers": max(1, self.num_workers),
                       "seed": seed, "shard": None, "key": None}
        return self._iterate(plan, epoch, rank, seed, start, transform, self._state)

    def _streams(self, plan: EpochPlan, epoch: int, rank: int, seed: int, skips: Sequence[int],
                 transform: Callable[[Sample], Any] | None) -> list[_WorkerStream]:
        return [
            _WorkerStream(self.folder, shards, f"idgenrec-samples:{seed}:{epoch}:{rank}:{w}", self.shuffle_buffer,
                          skips[w], transform, self.skip_corrupt)
            for w, shards in enumerate(plan.workers)
        ]

    def _records(self, streams: list[_WorkerStream]) -> Iterator[Any]:
        if self.num_workers <= 0:
            return _interleave([iter(s) for s in streams])
        return iter(DataLoader(_RankDataset(streams), batch_size=None, num_workers=self.num_workers,
                               timeout=self.timeout, collate_fn=_identity))

    def _head(self, plan: EpochPlan, epoch: int, rank: int, seed: int, n: int,
              transform: Callable[[Sample], Any] | None) -> list[Any]:
        """The rank's first ``n`` records of the epoch, read in this process (used to pad after a resume)."""
        streams = self._streams(plan, epoch, rank, seed, [0] * len(plan.workers), transform)
        return [r for r in itertools.islice(_interleave([iter(s) for s in streams]), n) if not isinstance(r, _Failure)]

    def _iterate(self, plan: EpochPlan, epoch: int, rank: int, seed: int, start: int,
                 transform: Callable[[Sample], Any] | None, state: dict[str, Any]) -> Iterator[Any]:
        head_size = max(plan.length - plan.rank_samples, 1)
        head: list[Any] = []  # the rank's first records, repeated to pad the epoch to plan.length
        origin = plan.rank_samples  # position where padding starts
        if start < plan.rank_samples:
            skips = round_robin_skips(plan.worker_samples, start)
            streams = self._streams(plan, epoch, rank, seed, skips, transform)
            first = next_worker(plan.worker_samples, skips)
            for rec in self._records(streams[first:] + streams[:first]):
                if isinstance(rec, _Failure):
                    raise DataError(rec.path, None, rec.problem)
                if start == 0 and len(head) < head_size:
                    head.append(rec)
                state.update(consumed=state["consumed"] + 1, shard=rec[0], key=rec[1])
                yield rec[2]
            origin = state["consumed"]
        if state["consumed"] >= plan.length:
            return
        if not head:
            head = self._head(plan, epoch, rank, seed, head_size, transform)
        if not head:
            raise DataError(self.folder, None, f"rank {rank} has no readable samples in epoch {epoch}")
        while state["consumed"] < plan.length:
            shard, key, value = head[(state["consumed"] - origin) % len(head)]
            state.update(consumed=state["consumed"] + 1, shard=shard, key=key)
            yield value

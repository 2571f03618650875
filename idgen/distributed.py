"""Algorithm 1 sharded over Ray: N proposer actors (one generator replica each) and one registry actor.

Items are sharded by batch: the sorted keys are cut into batches of ``batch_size`` and batch ``i`` belongs to
worker ``i % N`` for the whole run, so every retry of an item runs where its encoder states are cached. In each
round the driver sends every worker its pending items, batch by batch; workers decode candidates and send them
straight to the registry. The registry (a :class:`~idgen.algorithm.ClaimBook`) owns the taken IDs and, once the
round is complete, resolves it in sorted key order, so the table equals the one-process table. Every state change
is appended to a log (JSON lines, fsynced) before it is acknowledged and replayed when Ray restarts the actor
(``max_restarts``; the registry reads its item keys from a file in the state folder, so a restart needs nothing
from the object store); its calls are retried (``max_task_retries``) and idempotent. A worker that dies is not
restarted by Ray (its model replica lives in the object store, which a restart cannot rely on): the pool starts a
replacement from the replica the driver holds and sends it the dead worker's calls again, so a killed registry or
worker loses and duplicates nothing. :class:`RayIdGenerator` keeps the actors (and their model replicas) for
several runs.
"""
from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

import ray
from tqdm.auto import tqdm

from genrec import quiet, stop
from genrec.io import atomic_write

from .algorithm import ClaimBook, chunks, propose
from .config import IdGenConfig
from .idtable import IdTable

LOG_FILE = "registry.jsonl"
KEYS_FILE = "texts.json"
RETRY = {"max_restarts": -1, "max_task_retries": -1}  # the registry comes back, calls are retried (claims are idempotent)

log = logging.getLogger(__name__)


@ray.remote(num_cpus=0)
class Registry:
    """The set of taken IDs and every item's state; decides claims. State is rebuilt from its log on restart."""

    def __init__(self, texts_path: str, cfg: dict[str, Any], log_path: str):
        texts = json.loads(Path(texts_path).read_text(encoding="utf-8"))  # key -> text (the last resort reads it)
        self.book = ClaimBook(texts, IdGenConfig.from_dict(cfg), texts)
        self.log_path = Path(log_path)
        if self.log_path.exists():
            with open(self.log_path, encoding="utf-8") as f:
                for line in f:
                    if line.endswith("\n"):  # a torn last line was never acknowledged
                        self._apply(json.loads(line))
        self.log = open(self.log_path, "a", encoding="utf-8")

    def _apply(self, rec: dict[str, Any]) -> Any:
        if rec["op"] == "propose":
            return self.book.propose(rec["round"], rec["proposals"])
        if rec["op"] == "resolve":
            return self.book.resolve(rec["round"])
        if rec["op"] == "claim":
            return self.book.claim(rec["key"], rec["candidates"])
        raise ValueError(f"{self.log_path}: unknown log record {rec!r}")

    def _append(self, rec: dict[str, Any]) -> None:
        self.log.write(json.dumps(rec, ensure_ascii=False) + "\n")
        self.log.flush()
        os.fsync(self.log.fileno())

    def propose(self, round_: int, proposals: dict[str, list[str]]) -> int:
        fresh = self.book.propose(round_, proposals)
        if fresh:
            self._append({"op": "propose", "round": round_, "proposals": fresh})
        return len(fresh)

    def resolve(self, round_: int) -> dict[str, int]:
        if round_ < self.book.round:
            return dict(self.book.pending)
        pending = self.book.resolve(round_)
        self._append({"op": "resolve", "round": round_})
        return pending

    def claim(self, key: str, candidates: list[str]) -> str | None:
        """Idempotent: an item that has an ID gets it back, whatever the candidates."""
        had = key in self.book.ids
        tid = self.book.claim(key, candidates)
        if tid is not None and not had:
            self._append({"op": "claim", "key": key, "candidates": candidates})
        return tid

    def state(self) -> tuple[int, dict[str, int]]:
        """(current round, pending items with their try)."""
        return self.book.round, dict(self.book.pending)

    def table(self, previous: IdTable | None = None) -> IdTable:
        return self.book.table(previous)


@ray.remote
class Proposer:
    """One generator replica: decodes candidates for the batches it is sent and hands them to the run's registry.

    Everything a call needs (texts, settings, registry) comes with the call, so a replacement started by the pool
    carries on; the encoder states of items still retrying are cached between calls.
    """

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer
        self.gen = None

    def ready(self) -> bool:
        return True

    def propose(self, round_: int, texts: dict[str, str], tries: list[int], cfg: dict[str, Any], registry) -> int:
        from .generator import Generator

        settings = IdGenConfig.from_dict(cfg)
        if self.gen is None or self.gen.max_text_tokens != settings.max_text_tokens:
            self.gen = Generator(self.model, self.tokenizer, settings.max_text_tokens)
        props = propose(self.gen, texts, list(texts), tries, settings)
        return ray.get(registry.propose.remote(round_, props))

    def forget(self, keys: list[str] | None) -> None:
        """Drop the encoder states of items that got their ID (``None``: all, before a new run)."""
        if self.gen is not None:
            self.gen.forget(keys)


def _init_ray(workers: int, ray_address: str | None) -> bool:
    """Join ``ray_address`` or start a local Ray with one logical CPU per worker; True if we started it.

    A local Ray runs its workers at normal priority: Ray's default (niceness 15) starved the proposers, which are
    the ID generation itself, whenever anything else ran on the machine (4 minutes to start one actor beside two
    training runs on 2 cores). A cluster joined by address keeps its own setting (slurm/idgen.sbatch sets 0)."""
    if ray.is_initialized():
        return False
    level = quiet.ray_logging_level()
    if ray_address:
        ray.init(address=ray_address, logging_level=level)
    else:
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, logging_level=level,
                 _system_config={"worker_niceness": 0})
    return True


class RayIdGenerator:
    """``workers`` proposer actors, one generator replica each, reused by every :meth:`generate` run (a context
    manager: the actors, and a Ray instance started here, end with it)."""

    def __init__(self, model, tokenizer, workers: int = 2, ray_address: str | None = None):
        self.started = _init_ray(workers, ray_address)
        stop.install()  # Ray's core worker installs its own SIGTERM handler (abort); stop signals stay ours
        self.workers = workers
        gpus = ray.cluster_resources().get("GPU", 0)
        self.num_gpus = min(1.0, gpus / workers) if gpus else 0
        # a fresh module with the weights only: a training engine's module carries hooks that hold its process
        # group, which cannot be pickled
        replica = type(model)(copy.deepcopy(model.config))
        replica.load_state_dict({k: v.detach().cpu() for k, v in model.state_dict().items()})
        replica.eval()
        self.model_ref, self.tok_ref = ray.put(replica), ray.put(tokenizer)  # held here for replacements
        self.actors = [self._start() for _ in range(workers)]
        ray.get([a.ready.remote() for a in self.actors])

    def _start(self):
        """A proposer Ray does not restart (``max_restarts=0``): :meth:`_replace` starts a new one instead."""
        return Proposer.options(num_cpus=1, num_gpus=self.num_gpus, max_restarts=0).remote(self.model_ref, self.tok_ref)

    def _replace(self, worker: int, dead) -> None:
        """Start a new proposer for ``worker`` if ``dead`` is still its actor (several calls may report one death)."""
        if self.actors[worker] is dead:
            log.warning("ID generation: Ray worker %d died; starting a replacement", worker)
            self.actors[worker] = self._start()

    def _forget_all(self) -> None:
        for w, actor in enumerate(self.actors):
            try:
                ray.get(actor.forget.remote(None))
            except ray.exceptions.RayActorError:
                self._replace(w, actor)

    def __enter__(self) -> "RayIdGenerator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for actor in self.actors:
            ray.kill(actor)
        self.actors = []
        if self.started:
            ray.shutdown()

    def generate(self, items: dict[str, str], cfg: IdGenConfig, previous: IdTable | None = None,
                 state_dir: str | None = None, progress: bool = True) -> IdTable:
        """Algorithm 1 over the actors; the same IdTable as :func:`idgen.algorithm.generate_ids`.

        ``state_dir`` keeps the registry log (a rerun with the same folder resumes); by default a temporary folder.
        """
        own_dir = state_dir is None
        state = Path(state_dir or tempfile.mkdtemp(prefix="idgen-registry-"))
        state.mkdir(parents=True, exist_ok=True)
        keys = sorted(items)
        owner = {k: i % self.workers for i, batch in enumerate(chunks(keys, cfg.batch_size)) for k in batch}
        settings = cfg.to_dict()
        with atomic_write(state / KEYS_FILE) as f:
            json.dump({k: items[k] for k in keys}, f)
        registry = Registry.options(name=f"idgen-registry-{uuid.uuid4().hex[:8]}", **RETRY).remote(
            str(state / KEYS_FILE), settings, str(state / LOG_FILE))
        self._forget_all()
        bar = tqdm(total=0, desc=f"ID generation ({self.workers} Ray workers)", unit="proposal", disable=not progress)
        try:
            round_, pending = ray.get(registry.state.remote())
            while pending:
                calls: dict[Any, tuple[int, Any, list[str]]] = {}  # call -> (worker, its actor, batch)

                def send(w: int, batch: list[str]) -> None:
                    texts = {k: items[k] for k in batch}
                    actor = self.actors[w]
                    ref = actor.propose.remote(round_, texts, [pending[k] for k in batch], settings, registry)
                    calls[ref] = (w, actor, batch)

                for w in range(self.workers):
                    for batch in chunks([k for k in sorted(pending) if owner[k] == w], cfg.batch_size):
                        send(w, batch)
                bar.total += len(pending)
                bar.refresh()
                while calls:
                    stop.check()
                    done, _ = ray.wait(list(calls), num_returns=1, timeout=0.5)
                    if not done:
                        continue
                    w, actor, batch = calls.pop(done[0])
                    try:
                        ray.get(done[0])
                    except ray.exceptions.RayActorError:  # proposals are idempotent: send the batch again
                        self._replace(w, actor)
                        send(w, batch)
                        continue
                    bar.update(len(batch))
                resolved = ray.get(registry.resolve.remote(round_))
                for w, actor in enumerate(self.actors):
                    actor.forget.remote([k for k in pending if k not in resolved and owner[k] == w])
                pending = resolved
                round_ += 1
                bar.set_postfix(round=round_, pending=len(pending))
            return ray.get(registry.table.remote(previous))
        except stop.Stop as e:
            if not own_dir:
                e.saved.append(f"ID generation claims (registry log) in {state / LOG_FILE}")
            raise
        finally:
            bar.close()
            ray.kill(registry)
            if own_dir:
                shutil.rmtree(state, ignore_errors=True)


def generate_ids_ray(model, tokenizer, items: dict[str, str], cfg: IdGenConfig, workers: int = 2,
                     ray_address: str | None = None, previous: IdTable | None = None, state_dir: str | None = None,
                     progress: bool = True) -> IdTable:
    """One :meth:`RayIdGenerator.generate` run on a fresh set of ``workers`` actors."""
    with RayIdGenerator(model, tokenizer, workers, ray_address) as pool:
        return pool.generate(items, cfg, previous=previous, state_dir=state_dir, progress=progress)

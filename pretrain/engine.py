"""The one trainer: alternating recommender / ID-generator training (paper 2.5) on two DeepSpeed engines.

``Trainer(cfg, source, out_dir, ...).fit()`` runs unchanged as one CPU process, as N local processes (``torchrun``
or the ``deepspeed`` launcher; gloo with ``DS_ACCELERATOR=cpu`` on CPU) and multi-node with NCCL.

Schedule: ``train.rounds`` rounds of the stages in ``train.order`` (default ``[generator, recommender]``):

* **generator stage** (``train.id_epochs`` epochs): the recommender is frozen and in eval mode; prompt embeddings of
  every history item are replaced by soft ID embeddings (``idgen.softid``) and the recommendation loss trains the
  generator only. After the stage the IdTable is regenerated with ``idgen.generate`` (Ray when configured) and
  the ID churn is logged. ``train.skip_first_generator`` skips round 0's generator stage; ``ids.regenerate:
  false`` skips all of them; so does ``ids.scheme: p5sid | title`` (a fixed baseline IdTable built once by
  ``idgen.schemes`` instead of the generator's IDs).
* **recommender stage** (``train.rec_epochs`` epochs): teacher forcing, cross-entropy on the target's ID tokens +
  EOS, padding ignored (-100).
* **lm stage** (``train.lm_epochs`` epochs; ``train.order: [lm]``, ``pretrain.lm``): the recommender engine learns
  T5's span corruption on item text from a ``TextSource``; no IDs, no generator engine; validation is the held-out
  LM loss and the export is the LM folder ``RUN/model`` (model + tokenizer).

``train.stage_seconds`` (seconds, or ``{recommender: s, generator: s}``) ends a stage's epochs once that much
training time is spent, so methods can be compared at equal wall-clock budgets (``bench/quality.py``).
``train.budget_minutes`` caps the whole run, counted from ``started_at`` (the CLI's start: tokenizer, warm-start,
ID generation, training and validation all count; the final test pass does not). When a stage starts, its training
time is ``left x e / E``: ``left`` is the budget still unspent minus the after-stage work of the stages still to run
(validation and export after every stage, ID regeneration after a generator stage; each estimated by the longest
one recorded so far, the initial ID generation included), ``e`` the stage's epochs and ``E`` the epochs of all
stages still to run; with ``train.stage_seconds`` too, the smaller cap applies. A stage
left with no time trains no step and is not validated again. A resumed run counts its budget from its own start.

Each stage warms up and decays its learning rate over its planned steps or its time cap (``pretrain.optim``:
``optim.<model>.schedule``, ``warmup_steps``, ``min_lr_ratio``); norms, biases and embeddings get no weight decay.
``train.precision`` (``genrec.precision``) runs the forward passes of training and validation under bf16 autocast
or in fp32; weights and optimizer state are float32 either way. ID generation decodes in ``idgen.precision`` (fp32
unless set), so that a generator stage that barely moves the weights barely moves the IDs.

After each stage the recommender is validated (``zeroshot.harness.evaluate``, template 0), and also every
``train.valid_every_seconds`` of training time when set; each validation is a point of the learning curve
(``summary["points"]``: training seconds, samples, mean loss since the previous point, metrics). The best model on
``train.select_metric`` (default NDCG@10) is exported to ``RUN/export``; the test split is evaluated once, at the end,
on that export (and once per ``eval.test_length_penalties`` entry when set; never with ``train.final_test: false``).

Data comes from a ``SampleSource`` (``pretrain/sources.py``)::

    class SampleSource(Protocol):
        items: dict[str, Item]          # every item the source may mention (ID generation needs their text)
        def epoch(self, epoch: int, rank: int, world: int, seed: int) -> Iterator[Sample]: ...
        def state(self) -> dict: ...    # position inside the current epoch (JSON-serialisable)
        def restore(self, state: dict) -> None: ...  # the next epoch() call continues from that position

``epoch`` must be deterministic in its arguments and yield this rank's share. Ranks may run out at different
times: an epoch ends for all ranks as soon as one rank has no batch left (one all-reduce per step). Samples carry
item keys only; prompts are rendered at load time with the *current* IdTable (``pretrain.batching``).

Checkpoints (``pretrain.checkpoint``) are written every ``train.checkpoint_every`` optimizer steps, at stage ends,
and when a stop signal arrives (``genrec.stop``; the flag is OR-reduced across ranks so all ranks stop at the same
step): during training at the next step, during ID regeneration (with the claims so far, ``RUN/idgen/``) and
validation at the stage end, then :class:`genrec.stop.Stop` propagates to the CLI. Each phase's wall time is
recorded in ``summary.json`` (``phase_seconds``). ``resume=True`` continues from ``RUN/checkpoints/latest`` when present — exactly: same
batches, same dropout masks, same optimizer state.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from tqdm import tqdm

from genrec import dist, stop
from genrec.config import merge
from genrec.dataset import Dataset
from genrec.io import atomic_write, write_json
from genrec.modeling import load_t5, model_from_config
from genrec.precision import autocast, from_config
from genrec.prompts import PromptBuilder
from idgen import userids
from idgen.idtable import IdTable
from idgen.softid import SoftIdConfig, soft_prompt_embeds

from . import checkpoint
from .batching import CopyRelabel, EpochBatches, ItemTextBudget, Renderer, collate, collate_generator
from .dsconfig import resolve
from .optim import LrSchedule, param_groups

log = logging.getLogger(__name__)

REC, GEN = "recommender", "generator"
# A run folder's top-level entries: the Trainer's, plus the tokenizer and generator warm-start the CLIs put there.
RUN_ENTRIES = ["config.yaml", "tb", "idtables", "idgen", "checkpoints", "losses.jsonl", "export", "summary.json", "tokenizer",
               "warmstart", "warmstart.state.pt"]
LM = "lm"  # language pretraining (pretrain.lm): trains the recommender engine on span corruption
EPOCHS_KEY = {REC: "rec_epochs", GEN: "id_epochs", LM: "lm_epochs"}


def new_clock(valid_every: float | None = None) -> dict[str, Any]:
    """The run's training clock (checkpointed in the trainer state): training seconds (validation and ID generation
    excluded) and samples so far, the loss sum since the last validation point, and when the next point is due."""
    return {"seconds": 0.0, "samples": 0, "loss_sum": 0.0, "loss_steps": 0, "next_valid": float(valid_every or 0.0)}


def schedule(cfg: dict[str, Any]) -> list[tuple[int, str]]:
    """The (round, stage) list of a run."""
    train = cfg.get("train", {})
    order = list(train.get("order", [GEN, REC]))
    if set(order) - {GEN, REC} and order != [LM]:
        raise ValueError(f"train.order may only contain {GEN!r} and {REC!r} (or be [{LM!r}]), got {order}")
    ids = cfg.get("ids", {})
    regenerate = ids.get("regenerate", ids.get("scheme", "idgenrec") == "idgenrec")
    out = []
    for r in range(int(train.get("rounds", 3))):
        for kind in order:
            if kind == GEN and (not regenerate or (r == 0 and train.get("skip_first_generator", True))):
                continue
            out.append((r, kind))
    return out


class Trainer:
    """Alternating training of a recommender and an ID generator sharing one tokenizer."""

    def __init__(
        self,
        cfg: dict[str, Any],
        source,
        out_dir: str | Path,
        tokenizer=None,
        eval_dataset: Dataset | None = None,
        resume: bool = False,
        started_at: float | None = None,
        phases: list[tuple[str, float]] | None = None,
    ):
        self.cfg = cfg
        self.source = source
        self.out = Path(out_dir)
        self.eval_dataset = eval_dataset
        self.resume = resume
        if tokenizer is None:
            from tokenization.spm import load_tokenizer

            tokenizer = load_tokenizer(cfg["tokenizer"]["path"])
        self.tokenizer = tokenizer
        self.train_cfg = cfg.get("train", {})
        prob = float(self.train_cfg.get("copy_relabel", 0.0) or 0.0)  # built once: its made-up words cost ~0.5 s
        self.copy_relabel = CopyRelabel.from_tokenizer(tokenizer, prob) if prob else None
        self.seed = int(cfg.get("seed", 0))
        self.softid = SoftIdConfig.from_dict(cfg.get("softid"))
        self.lm_only = [k for _, k in schedule(cfg)][:1] == [LM]  # language pretraining: one engine, no IDs
        self.started_at = time.time() if started_at is None else started_at  # the budget counts from here
        self.cli_phases = list(phases or [])  # (name, seconds) of the work before the trainer (tokenizer, warm-start)
        self._writer = None
        self.text_tokens: dict[str, list[int]] | None = None
        self.user_tokens: dict[str, list[int]] | None = None  # training prompts' user IDs, by history key
        if userids.enabled(cfg) and getattr(source, "samples", None) is None:
            raise ValueError("prompt.user_ids needs the training samples in memory to name every prompt's user (a "
                             f"source such as finetune's); {type(source).__name__} streams them")

    # ---------------------------------------------------------------- setup

    def setup(self) -> None:
        """Process group, threads, prompt builder and both DeepSpeed engines (called by :meth:`fit`)."""
        dist.init(single_process_group=True)
        self.rank, self.world = dist.rank(), dist.world_size()
        threads = self.train_cfg.get("threads")
        if not torch.cuda.is_available():
            local = int(os.environ.get("LOCAL_WORLD_SIZE", self.world))
            torch.set_num_threads(int(threads) if threads else max(1, (os.cpu_count() or 1) // max(1, local)))
        torch.manual_seed(self.seed)
        self.builder = PromptBuilder.from_config(self.tokenizer, self.cfg.get("prompt"))
        import deepspeed

        models = self.cfg.get("model", {})
        optim = self.cfg.get("optim", {})
        ds = self.cfg.get("deepspeed", {})
        self.engines = {}
        self.lr_schedules: dict[str, LrSchedule] = {}
        self.dtype = from_config(self.cfg, dist.device())  # forward passes under autocast; weights stay float32
        for name in (REC,) if self.lm_only else (REC, GEN):
            torch.manual_seed(self.seed + (name == GEN))
            model = model_from_config(models.get(name, {}), len(self.tokenizer))
            o = {"lr": 1e-3 if name == REC else 1e-8, **optim.get(name, {})}
            self.lr_schedules[name] = LrSchedule.from_config(o, float(o["lr"]))
            weight_decay = float(o.get("weight_decay", 0.0))
            ds_cfg = resolve(
                ds.get("config", "zero2"),
                lr=float(o["lr"]),
                weight_decay=weight_decay,
                micro_batch=int(self.train_cfg.get("max_batch", 64)),
                grad_accum=int(ds.get("gradient_accumulation_steps", 1)),
                clipping=float(ds.get("gradient_clipping", 1.0)),
                zero_stage=ds.get("zero_stage"),
                autocast_dtype=self.dtype,
            )
            engine, *_ = deepspeed.initialize(model=model, model_parameters=param_groups(model, weight_decay), config=ds_cfg)
            self.engines[name] = engine
        self.zero_stage = self.engines[REC].zero_optimization_stage()
        self.device = self.engines[REC].device
        log.info("precision: %s compute, float32 weights and optimizer state", self.dtype)
        if dist.is_main():
            self.out.mkdir(parents=True, exist_ok=True)
            with atomic_write(self.out / "config.yaml") as f:
                yaml.safe_dump(self.cfg, f, sort_keys=False)
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.out / "tb"))

    # ---------------------------------------------------------------- helpers

    def _scalar(self, tag: str, value: float, step: int | None = None) -> None:
        if self._writer is not None:
            self._writer.add_scalar(tag, value, self.global_step if step is None else step)

    def _plain(self, name: str):
        """The engine's module with full weights on this rank (a gathered copy under ZeRO-3)."""
        module = self.engines[name].module
        if self.zero_stage < 3:
            return module
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(module.parameters())):
            state = {k: v.detach().clone() for k, v in module.state_dict().items()}
        copy = type(module)(module.config)
        copy.load_state_dict(state)
        return copy.to(self.device)

    def _embedding_table(self) -> torch.Tensor:
        weight = self.engines[REC].module.get_input_embeddings().weight
        if self.zero_stage < 3:
            return weight.detach()
        import deepspeed

        with deepspeed.zero.GatheredParameters([weight]):
            return weight.detach().clone()

    def _renderer(self, kind: str) -> Renderer:
        """The current IDs' renderer; the recommender stage's also relabels for copying (``train.copy_relabel``)."""
        if userids.enabled(self.cfg) and self.user_tokens is None:
            path = self.state.get("train_user_ids")
            if path is None:  # named when a stage starts after the generator changed; the checkpoint keeps the
                # table's path, so a stage resumed mid-way (its generator partly trained) reads the same user IDs
                path = f"idtables/users-train-round-{self.idtable.version}.tsv"
                ids = userids.prompt_user_ids(self._plain(GEN), self.tokenizer, self.source.samples, self.source.items,
                                              self.cfg, save_to=self.out / path)
                self.state["train_user_ids"] = path
            else:
                ids = IdTable.load(self.out / path).ids
            self.user_tokens = userids.prompt_user_tokens(ids, self.tokenizer)
        return Renderer(self.builder, self.idtable.token_ids(self.tokenizer), self.user_tokens,
                        self.copy_relabel if kind == REC else None)

    def _text_tokens(self) -> dict[str, list[int]]:
        if self.text_tokens is None:
            limit = int(self.softid_cfg().get("max_text_tokens", self.cfg.get("idgen", {}).get("max_text_tokens", 256)))
            keys = list(self.source.items)
            enc = self.tokenizer([self.source.items[k].text for k in keys], truncation=True, max_length=limit)["input_ids"]
            self.text_tokens = {k: list(e) for k, e in zip(keys, enc)}
        return self.text_tokens

    def _lm_transform(self, epoch: int):
        from .lm import corruption

        return corruption(self.tokenizer, self.cfg.get("lm"), self.seed, epoch)

    def softid_cfg(self) -> dict[str, Any]:
        return self.cfg.get("softid", {}) or {}

    # ---------------------------------------------------------------- IDs

    def _generate_ids(self, version: int, previous: IdTable | None = None) -> IdTable:
        """Algorithm 1 with the current generator (on rank 0, Ray when configured), broadcast to all ranks.

        A stop keeps the claims so far in ``RUN/idgen/v{version}``; the resumed run continues from them."""
        from idgen import generate_from_section

        model = self._plain(GEN)

        def run() -> IdTable:
            was = model.training
            model.eval()
            items = {k: it.text for k, it in self.source.items.items()}
            try:
                return generate_from_section(model, self.tokenizer, items, self.cfg.get("idgen"), version=version,
                                             previous=previous, state_dir=str(self.out / "idgen" / f"v{version}"))
            finally:
                model.train(was)

        t0 = time.perf_counter()
        table = stop.main_only(run)
        self._phase(f"ids v{version}", time.perf_counter() - t0)
        return table

    def _initial_ids(self) -> IdTable:
        ids = self.cfg.get("ids", {})
        init, scheme = ids.get("init"), ids.get("scheme", "idgenrec")
        if scheme != "idgenrec":  # fixed baseline IDs (P5-SID, title): built once, never regenerated
            from idgen.schemes import build_idtable

            dataset = getattr(self.source, "dataset", None) or self.eval_dataset
            table = build_idtable(scheme, dataset or Dataset(self.source.items, {}), ids)
        else:
            table = IdTable.load(init) if init else self._generate_ids(0)
        missing = [k for k in self.source.items if k not in table.ids]
        if missing:
            from genrec.io import DataError

            raise DataError(init or "<generated>", None, f"IdTable has no ID for {len(missing)} items, e.g. {missing[:3]}")
        return table

    def _save_idtable(self, tag: str) -> None:
        if dist.is_main() and self.idtable is not None:
            self.idtable.save(self.out / "idtables" / f"{tag}.tsv")

    # ---------------------------------------------------------------- steps

    def _rec_step(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        engine = self.engines[REC]
        engine.train()
        b = {k: v.to(self.device) for k, v in batch.items()}
        with autocast(self.dtype, self.device):
            loss = engine(**b).loss  # float32: autocast computes the cross-entropy in float32
        engine.backward(loss)
        engine.step()
        return loss.detach()

    def _gen_step(self, batch: dict[str, Any]) -> torch.Tensor:
        rec, gen = self.engines[REC].module, self.engines[GEN]
        gen.train()
        b = {k: v.to(self.device) for k, v in batch.items()}
        with autocast(self.dtype, self.device):
            embeds = soft_prompt_embeds(
                gen.module, self._embedding_table(), b["input_ids"], b["text_ids"], b["text_mask"], b["id_ids"],
                b["id_mask"], b["spans"], self.softid,
            )
            loss = rec(inputs_embeds=embeds, attention_mask=b["attention_mask"], labels=b["labels"]).loss
        gen.backward(loss)
        gen.step()
        return loss.detach()

    # ---------------------------------------------------------------- loops

    def _checkpoint(self, position: dict[str, Any]) -> None:
        self._sync_clock()
        self.state.update(position=position, global_step=self.global_step)
        checkpoint.save(self.out, self.engines, self.state, self.idtable)

    def _log_loss(self, kind: str, loss: float) -> None:
        if dist.is_main():
            with open(self.out / "losses.jsonl", "a") as f:
                f.write(json.dumps({"step": self.global_step, "stage": kind, "loss": loss}) + "\n")

    def _run_epoch(self, stage_index: int, kind: str, epoch: int, resume_pos: dict | None,
                   time_left: float | None = None, totals: dict[str, float] | None = None) -> dict[str, float]:
        """One epoch of one stage, cut short after ``time_left`` seconds; returns throughput numbers. ``totals`` (the
        stage's earlier epochs) goes into mid-epoch checkpoints."""
        t = self.train_cfg
        engine = self.engines[REC if kind == LM else kind]
        renderer = None if kind == LM else self._renderer(kind)
        rec_frozen = kind == GEN
        self.engines[REC].module.requires_grad_(not rec_frozen)
        if rec_frozen:
            self.engines[REC].module.eval()
            id_tokens, text_tokens = renderer.id_tokens, self._text_tokens()
        batches = self._batches(stage_index, epoch, kind, renderer, (resume_pos or {}).get("batches_pos"))
        steps = int((resume_pos or {}).get("steps", 0))
        max_steps = t.get("max_steps_per_epoch")
        gas = engine.gradient_accumulation_steps()
        every = int(t.get("checkpoint_every", 0) or 0)
        log_every = int(t.get("log_every", 20))
        total = self.stage.get("counted", {}).get(epoch)  # the stage's first epoch was counted for its lr schedule
        if total is None:
            total = self._epoch_steps(batches, max_steps)
        bar = tqdm(desc=f"{kind} epoch {epoch}", unit="batch", disable=not dist.is_main(), total=total, initial=steps)
        samples = tokens = 0
        stage_base, clock_base = self.stage["seconds"], self.state["clock"]["seconds"]
        start = time.perf_counter()
        it = iter(batches)
        while True:
            out_of_time = time_left is not None and time.perf_counter() - start >= time_left
            batch = None if (max_steps and steps >= int(max_steps)) or out_of_time else next(it, None)
            if dist.any_true(batch is None):
                break
            tensors = collate_generator(batch, id_tokens, text_tokens) if rec_frozen else collate(batch)
            self.stage["seconds"] = stage_base + time.perf_counter() - start
            self._set_lr(kind)
            loss = float(self._gen_step(tensors) if rec_frozen else self._rec_step(tensors))
            steps += 1
            self.stage["steps"] += 1
            self.global_step += 1
            samples += len(batch)
            tokens += int(tensors["attention_mask"].sum()) + int((tensors["labels"] != -100).sum())
            self.state["clock"]["seconds"] = clock_base + time.perf_counter() - start
            self._since_sync = [self._since_sync[0] + len(batch), self._since_sync[1] + loss, self._since_sync[2] + 1]
            self._log_loss(kind, loss)
            bar.update(1)
            if self.global_step % log_every == 0:
                dt = time.perf_counter() - start
                bar.set_postfix(loss=f"{loss:.3f}", sps=f"{samples / dt:.1f}")
                self._scalar(f"loss/{kind}", loss)
                self._scalar(f"lr/{kind}", engine.get_lr()[0])
                self._scalar(f"throughput/{kind}_samples_per_s", samples * self.world / dt)
                self._scalar(f"throughput/{kind}_tokens_per_s", tokens * self.world / dt)
            if steps % gas:
                continue
            stopping = dist.any_true(stop.requested() is not None)
            point = self._point_due()
            due = every and self.global_step % (every * gas) == 0
            if point:  # validation time is not training time: the clocks skip it
                paused = time.perf_counter()
                self._validate_point(kind)
                start += time.perf_counter() - paused
            if stopping or due or point:
                self.stage["seconds"] = stage_base + time.perf_counter() - start
                pos = {"stage_index": stage_index, "epoch": epoch, "batches_pos": batches.position, "steps": steps,
                       "stage_steps": self.stage["steps"], "stage_seconds": self.stage["seconds"],
                       "totals": totals or {}}
                self._checkpoint(pos)
            if stopping:
                bar.close()
                err = stop.Stop(stop.requested() or signal.SIGTERM)
                err.saved.append(f"training checkpoint at step {self.global_step} in {self.out / 'checkpoints'}")
                raise err
        bar.close()
        self.engines[REC].module.requires_grad_(True)
        dt = time.perf_counter() - start
        self.stage["seconds"] = stage_base + dt
        self.state["clock"]["seconds"] = clock_base + dt  # the run's clock agrees with the stage's at its end
        samples, tokens = (sum(c) for c in zip(*dist.all_gather_object((samples, tokens))))
        return {"samples_per_s": samples / dt, "tokens_per_s": tokens / dt, "steps": steps, "seconds": dt, "samples": samples}

    @staticmethod
    def _epoch_steps(batches: EpochBatches, max_steps: int | None) -> int | None:
        """Steps of the epoch for the progress bar: the fewest batches of any rank (an epoch ends for all ranks
        when one runs out), capped by ``max_steps``; ``None`` when a rank cannot count them (streamed data)."""
        counts = dist.all_gather_object(batches.count())
        known = None if None in counts else min(counts)
        if max_steps:
            return int(max_steps) if known is None else min(known, int(max_steps))
        return known

    def _batches(self, stage_index: int, epoch: int, kind: str, renderer: Renderer | None,
                 resume: dict | None = None) -> EpochBatches:
        t = self.train_cfg
        text_budget = None
        if kind == GEN and t.get("generator_max_tokens"):
            lengths = {k: len(v) for k, v in self._text_tokens().items()}
            text_budget = ItemTextBudget(lengths, int(t["generator_max_tokens"]))
        return EpochBatches(
            self.source, renderer, epoch=stage_index * 10_000 + epoch, rank=self.rank, world=self.world, seed=self.seed,
            chunk_size=int(t.get("chunk_size", 4096)), max_tokens=int(t.get("max_tokens", 8192)),
            max_batch=int(t.get("max_batch", 64)), resume=resume,
            transform=self._lm_transform(stage_index * 10_000 + epoch) if kind == LM else None, text_budget=text_budget,
        )

    # ---------------------------------------------------------------- schedule

    def _begin_stage(self, plan: list[tuple[int, str]], stage_index: int, epochs: int, resume_pos: dict | None) -> None:
        """The stage's clock (restored mid-stage on resume), its time cap (:meth:`_stage_cap`) and its planned
        optimizer steps (``pretrain.optim``)."""
        rnd, kind = plan[stage_index]
        pos = resume_pos or {}
        seconds = float(pos.get("stage_seconds", 0.0))
        self.stage = {"round": rnd, "kind": kind, "steps": int(pos.get("stage_steps", 0)), "seconds": seconds,
                      "cap": self._stage_cap(plan, stage_index, seconds), "planned": None}
        name = REC if kind == LM else kind
        if self.lr_schedules[name].schedule == "constant":
            return
        # batches per epoch (the stage's first epoch; ranks stop with the first to run out) x epochs, in optimizer
        # steps; unknown for a streaming source, whose schedule then follows the stage's time cap alone
        renderer = None if kind == LM else self._renderer(kind)
        per_epoch = self._epoch_steps(self._batches(stage_index, 0, kind, renderer), self.train_cfg.get("max_steps_per_epoch"))
        self.stage["counted"] = {0: per_epoch}  # the progress bar of epoch 0 reuses it (counting renders the epoch)
        if per_epoch is not None:
            self.stage["planned"] = per_epoch * epochs // self.engines[name].gradient_accumulation_steps()

    def _set_lr(self, kind: str) -> None:
        """The stage's learning rate for the coming optimizer step, on every parameter group."""
        name = REC if kind == LM else kind
        engine, s = self.engines[name], self.stage
        seconds = s["seconds"]
        if s["cap"] is not None and self.world > 1:  # one time fraction for all ranks, so they step alike
            seconds = dist.max_value(seconds)
        lr = self.lr_schedules[name].lr_at(s["steps"] // engine.gradient_accumulation_steps(), s["planned"], seconds,
                                           s["cap"])
        for group in engine.optimizer.param_groups:
            group["lr"] = lr

    # ---------------------------------------------------------------- validation points

    def _sync_clock(self) -> None:
        """Fold every rank's samples and losses since the last sync into the run's clock (collective)."""
        clock = self.state["clock"]
        parts = dist.all_gather_object(self._since_sync)
        clock["samples"] += int(sum(p[0] for p in parts))
        clock["loss_sum"] += float(sum(p[1] for p in parts))
        clock["loss_steps"] += int(sum(p[2] for p in parts))
        self._since_sync = [0, 0.0, 0]

    def _point_due(self) -> bool:
        """Whether ``train.valid_every_seconds`` of training time have passed since the last validation point."""
        every = self.train_cfg.get("valid_every_seconds")
        if not every or self.eval_dataset is None:
            return False
        return dist.any_true(self.state["clock"]["seconds"] >= self.state["clock"]["next_valid"])

    def _record_point(self, kind: str, metrics: dict[str, float]) -> None:
        """One point of the learning curve: training time, samples and mean loss so far, validation metrics."""
        self._sync_clock()
        clock = self.state["clock"]
        self.state.setdefault("points", []).append({
            "round": self.stage["round"], "stage": kind, "step": self.global_step, "seconds": clock["seconds"],
            "samples": clock["samples"], "loss": clock["loss_sum"] / max(1, clock["loss_steps"]), "valid": metrics,
        })
        clock["loss_sum"], clock["loss_steps"] = 0.0, 0
        every = self.train_cfg.get("valid_every_seconds")
        if every:
            while clock["next_valid"] <= clock["seconds"]:
                clock["next_valid"] += float(every)

    def _validate_point(self, kind: str) -> None:
        """Validation in the middle of a stage (``train.valid_every_seconds``); the best model is exported."""
        metrics = self._evaluate("valid")
        for k, v in metrics.items():
            self._scalar(f"valid/{k}", v)
        self._record_point(kind, metrics)
        self._select(self.stage["round"], kind, metrics)

    def train_epoch(self, kind: str, idtable: IdTable, epoch: int = 0) -> dict[str, float]:
        """One epoch of one stage outside the schedule, with a given IdTable (benchmarks); call :meth:`setup` first."""
        self.idtable, self.state, self.global_step = idtable, {"clock": new_clock()}, 0
        self._since_sync = [0, 0.0, 0]
        self.stage = {"round": 0, "kind": kind, "steps": 0, "seconds": 0.0, "cap": None, "planned": None}
        return self._run_epoch(0, kind, epoch, None)

    # ---------------------------------------------------------------- evaluation

    def _evaluate(self, split: str, model=None, idtable: IdTable | None = None, generator=None,
                  cfg: dict[str, Any] | None = None) -> dict[str, float]:
        from zeroshot.harness import evaluate

        if self.eval_dataset is None:
            return {}
        model = model if model is not None else self._plain(REC)
        if userids.enabled(self.cfg) and generator is None:
            generator = self._plain(GEN)
        was = model.training
        model.eval()
        result = evaluate(model, self.tokenizer, idtable or self.idtable, self.eval_dataset, split, cfg or self.cfg,
                          progress=False, generator=generator)
        model.train(was)
        return {k: v if k == "users" else float(v) for k, v in result.items() if isinstance(v, (int, float))}

    def _after_stage(self, stage_index: int, rnd: int, kind: str, stats: dict[str, float]) -> None:
        """New IDs after a generator stage, validation, export of the best model. A stage that trained no step
        (budget spent) changed nothing: its IDs and validation would repeat the previous ones, so both are skipped."""
        entry: dict[str, Any] = {"round": rnd, "stage": kind, **stats}
        if kind == LM:
            self._after_lm_stage(entry)
            return
        trained = stats.get("steps", 0) > 0
        if kind == GEN and trained and self.state.get("ids_for_stage") != stage_index:
            previous = self.idtable
            self.idtable = self._generate_ids(previous.version + 1, previous)
            self.user_tokens = None
            self.state.pop("train_user_ids", None)
            self.state.update(ids_for_stage=stage_index, churn=self.idtable.churn(previous))
            self._scalar("ids/churn", self.state["churn"])
            self._save_idtable(f"round-{self.idtable.version}")
            if dist.is_main():
                log.info("round %d: ID churn %.3f", rnd, self.state["churn"])
        if kind == GEN and "churn" in self.state:
            entry["churn"] = self.state.pop("churn")
        if not trained and self.state.get("best") is not None:
            entry["valid"] = {}
            self.state.setdefault("stages", []).append(entry)
            return
        last = (self.state.get("points") or [None])[-1]
        if kind == REC and last and (last["step"], last["round"], last["stage"]) == (self.global_step, rnd, kind):
            # a train.valid_every_seconds point at the stage's last step already validated this model on these IDs
            entry["valid"] = last["valid"]
            self.state.setdefault("stages", []).append(entry)
            return
        t0 = time.perf_counter()
        metrics = self._evaluate("valid")
        self._phase(f"valid {stage_index} ({kind}, round {rnd})", time.perf_counter() - t0)
        for k, v in metrics.items():
            self._scalar(f"valid/{k}", v)
        entry["valid"] = metrics
        if metrics:
            self._record_point(kind, metrics)
        self._select(rnd, kind, metrics)
        self.state.setdefault("stages", []).append(entry)

    def _select(self, rnd: int, kind: str, metrics: dict[str, float]) -> None:
        """Export the model if it is the best so far on ``train.select_metric`` (the latest without validation)."""
        key = self.train_cfg.get("select_metric", "NDCG@10")
        best = self.state.get("best")
        if not metrics:  # no validation data: the export is the latest model
            self._export()
        elif key not in metrics:
            raise KeyError(f"train.select_metric {key!r} is not among the validation metrics {sorted(metrics)}")
        elif best is None or metrics[key] > best["score"]:
            self.state["best"] = {"score": metrics[key], "round": rnd, "stage": kind, "metric": key,
                                  "step": self.global_step, "valid": metrics}
            self._export()

    def _after_lm_stage(self, entry: dict[str, Any]) -> None:
        """Held-out span-corruption loss, then the LM folder ``RUN/model`` (the latest model)."""
        from .lm import MODEL_DIR, export_lm, held_out_loss

        model = self._plain(REC)
        t = self.train_cfg
        entry["valid"] = held_out_loss(model, self.tokenizer, getattr(self.source, "valid", []), self.cfg.get("lm"),
                                       self.seed, self.rank, self.world, int(t.get("max_tokens", 8192)),
                                       int(t.get("max_batch", 64)))
        for k, v in entry["valid"].items():
            self._scalar(f"valid/lm_{k}", v)
        if dist.is_main():
            export_lm(self.out / MODEL_DIR, model, self.tokenizer)
        dist.barrier()
        self.state.setdefault("stages", []).append(entry)

    def _phase(self, name: str, seconds: float) -> None:
        """Record a phase's wall time (``summary.json`` ``phase_seconds``; kept in the checkpoint across resumes)."""
        self.state.setdefault("phases", []).append([name, round(seconds, 2)])
        if dist.is_main():
            log.info("phase %s: %.1fs", name, seconds)

    def _stage_cap(self, plan: list[tuple[int, str]], stage_index: int, spent: float = 0.0) -> float | None:
        """Training seconds of stage ``stage_index`` in all (``spent`` of them before a resume):
        ``train.stage_seconds`` and/or ``spent`` plus its share of what is left of the budget."""
        kind = plan[stage_index][1]
        cap = self.train_cfg.get("stage_seconds")  # training seconds per stage: a number, or per stage kind
        cap = cap.get(kind) if isinstance(cap, dict) else cap
        budget = self.train_cfg.get("budget_minutes")
        if budget is None:
            return None if cap is None else float(cap)
        epochs = [int(self.train_cfg.get(EPOCHS_KEY[k], 1)) for _, k in plan[stage_index:]]

        def longest(prefix: str) -> float:
            return max((sec for name, sec in self.state.get("phases", []) if name.startswith(prefix)), default=0.0)

        after = sum(longest("valid") + longest("export") + (longest("ids") if k == GEN else 0.0)
                    for _, k in plan[stage_index:])
        left = self.started_at + 60.0 * float(budget) - time.time() - after
        share = max(0.0, left) * epochs[0] / max(1, sum(epochs))
        share = spent + float(dist.broadcast_object(share))  # every rank stops the stage at the same step
        return share if cap is None else min(float(cap), share)

    def _export(self) -> None:
        from .export import export

        t0 = time.perf_counter()
        rec, gen = self._plain(REC), self._plain(GEN)
        if dist.is_main():
            export(self.out / "export", rec, gen, self.tokenizer, self.idtable, self.cfg)
        dist.barrier()
        self._phase("export", time.perf_counter() - t0)

    # ---------------------------------------------------------------- fit

    def fit(self) -> dict[str, Any]:
        """Run (or continue) the schedule; returns the summary (also written to ``RUN/summary.json``).

        A stop signal raises :class:`genrec.stop.Stop` once a checkpoint is written (``Stop.saved`` says where)."""
        t0 = time.perf_counter()
        self.setup()
        stop.install()
        plan = schedule(self.cfg)
        position: dict[str, Any] | None = None
        if self.resume and checkpoint.exists(self.out):
            self.state, self.idtable = checkpoint.load(self.out, self.engines)
            position = self.state.get("position")
            self.global_step = int(self.state.get("global_step", 0))
            self._truncate_losses()
            if dist.is_main():
                at = position["stage_index"]
                where = (f"round {plan[at][0]}, {plan[at][1]} stage, epoch {position.get('epoch', 0)}"
                         if at < len(plan) else "every stage done")
                log.info("resume: continuing %s from its checkpoint at step %d (%s)", self.out, self.global_step, where)
        else:
            if self.resume and dist.is_main():
                log.info("resume: no checkpoint in %s, starting fresh", self.out / "checkpoints")
            if not self.resume and dist.is_main():  # claims of an earlier run's ID generation do not apply
                shutil.rmtree(self.out / "idgen", ignore_errors=True)
            self.state, self.global_step = {"clock": new_clock(self.train_cfg.get("valid_every_seconds"))}, 0
            initial = self.out / "idtables" / "round-0.tsv"
            if self.lm_only:
                self.idtable = None
            elif self.resume and initial.exists():  # stopped after the initial IDs, before the first checkpoint
                self.idtable = IdTable.load(initial)
            else:
                self.idtable = self._initial_ids()
                self._save_idtable("round-0")
            if self.train_cfg.get("initial_eval", False):
                t1 = time.perf_counter()
                try:
                    self.state["initial_valid"] = self._evaluate("valid")
                except stop.Stop as e:
                    e.saved.append(f"initial IDs in {initial}")
                    raise
                self._phase("valid initial", time.perf_counter() - t1)
            position = {"stage_index": 0, "epoch": 0}
        self.state.setdefault("clock", new_clock(self.train_cfg.get("valid_every_seconds")))
        self._since_sync = [0, 0.0, 0]  # this rank's samples, loss sum and steps since the clock's last sync
        if not any(name in {n for n, _ in self.state.get("phases", [])} for name, _ in self.cli_phases):
            self.state["phases"] = [[n, round(sec, 2)] for n, sec in self.cli_phases] + self.state.get("phases", [])
        for stage_index in range(int(position.get("stage_index", 0)), len(plan)):
            rnd, kind = plan[stage_index]
            epochs = int(self.train_cfg.get(EPOCHS_KEY[kind], 1))
            resumed = position.get("stage_index") == stage_index
            first_epoch = int(position.get("epoch", 0)) if resumed else 0
            self._begin_stage(plan, stage_index, epochs, position if resumed else None)
            cap = self.stage["cap"]
            # a stage resumed mid-way has already spent some of its time (stage_seconds in the checkpoint)
            totals = {"samples_per_s": 0.0, "tokens_per_s": 0.0, "steps": 0, "samples": 0,
                      **(dict(position.get("totals") or {}) if resumed else {}), "seconds": self.stage["seconds"]}
            spent = totals["seconds"]
            for epoch in range(first_epoch, epochs):
                if cap is not None and totals["seconds"] >= cap:
                    break
                resume_pos = position if (resumed and position.get("epoch") == epoch) else None
                time_left = None if cap is None else cap - totals["seconds"]
                stats = self._run_epoch(stage_index, kind, epoch, resume_pos, time_left, totals)
                totals["steps"] += stats["steps"]
                totals["seconds"] += stats["seconds"]
                totals["samples"] += stats["samples"]
                totals["samples_per_s"], totals["tokens_per_s"] = stats["samples_per_s"], stats["tokens_per_s"]
            self._phase(f"train {stage_index} ({kind}, round {rnd})", totals["seconds"] - spent)
            try:
                self._after_stage(stage_index, rnd, kind, totals)
            except stop.Stop as e:  # during ID regeneration or validation: the stage's training is kept
                self._checkpoint({"stage_index": stage_index, "epoch": epochs, "totals": totals,
                                  "stage_steps": self.stage["steps"], "stage_seconds": self.stage["seconds"]})
                e.saved.append(f"training checkpoint at the end of stage {stage_index} in {self.out / 'checkpoints'}")
                raise
            position = {"stage_index": stage_index + 1, "epoch": 0}
            self._checkpoint(position)
        return self._finish(time.perf_counter() - t0)

    def _truncate_losses(self) -> None:
        path = self.out / "losses.jsonl"
        if dist.is_main() and path.exists():
            keep = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln)["step"] <= self.global_step]
            with atomic_write(path) as f:
                f.write("".join(ln + "\n" for ln in keep))

    def _finish(self, seconds: float) -> dict[str, Any]:
        summary: dict[str, Any] = {
            "stages": self.state.get("stages", []),
            "points": self.state.get("points", []),
            "train_seconds": self.state["clock"]["seconds"],
            "train_samples": self.state["clock"]["samples"],
            "best": self.state.get("best"),
            "initial_valid": self.state.get("initial_valid"),
            "world_size": self.world,
            "global_steps": self.global_step,
        }
        export_dir = self.out / "export"
        if self.eval_dataset is not None and export_dir.exists() and self.train_cfg.get("final_test", True):
            t0 = time.perf_counter()
            best = load_t5(export_dir / "recommender").to(self.device)
            generator = load_t5(export_dir / "generator").to(self.device) if userids.enabled(self.cfg) else None
            table = IdTable.load(export_dir / "idtable.tsv")
            settings = self.cfg.get("eval") or {}
            try:
                by_penalty = {}
                for p in settings.get("test_length_penalties") or []:  # the same export ranked once per penalty
                    cfg = merge(self.cfg, {"eval": {"length_penalty": float(p)}})
                    by_penalty[float(p)] = self._evaluate("test", best, table, generator, cfg=cfg)
                if by_penalty:
                    summary["test_by_length_penalty"] = {str(p): m for p, m in by_penalty.items()}
                penalty = float(settings.get("length_penalty", 1.0))
                summary["test"] = by_penalty.get(penalty) or self._evaluate("test", best, table, generator)
            except stop.Stop as e:
                e.saved.append(f"the trained model (training finished; checkpoint in {self.out / 'checkpoints'}, the "
                               "resumed run goes straight to the test)")
                raise
            for k, v in summary["test"].items():
                self._scalar(f"test/{k}", v)
            self._phase("test", time.perf_counter() - t0)
        summary["phase_seconds"] = self.state.get("phases", [])  # [name, seconds] in the order they ran
        summary["wall_seconds"] = seconds
        if dist.is_main():
            write_json(self.out / "summary.json", summary)
            if self._writer is not None:
                self._writer.close()
        return summary

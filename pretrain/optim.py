"""Optimizer settings of a training stage: parameter groups (no weight decay on norms, biases and embeddings) and
the learning-rate schedule (linear warm-up, then constant, linear or cosine decay to a floor).

Every stage (recommender or generator, each round) runs its own schedule over its own length: warm-up for
``optim.<model>.warmup_steps`` optimizer steps, then decay from ``lr`` to ``lr * min_lr_ratio`` as the stage
progresses. A stage's progress is the larger of two fractions: optimizer steps over its planned steps (batches per
epoch x epochs, counted before the stage starts), and training seconds over its time cap (``train.stage_seconds``,
or a cap derived from a run budget) when it has one. A step-planned stage is reproduced exactly on resume (the
trainer checkpoints the stage's step and seconds); a time-capped one decays with the clock, which no rerun repeats.

The trainer sets the learning rate of every parameter group before each optimizer step, so the DeepSpeed config
carries no scheduler (``pretrain.dsconfig.resolve`` drops one) and the lr TensorBoard shows is the one used.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import nn

SCHEDULES = ("constant", "linear", "cosine")


@dataclass(frozen=True)
class LrSchedule:
    """``optim.<model>``: ``lr``, ``warmup_steps``, ``schedule`` (constant | linear | cosine), ``min_lr_ratio``."""

    lr: float
    warmup_steps: int = 0
    schedule: str = "linear"
    min_lr_ratio: float = 0.0

    @classmethod
    def from_config(cls, section: Mapping[str, Any] | None, default_lr: float) -> "LrSchedule":
        s = dict(section or {})
        out = cls(float(s.get("lr", default_lr)), int(s.get("warmup_steps", 0) or 0), str(s.get("schedule", "linear")),
                  float(s.get("min_lr_ratio", 0.0)))
        if out.schedule not in SCHEDULES:
            raise ValueError(f"optim schedule must be one of {', '.join(SCHEDULES)}, not {out.schedule!r}")
        if not 0.0 <= out.min_lr_ratio <= 1.0:
            raise ValueError(f"optim min_lr_ratio must be in [0, 1], not {out.min_lr_ratio}")
        return out

    def progress(self, step: int, planned_steps: int | None, seconds: float = 0.0, seconds_cap: float | None = None) -> float:
        """How far the decay has gone, in [0, 1]: the larger of the step fraction after warm-up and the time
        fraction (``step``: optimizer steps done in this stage)."""
        parts = [0.0]
        if planned_steps:
            parts.append((step - self.warmup_steps) / max(1, planned_steps - self.warmup_steps))
        if seconds_cap:
            parts.append(seconds / float(seconds_cap))
        return min(1.0, max(parts))

    def factor(self, step: int, progress: float) -> float:
        """The multiplier of ``lr`` for optimizer step ``step`` (0-based within the stage) at ``progress``."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.schedule == "constant":
            return 1.0
        p = min(1.0, max(0.0, progress))
        decay = 1.0 - p if self.schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * p))
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * decay

    def lr_at(self, step: int, planned_steps: int | None, seconds: float = 0.0, seconds_cap: float | None = None) -> float:
        return self.lr * self.factor(step, self.progress(step, planned_steps, seconds, seconds_cap))


NO_DECAY_MODULES = (nn.Embedding, nn.LayerNorm)


def _no_decay(module: nn.Module, name: str) -> bool:
    return name == "bias" or isinstance(module, NO_DECAY_MODULES) or "norm" in type(module).__name__.lower()


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two optimizer groups: weights of linear layers with ``weight_decay``, and norms (T5LayerNorm included),
    biases and embeddings (tied output embeddings and relative position biases included) without. A parameter
    shared by several modules is placed once, without decay if any of its modules is exempt."""
    exempt: dict[int, bool] = {}
    params: dict[int, torch.nn.Parameter] = {}
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            params[id(p)] = p
            exempt[id(p)] = exempt.get(id(p), False) or _no_decay(module, name)
    decay = [p for i, p in params.items() if not exempt[i]]
    no_decay = [p for i, p in params.items() if exempt[i]]
    return [g for g in ({"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0})
            if g["params"]]

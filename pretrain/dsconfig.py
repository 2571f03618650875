"""DeepSpeed JSON configs: templates in ``configs/deepspeed/`` with ``"auto"`` values resolved by the trainer.

The templates fix the ZeRO stage and optimizer family; the run config supplies the numbers (learning rate, weight
decay, gradient accumulation, clipping) so one template serves both engines (recommender: lr 1e-3; generator: the
paper's 1e-8). The trainer owns the learning-rate schedule (``pretrain.optim``: it sets the lr before every step), so
a ``scheduler`` section is dropped. DeepSpeed's ``bf16``/``fp16`` sections are off on every device: weights,
gradients and optimizer state are float32, and ``train.precision`` runs the forward passes under
``torch.autocast`` (``genrec.precision``), one mechanism for CPU and GPU. The engine's forward switches an outer
autocast off unless the config's ``torch_autocast`` section is on, so ``autocast_dtype`` turns it on, with no
"lower precision safe modules" (gradients are reduced in float32). On CPU the optimizer is torch's AdamW
(DeepSpeed's fused/CPU Adam kernels need CUDA or a compiler).
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch

from genrec.config import CONFIG_DIR
from genrec.io import DataError

TEMPLATES = CONFIG_DIR / "deepspeed"


def load_template(name_or_path: str | Path) -> dict[str, Any]:
    """``zero2`` (a template in ``configs/deepspeed``) or the path of a DeepSpeed JSON file."""
    p = Path(name_or_path)
    if not p.exists():
        p = TEMPLATES / (p.name if p.suffix == ".json" else f"{p.name}.json")
    if not p.exists():
        raise DataError(name_or_path, None, f"DeepSpeed config not found (templates: {sorted(x.stem for x in TEMPLATES.glob('*.json'))})")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise DataError(p, e.lineno, f"invalid JSON: {e.msg}") from None


def _fill(node: Any, values: dict[str, Any], path: str = "") -> Any:
    if isinstance(node, dict):
        return {k: _fill(v, values, f"{path}.{k}" if path else k) for k, v in node.items()}
    if node == "auto":
        if path not in values:
            raise ValueError(f"DeepSpeed config: no value for 'auto' at {path}")
        return values[path]
    return node


def resolve(
    template: str | Path | dict[str, Any],
    *,
    lr: float,
    weight_decay: float = 0.0,
    micro_batch: int = 1,
    grad_accum: int = 1,
    clipping: float = 1.0,
    zero_stage: int | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> dict[str, Any]:
    """A complete DeepSpeed config for one engine; ``autocast_dtype`` (bf16): the forward passes' autocast."""
    cfg = copy.deepcopy(template) if isinstance(template, dict) else load_template(template)
    gpu = torch.cuda.is_available()
    values = {
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": grad_accum,
        "gradient_clipping": clipping,
        "optimizer.params.lr": lr,
        "optimizer.params.weight_decay": weight_decay,
    }
    cfg.pop("scheduler", None)
    cfg["bf16"] = {"enabled": False}
    cfg["fp16"] = {"enabled": False}
    if autocast_dtype is not None and autocast_dtype != torch.float32:
        cfg["torch_autocast"] = {"enabled": True, "dtype": str(autocast_dtype), "lower_precision_safe_modules": []}
    else:
        cfg.pop("torch_autocast", None)
    cfg = _fill(cfg, values)
    cfg.pop("train_batch_size", None)
    if zero_stage is not None:
        cfg.setdefault("zero_optimization", {})["stage"] = int(zero_stage)
    if not gpu:
        cfg.setdefault("optimizer", {}).setdefault("params", {})["torch_adam"] = True
    return cfg

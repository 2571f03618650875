"""Numeric precision of the forward passes: ``train.precision: auto | fp32 | bf16``, one setting for training
(both stages) and evaluation, on CPU and GPU alike; ID generation has its own, ``idgen.precision`` (fp32 by default,
see ``idgen.config.IdGenConfig``).

``bf16`` runs the forward passes under ``torch.autocast`` (matrix products in bfloat16); the weights, their
gradients and the optimizer state stay float32 (the trainer turns DeepSpeed's own ``bf16`` section off on every
device, so one mechanism serves CPU and GPU), and losses, log-softmax and beam scores are computed in float32.
``auto`` picks bf16 where the hardware runs it natively: a CPU with AVX-512 BF16 or AMX (bf16 on other CPUs is
emulated and slower than fp32), a CUDA GPU that supports bf16; fp32 elsewhere.
"""
from __future__ import annotations

import contextlib
import functools
import warnings
from typing import Any, ContextManager, Mapping

import torch

PRECISIONS = ("auto", "fp32", "bf16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@functools.lru_cache(maxsize=None)
def cpu_has_fast_bf16() -> bool:
    """Whether this CPU has native bf16 arithmetic (AVX-512 BF16 or AMX), from torch or ``/proc/cpuinfo``."""
    capability = str(torch.backends.cpu.get_cpu_capability()).upper()
    if "AMX" in capability or "BF16" in capability:
        return True
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def fast_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` runs bf16 natively."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return cpu_has_fast_bf16()
    return False


def resolve(setting: str | None, device: torch.device | str) -> torch.dtype:
    """The compute dtype of ``setting`` (``auto`` when None) on ``device``."""
    setting = "auto" if setting is None else str(setting)
    if setting not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {setting!r}")
    if setting == "auto":
        return torch.bfloat16 if fast_bf16(device) else torch.float32
    if setting == "bf16" and torch.device(device).type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError("precision bf16: this GPU does not support bfloat16 (use fp32 or auto)")
    if setting == "bf16" and torch.device(device).type == "cpu" and not cpu_has_fast_bf16():
        warnings.warn("precision bf16 on a CPU without AVX-512 BF16 or AMX: bf16 is emulated here and slower than fp32 "
                      "(a T5 training step ran 5x slower on an AVX2 AMD EPYC); use auto or fp32", stacklevel=2)
    return DTYPES[setting]


def setting(cfg: Mapping[str, Any] | None) -> str:
    """The recipe's ``train.precision`` (default ``auto``)."""
    value = ((cfg or {}).get("train") or {}).get("precision") or "auto"
    if value not in PRECISIONS:
        raise ValueError(f"train.precision must be one of {', '.join(PRECISIONS)}, not {value!r}")
    return value


def from_config(cfg: Mapping[str, Any] | None, device: torch.device | str) -> torch.dtype:
    """The compute dtype a recipe asks for on ``device``."""
    return resolve(setting(cfg), device)


def autocast(dtype: torch.dtype, device: torch.device | str) -> ContextManager:
    """The context forward passes run in: ``torch.autocast`` for bf16, nothing for fp32. Autocast state is per
    thread, so a thread that decodes enters it itself."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)

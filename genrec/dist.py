"""Process-group helpers: one code path for 1 CPU process, N local processes (gloo) and multi-node NCCL.

Launchers (torchrun, the deepspeed launcher, srun + torchrun) set RANK / WORLD_SIZE / LOCAL_RANK; without them we run
as a single process and never create a process group.
"""
from __future__ import annotations

import atexit
import os
from typing import Any

import torch
import torch.distributed as torch_dist


def world_size() -> int:
    return torch_dist.get_world_size() if torch_dist.is_initialized() else int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return torch_dist.get_rank() if torch_dist.is_initialized() else int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def device() -> torch.device:
    """This rank's device: its local GPU when CUDA exists, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank() % torch.cuda.device_count())
    return torch.device("cpu")


def init(single_process_group: bool = False) -> None:
    """Create the process group when launched with WORLD_SIZE > 1 (NCCL on GPU, gloo on CPU). Idempotent.

    ``single_process_group``: also create a 1-rank group for a single process, which DeepSpeed engines need; a
    private loopback store is used unless a launcher already set MASTER_ADDR.
    """
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    if torch_dist.is_initialized():
        return
    private = False
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        if not single_process_group:
            return
        if "MASTER_ADDR" not in os.environ:
            import socket

            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
            private = True
    elif torch.cuda.is_available():
        torch.cuda.set_device(device())
    import deepspeed

    from . import quiet

    with quiet.deepspeed_init():
        deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")
    if private:  # the store's address is this process's alone: a child process (a test's or the demo's run, a
        # launcher) must not inherit it and try to serve the same port (EADDRINUSE)
        for key in ("MASTER_ADDR", "MASTER_PORT"):
            os.environ.pop(key, None)
    atexit.register(shutdown)


def shutdown() -> None:
    """Destroy the process group, so no communication thread outlives the interpreter.

    ``init`` registers this to run at exit: a gloo group left alive aborts the process at interpreter teardown
    ('terminate called without an active exception'), whichever entry point created it.
    """
    if torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def barrier() -> None:
    if torch_dist.is_initialized():
        torch_dist.barrier()


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (just ``[obj]`` on one process)."""
    if not torch_dist.is_initialized():
        return [obj]
    out: list[Any] = [None] * torch_dist.get_world_size()
    torch_dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    if not torch_dist.is_initialized():
        return obj
    box = [obj]
    torch_dist.broadcast_object_list(box, src=src)
    return box[0]


def any_true(flag: bool) -> bool:
    """All-reduce a boolean with OR: used so every rank agrees to stop/checkpoint at the same step."""
    if not torch_dist.is_initialized():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device() if torch.cuda.is_available() else "cpu")
    torch_dist.all_reduce(t, op=torch_dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def max_value(value: float) -> float:
    """All-reduce a number with MAX (every rank gets the largest)."""
    if not torch_dist.is_initialized():
        return value
    t = torch.tensor([float(value)], dtype=torch.float64, device=device() if torch.cuda.is_available() else "cpu")
    torch_dist.all_reduce(t, op=torch_dist.ReduceOp.MAX)
    return float(t.item())

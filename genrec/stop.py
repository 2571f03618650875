"""Clean stops: a stop signal sets a flag that every long loop polls; the CLI turns the resulting exception into one
line and an exit code.

SIGTERM (``timeout``, SLURM's end of time), SIGINT (Ctrl-C) and SIGUSR1 (SLURM's ``--signal`` requeue warning)
only set the flag (:func:`install`). Long loops (tokenizer training, warm-start, Algorithm 1, training steps,
evaluation batches) call :func:`check`, which raises :class:`Stop` once a signal came; the phase that is stopped
writes what can be resumed, adds a note saying where (``Stop.saved``) and re-raises; ``idgenrec.cli.main`` prints
one line and returns :func:`exit_code`: 143 (SIGTERM), 130 (SIGINT), 138 (SIGUSR1), i.e. 128 + signal number as
shells report a signal's death. ``--resume`` then continues. Under ``torchrun`` every rank gets the signal; loops
that all ranks run in step agree on stopping with ``genrec.dist.any_true(requested())``.
"""
from __future__ import annotations

import os
import signal
import sys
from typing import Any, Callable, TypeVar

T = TypeVar("T")

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
_received: int | None = None


class Stop(Exception):
    """A stop signal arrived; ``saved`` lists what was written so that ``--resume`` continues."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.saved: list[str] = []


def _flag(signum, frame) -> None:
    global _received
    _received = _received or signum


def install() -> None:
    """Route the stop signals to the flag (the CLI entry; the trainer again, for library use). Only the main thread
    may install handlers: elsewhere the existing ones stay."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return
    for sig in SIGNALS:
        signal.signal(sig, _flag)


def requested() -> int | None:
    """The signal number received, if any."""
    return _received


def check() -> None:
    """Raise :class:`Stop` if a stop signal arrived."""
    if _received is not None:
        raise Stop(_received)


def check_all() -> None:
    """:func:`check` agreed by every rank (a collective: every rank must call it at the same point), so a rank that
    got no signal, or got it later, stops with the others."""
    from genrec import dist

    if dist.any_true(_received is not None):
        raise Stop(_received or signal.SIGTERM)


def reset() -> None:
    """Forget a received signal (tests, and a process that continues after handling a stop)."""
    global _received
    _received = None


def exit_code(signum: int) -> int:
    return 128 + int(signum)


def message(stop: Stop) -> str:
    """The one line printed for a stop."""
    name = signal.Signals(stop.signum).name
    if not stop.saved:
        return f"stopped by a signal ({name}); nothing needed saving"
    return f"stopped by a signal ({name}): saved {'; '.join(stop.saved)}; continue with the same command and --resume"


def report(stop: Stop, prog: str) -> int:
    """What a command's ``main`` does with a :class:`Stop`: print its one line (rank 0 only, since every rank stops)
    and return :func:`exit_code`."""
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"{prog}: {message(stop)}", file=sys.stderr, flush=True)
    return exit_code(stop.signum)


def main_only(fn: Callable[[], T]) -> T:
    """``fn()`` on rank 0, its result broadcast to every rank; a stop on rank 0 stops every rank.

    The other ranks wait inside a collective, where no Python code runs; they learn of rank 0's stop from the
    broadcast instead of hanging or failing when rank 0 exits.
    """
    from genrec import dist

    box: tuple[Any, ...] = ("ok", None)
    if dist.is_main():
        try:
            box = ("ok", fn())
        except Stop as e:
            box = ("stop", e.signum, e.saved)
    box = dist.broadcast_object(box)
    if box[0] == "stop":
        err = Stop(box[1])
        err.saved = list(box[2])
        raise err
    return box[1]

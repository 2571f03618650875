"""Third-party output a user cannot act on, silenced at its source unless ``idgenrec --verbose``.

What is silenced, and where: DeepSpeed's logger (e.g. "Attempting to get learning rate from scheduler before it has
started") and its "shm_comm_op built successfully" print (:func:`deepspeed_init`), Ray's own log lines (its
token-authentication warning; :func:`ray_logging_level`), torch's ``FutureWarning`` about
``all_gather_into_tensor`` (which DeepSpeed calls) and the weight loading / saving bars of ``transformers``
(:func:`setup`). Errors still show. The console script calls :func:`setup` before torch, Ray or DeepSpeed are
imported; the verbosity travels to child processes (torchrun workers) in ``IDGENREC_VERBOSE``.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from typing import Iterator

VERBOSE_ENV = "IDGENREC_VERBOSE"


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV) == "1"


def setup(verbose_flag: bool) -> None:
    """Set the process's (and its children's) verbosity; when quiet, silence what can be silenced up front."""
    if verbose_flag:
        os.environ[VERBOSE_ENV] = "1"
    if verbose():
        return
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' "Loading weights" bars
    warnings.filterwarnings("ignore", message=r".*all_gather_into_tensor.* is deprecated", category=FutureWarning)


def ray_logging_level() -> int:
    """For ``ray.init(logging_level=...)``: Ray's INFO/WARNING lines only with ``--verbose``."""
    return logging.INFO if verbose() else logging.ERROR


@contextlib.contextmanager
def deepspeed_init() -> Iterator[None]:
    """Around ``deepspeed.init_distributed``: its stdout prints dropped and its logger at ERROR, unless verbose."""
    if verbose():
        yield
        return
    logging.getLogger("DeepSpeed").setLevel(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()):
        yield

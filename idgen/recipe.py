"""The recipe sections the ID-generation layer reads: ``idgen`` (Algorithm 1 and where it runs), ``softid`` (the
generator stage's soft IDs) and ``warmstart`` (tag warm-start of a fresh generator).

The keys come from the dataclasses that hold them (:class:`~idgen.config.IdGenConfig`,
:class:`~idgen.softid.SoftIdConfig`, :class:`~idgen.warmstart.WarmstartConfig`): a field added there is a recipe
key, with its trailing comment as its doc.
"""
from __future__ import annotations

from dataclasses import dataclass

from genrec.schema import combine, from_dataclass, part

from .config import IdGenConfig
from .softid import SoftIdConfig
from .warmstart import WarmstartConfig


@dataclass
class IdGenPlacement:
    """Where Algorithm 1 runs."""

    workers: int = 0  # >0: as many Ray actors, one generator replica each (0: this process)
    ray_address: str | None = None  # join this Ray cluster (null: start a local one when workers > 0)


IDGEN = part(
    idgen=combine(from_dataclass(IdGenConfig), from_dataclass(IdGenPlacement)),
    softid=SoftIdConfig,
    warmstart=WarmstartConfig,
)

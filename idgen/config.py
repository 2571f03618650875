"""Settings of Algorithm 1 (kept free of torch so CLIs and configs can import it cheaply)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from genrec import schema


@dataclass
class IdGenConfig:
    """Settings of Algorithm 1 and its batched execution (paper values by default), a recipe's ``idgen`` section.

    ``precision`` is ID generation's own (Algorithm 1 and user IDs, resolved on the device that decodes, a Ray
    worker's included), fp32 unless set, whatever ``train.precision`` says. Why not bf16: rounding to 8 mantissa bits
    turns tiny weight changes into changed candidates, and Algorithm 1's claims pass a changed candidate on from item
    to item. On Beauty, weights moved as far as 40 Adam steps at the paper's generator lr (1e-8) move them changed
    some first-try candidate of 32 % of the items in bf16 and 0.1 % in fp32; regenerated in bf16 after such a
    generator stage, 21 % of the IDs changed and validation HR@10 fell from 0.0110 to 0.0085. Decoding in fp32 costs
    about 1.4x the time of bf16, once per ID generation.
    """

    groups: int = 10  # k: diverse beam search groups of one beam = candidates per try
    lambda_max: int = 10  # tries per length window (lambda = 1 .. lambda_max)
    window: int = 10  # width of the length windows [1, 10), [10, 20), ...
    max_windows: int = 5  # bound: after this many windows the last resort names the items still pending
    max_rounds: int | None = None  # bound on rounds (None: max_tries): then the last resort names all items pending
    max_text_tokens: int = 256  # item text truncation
    batch_size: int = 64  # items per forward pass (never changes the result)
    normalize: str = "words"  # "words": lowercase \w+ words joined by spaces (the reference); "strip": whitespace only
    version: int = 0  # training round stored in the IdTable
    precision: str = "fp32"  # genrec.precision of the forward passes (auto | fp32 | bf16), not train.precision's

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "IdGenConfig":
        """From a recipe's ``idgen`` settings, checked against the fields above (:mod:`genrec.schema`)."""
        return schema.load(cls, d, "idgen")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def max_tries(self) -> int:
        return self.lambda_max * self.max_windows

    def schedule(self, attempt: int) -> tuple[int, int, int]:
        """(lambda, min_len, max_len) of try ``attempt`` (0-based)."""
        w = attempt // self.lambda_max
        return 1 + attempt % self.lambda_max, max(1, w * self.window), (w + 1) * self.window

    def window_name(self, attempt: int) -> str:
        _, lo, hi = self.schedule(attempt)
        return f"[{lo},{hi})"

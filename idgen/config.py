"""Settings of Algorithm 1 (kept free of torch so CLIs and configs can import it cheaply)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass
class IdGenConfig:
    """Settings of Algorithm 1 and its batched execution (paper values by default)."""

    groups: int = 10  # k: diverse beam search groups of one beam = candidates per try
    lambda_max: int = 10  # tries per length window (lambda = 1 .. lambda_max)
    window: int = 10  # width of the length windows [1, 10), [10, 20), ...
    max_windows: int = 5  # bound: after this many windows the last resort names the items still pending
    max_rounds: int | None = None  # bound on rounds (None: max_tries): then the last resort names all items pending
    max_text_tokens: int = 256  # item text truncation
    batch_size: int = 64  # items per forward pass (never changes the result)
    normalize: str = "words"  # "words": lowercase \w+ words joined by spaces (the reference); "strip": whitespace only
    version: int = 0  # training round stored in the IdTable

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "IdGenConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d or {}) - known
        if unknown:
            raise ValueError(f"unknown idgen settings {sorted(unknown)} (known: {sorted(known)})")
        return cls(**(d or {}))

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

"""The trainer's recipe sections (train, optim, deepspeed, pretrain, streamed data) and the full recipe schema.

``RECIPE`` combines what every layer declares (``genrec.recipe.CORE``, ``idgen.recipe.IDGEN``,
``zeroshot.harness.EVAL`` and the sections below); ``finetune`` / ``pretrain`` check a recipe with
:func:`checked_config` before any work is done, and ``idgenrec config show RECIPE [key=value ...]`` prints it
resolved, with every key's type and doc. A new key is a new field of the dataclass of its section, with a type, a
default and a trailing ``# doc`` comment (see :mod:`genrec.schema`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from genrec.recipe import CORE
from genrec.schema import Key, Section, combine, part
from idgen.recipe import IDGEN
from zeroshot.harness import EVAL

from .lm import LMConfig

Stage = Literal["generator", "recommender", "lm"]


@dataclass
class TrainSettings:
    """The schedule of alternating training (pretrain.engine)."""

    rounds: int = 3  # rounds of the stages in order
    order: list[Stage] = field(default_factory=lambda: ["generator", "recommender"])  # stages of a round
    skip_first_generator: bool = True  # round 0 trains the recommender on the initial IDs first
    id_epochs: int = 1  # epochs of a generator stage
    rec_epochs: int = 1  # epochs of a recommender stage
    lm_epochs: int = 1  # epochs of a language-pretraining stage (order: [lm], pretrain.lm)
    max_tokens: int = 8192  # padded tokens (prompt + target) per batch
    max_batch: int = 64  # samples per batch at most
    generator_max_tokens: int | None = 32768  # generator stage: padded item-text tokens per batch (distinct history
    # items * their longest text, pretrain.batching.ItemTextBudget); bounds the soft-ID pass's memory (null: none)
    chunk_size: int = 4096  # samples rendered and length-sorted together
    copy_relabel: float = 0.0  # recommender stage: probability that a sample's target-ID tokens shared with its
    # history are relabelled to random vocabulary pieces (pretrain.batching.CopyRelabel), so they can only be
    # predicted by copying: teaches "reuse a history word" for zero-shot transfer (0: off, the paper's training)
    max_steps_per_epoch: int | None = None  # cap on the optimizer steps of an epoch (null: the whole epoch)
    checkpoint_every: int = 0  # optimizer steps (0: only at stage ends and on signals)
    log_every: int = 20  # steps between loss / throughput logs
    threads: int | None = None  # CPU threads per process (null: cores / local processes)
    select_metric: str = "NDCG@10"  # validation metric that picks the exported model
    initial_eval: bool = False  # validate the untrained recommender first (the summary's initial_valid)
    stage_seconds: float | dict[str, float] | None = None  # training seconds per stage, or {recommender: s,
    # generator: s}: a stage ends its epochs once spent (equal-budget comparisons, bench/quality.py)
    budget_minutes: float | None = None  # wall-clock budget of the whole run (null: none)
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # forward passes of training and evaluation (bf16
    # autocast; weights, optimizer state, losses and beam scores stay float32); auto: bf16 where the hardware runs it
    # fast (CPU avx512_bf16/AMX, GPUs with bf16), else fp32. ID generation has its own: idgen.precision
    valid_every_seconds: float | None = None  # also validate (a learning-curve point; best model exported) every
    # this many training seconds
    final_test: bool = True  # score the selected export on the test split at the end


@dataclass
class OptimGroup:
    """Optimizer of one model (AdamW, warmup then the schedule)."""

    lr: float = 1e-3  # peak learning rate
    warmup_steps: int = 0  # linear warmup steps
    weight_decay: float = 0.0  # AdamW weight decay
    schedule: Literal["constant", "linear", "cosine"] = "linear"  # learning rate after warmup, over each stage's
    # planned steps (or its time cap)
    min_lr_ratio: float = 0.0  # linear / cosine decay ends at lr * min_lr_ratio


@dataclass
class OptimSettings:
    """One optimizer per model."""

    recommender: OptimGroup = field(default_factory=OptimGroup)  # the recommender's optimizer
    generator: OptimGroup = field(default_factory=lambda: OptimGroup(lr=1e-8))  # the generator's (paper lr: 1e-8)


@dataclass
class DeepspeedSettings:
    """DeepSpeed engines (pretrain.dsconfig)."""

    config: str = "zero2"  # configs/deepspeed/zero{0,2,3}.json or a path
    gradient_accumulation_steps: int = 1  # micro-batches per optimizer step
    gradient_clipping: float = 1.0  # gradient norm clipping
    zero_stage: int | None = None  # override the template's ZeRO stage (null: the template's)


@dataclass
class CorpusLmStage:
    """The Fusion recipe's language-pretraining stage on the corpus item text (before the warm-start)."""

    minutes: float = 0  # training minutes of the stage into RUN/lm, then init_lm=RUN/lm (0 skips it)
    config: str = "lm"  # the recipe it runs (model size, seed, tokenizer, deepspeed come from this run)
    overrides: list[str] = field(default_factory=list)  # key=value overrides of that recipe


@dataclass
class PretrainSettings:
    """Foundation pretraining on a Fusion corpus (idgenrec pretrain)."""

    valid_users: int = 0  # Fusion users used for model selection (0: all, -1: none, the export is the last model)
    lm: CorpusLmStage = field(default_factory=CorpusLmStage)  # language pretraining first (pretrain.lm)


@dataclass
class StreamSettings:
    """Streamed corpus shards (pretrain.shards.ShardSource)."""

    workers: int = 2  # DataLoader workers per rank that read, check and decode shards
    shuffle_buffer: int = 1000  # samples in each worker's shuffle buffer (on top of the per-epoch shard permutation)
    skip_corrupt: bool = False  # true: skip an unreadable shard with a warning instead of failing
    timeout: float = 600  # seconds a worker may take for one sample before the run fails


@dataclass
class SoftIdText:
    """Soft IDs' generator input."""

    max_text_tokens: int | None = None  # item text truncation in the generator stage (null: idgen.max_text_tokens)


TRAINER = part(
    corpus=Key(str | None, None, "a Fusion corpus folder (pretrain; set from --corpus)"),
    train=TrainSettings,
    optim=OptimSettings,
    deepspeed=DeepspeedSettings,
    pretrain=PretrainSettings,
    data=StreamSettings,
    softid=SoftIdText,
    lm=LMConfig,
)

RECIPE: Section = combine(CORE, IDGEN, EVAL, TRAINER)


def checked_config(name, overrides=()) -> dict[str, Any]:
    """:func:`genrec.config.load_config`, then every key checked against ``RECIPE`` (raises ``ConfigError``)."""
    from genrec.config import load_config

    cfg = load_config(name, overrides)
    RECIPE.validate(cfg)
    return cfg

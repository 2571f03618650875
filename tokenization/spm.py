"""SentencePiece tokenizer for item text + prompt words, in T5's layout and saved as a Hugging Face folder.

A unigram model (paper: 32,128 pieces) with byte fallback, so characters unseen in training become byte pieces
rather than a stream of ``<unk>``; ids pad 0, eos 1, unk 2 as in T5. The model is converted to a ``tokenizers``
graph (precompiled normaliser, metaspace, byte-fallback decoder) and saved with ``save_pretrained``, so
``AutoTokenizer.from_pretrained(folder)`` (and :func:`load_tokenizer`) load it exactly. ``T5TokenizerFast`` loads it
too, but transformers 5 rebuilds T5's unigram without byte fallback, so it agrees only on characters seen in training.
"""
from __future__ import annotations

import collections
import io
import logging
import tempfile
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from genrec.io import DataError, atomic_dir

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

log = logging.getLogger(__name__)

SPM_FILE = "spiece.model"
_NORMAL, _USER_DEFINED = 1, 4  # SentencePiece piece types that carry a trained score
MIN_VOCAB = 3 + 256 + 8  # specials + byte pieces + a few real pieces
SEED_SENTENCES = 200_000  # sentences the seed pieces are counted on (evenly sampled from bigger corpora)


def _seed_pieces(sentences: list[str], path: Path, max_piece_len: int = 16, limit: int = 1_000_000) -> None:
    """Seed pieces for the unigram trainer: every in-word substring (``▁``-prefixed at word starts) seen twice+.

    Written as ``piece<TAB>score`` (score = frequency x length, SentencePiece's own seed score). With the built-in
    suffix-array seeding, frequent whole words (``▁the``, ``▁title``) never became pieces on our data, so every
    prompt and item text was split into fragments; explicit seeds restore whole-word pieces.
    """
    from genrec import stop

    counts: collections.Counter[str] = collections.Counter()
    for n, sentence in enumerate(sentences):
        if n % 1000 == 0:
            stop.check()
        for word in unicodedata.normalize("NFKC", sentence).split():
            word = "▁" + word
            for i in range(len(word)):
                for j in range(i + 2, min(len(word), i + max_piece_len) + 1):
                    counts[word[i:j]] += 1
    ranked = sorted(((n * len(p), p) for p, n in counts.items() if n >= 2), reverse=True)[:limit]
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(f"{p}\t{score}\n" for score, p in ranked)


def _without_seed_path(model_proto: bytes) -> bytes:
    """Drop the temporary seed file's path from the saved trainer spec, so equal inputs give equal files."""
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model_proto)
    proto.trainer_spec.ClearField("seed_sentencepieces_file")
    return proto.SerializeToString()


def sentinel_tokens(n: int) -> list[str]:
    """T5's span-corruption sentinels ``<extra_id_0>`` .. ``<extra_id_{n-1}>``, in the order spans use them."""
    return [f"<extra_id_{i}>" for i in range(n)]


def sentinel_ids(tokenizer) -> list[int]:
    """The ids of a tokenizer's sentinels, ``<extra_id_0>`` first (T5 layout: descending from the last id)."""
    ids = []
    while (tid := tokenizer.convert_tokens_to_ids(f"<extra_id_{len(ids)}>")) not in (None, tokenizer.unk_token_id):
        ids.append(tid)
    return ids


def _to_fast(model_proto: bytes, extra_ids: int) -> "PreTrainedTokenizerFast":
    """A ``PreTrainedTokenizerFast`` equivalent to the SentencePiece model, byte fallback included."""
    from sentencepiece import sentencepiece_model_pb2
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import Unigram
    from transformers import PreTrainedTokenizerFast

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model_proto)
    vocab = [(p.piece, p.score if p.type in (_NORMAL, _USER_DEFINED) else 0.0) for p in proto.pieces]
    layout = [p.piece for p in proto.pieces[:3]]
    if layout != ["<pad>", "</s>", "<unk>"]:
        raise ValueError(f"SentencePiece model has specials {layout}, expected T5's <pad>, </s>, <unk>")
    backend = Tokenizer(Unigram(vocab, unk_id=2, byte_fallback=True))
    norm = [normalizers.Precompiled(proto.normalizer_spec.precompiled_charsmap)] if proto.normalizer_spec.precompiled_charsmap else []
    backend.normalizer = normalizers.Sequence([*norm, normalizers.Strip(), normalizers.Replace(Regex(" {2,}"), " ")])
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    backend.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    backend.post_processor = processors.TemplateProcessing(single=["$A", "</s>"], pair=["$A", "</s>", "$B", "</s>"], special_tokens=[("</s>", 1)])
    sentinels = sentinel_tokens(extra_ids)
    if sentinels:
        backend.add_special_tokens(list(reversed(sentinels)))  # T5's order: <extra_id_0> is the last id
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        extra_special_tokens=sentinels,
        model_max_length=512,
    )


def train_tokenizer(
    texts: Iterable[str],
    out_dir: str | Path,
    vocab_size: int = 32128,
    extra_texts: Iterable[str] = (),
    extra_weight: int = 20,
    extra_ids: int = 0,
    max_sentences: int = 2_000_000,
) -> "PreTrainedTokenizerFast":
    """Train on ``texts`` (item plain text) plus ``extra_texts`` (e.g. ``genrec.prompts.template_words()``).

    Each extra text counts ``extra_weight`` times, so the few template sentences, which occur in every prompt,
    get whole-word pieces. ``vocab_size`` is a soft limit (SentencePiece may return fewer pieces on small data);
    ``extra_ids`` appends that many ``<extra_id_N>`` sentinels after the pieces in T5's layout (as Hugging Face's
    ``T5Tokenizer(extra_ids=100)``: ``<extra_id_0>`` is the last id, ``<extra_id_{N-1}>`` the first after the
    pieces); span corruption (``pretrain.lm``) needs them. The folder holds ``spiece.model`` and the HF tokenizer files;
    it is written to a temporary name and renamed. Returns the loaded tokenizer.
    """
    if vocab_size < MIN_VOCAB:
        raise ValueError(f"vocab_size {vocab_size} too small: byte fallback alone needs 259 ids (use >= {MIN_VOCAB})")
    extras = [t for t in extra_texts if t and t.strip()]
    sentences = [t for t in texts if t and t.strip()] + extras * extra_weight
    if not sentences:
        raise DataError(out_dir, None, "no text to train the tokenizer on")
    buf = io.BytesIO()
    with tempfile.TemporaryDirectory() as tmp:
        seeds = Path(tmp) / "seeds.tsv"
        step = len(sentences) // SEED_SENTENCES
        _seed_pieces(sentences[::step] + extras * extra_weight if step > 1 else sentences, seeds)
        _train(sentences, buf, vocab_size, max_sentences, seeds)
    model = _without_seed_path(buf.getvalue())
    tok = _to_fast(model, extra_ids)
    with atomic_dir(out_dir) as tmp_out:
        (tmp_out / SPM_FILE).write_bytes(model)
        tok.save_pretrained(str(tmp_out))
    log.info("tokenizer: %d pieces (+%d sentinels) trained on %d texts -> %s", len(tok) - extra_ids, extra_ids, len(sentences), out_dir)
    return load_tokenizer(out_dir)


def _train(sentences: list[str], buf: io.BytesIO, vocab_size: int, max_sentences: int, seeds: Path) -> None:
    """SentencePiece training in a child process: it is one blocking C call, so a stop signal (``genrec.stop``)
    could not end it; the parent polls the stop flag and terminates the child."""
    import multiprocessing

    from genrec import stop

    out = seeds.parent / "model.bin"
    child = multiprocessing.get_context("spawn").Process(
        target=_train_child, args=(sentences, str(out), vocab_size, max_sentences, str(seeds)), daemon=True)
    child.start()
    try:
        while child.is_alive():
            child.join(0.2)
            stop.check()
    finally:
        if child.is_alive():
            child.terminate()
            child.join()
    if child.exitcode != 0 or not out.exists():
        raise RuntimeError(f"SentencePiece training failed (child exit code {child.exitcode})")
    buf.write(out.read_bytes())


def _train_child(sentences: list[str], out: str, vocab_size: int, max_sentences: int, seeds: str) -> None:
    import signal

    for sig in (signal.SIGINT, signal.SIGUSR1):  # a terminal's Ctrl-C or SLURM's signal reaches the parent, which ends us
        signal.signal(sig, signal.SIG_IGN)
    buf = io.BytesIO()
    _train_in_process(sentences, buf, vocab_size, max_sentences, Path(seeds))
    Path(out).write_bytes(buf.getvalue())


def _train_in_process(sentences: list[str], buf: io.BytesIO, vocab_size: int, max_sentences: int, seeds: Path) -> None:
    import sentencepiece as spm

    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=buf,
        vocab_size=vocab_size,
        model_type="unigram",
        byte_fallback=True,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        hard_vocab_limit=False,
        input_sentence_size=max_sentences,
        shuffle_input_sentence=True,
        seed_sentencepieces_file=str(seeds),
        num_threads=1,
        minloglevel=2,
    )


def load_tokenizer(name_or_path: str | Path) -> "PreTrainedTokenizerFast":
    """A folder written by :func:`train_tokenizer`, any T5 tokenizer folder, or a hub name (where a network exists)."""
    from transformers import AutoTokenizer

    path = Path(name_or_path)
    if path.exists() and not path.is_dir():
        raise DataError(path, None, "a tokenizer is a folder, not a file")
    try:
        return AutoTokenizer.from_pretrained(str(name_or_path))
    except (OSError, ValueError) as e:
        raise DataError(path, None, f"cannot load tokenizer ({e})") from None

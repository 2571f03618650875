"""Fuzzing every reader: sample files generated from synthetic data (genrec.synth) are mutated a few hundred times per
reader (byte flips, inserted bytes, truncations, duplicated/deleted/swapped lines, cut or duplicated fields, latin-1 and
UTF-16 re-encodings, corrupt gzip streams, empty files). Each run must either succeed (and its result survive a save and
reload in the canonical form) or raise DataError naming one of the input files and a line; the line may be missing only
for problems of the whole file. Never another exception."""
from __future__ import annotations

import gzip
import json
import random
from collections import Counter
from pathlib import Path
from typing import Callable

import pytest

from genrec.dataset import ITEM_FILE, USER_FILE, Dataset
from genrec.io import DataError
from genrec.readers import read_amazon2014, read_amazon2018, read_yelp
from genrec.synth import synthesize

RUNS = 250
WHOLE_FILE = ("empty file", "no valid", "interacted item(s) have no text", "no interactions left", "no reviews")


def sample() -> Dataset:
    """A small synthetic dataset; a few non-ASCII characters make the re-encodings matter."""
    ds = synthesize(25, 15, seed=3)
    for n, item in enumerate(ds.items.values()):
        if n % 3 == 0:
            item.fields["title"] = item.fields["title"].replace(",", " – Café,", 1)
    return ds


def timed(ds: Dataset) -> list[tuple[str, str, int]]:
    return [(user, key, 1_400_000_000 + 86_400 * (7 * u + i)) for u, (user, seq) in enumerate(ds.users.items())
            for i, key in enumerate(seq)]


def write_lines(path: Path, lines: list[str]) -> bytes:
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    return gzip.compress(data, mtime=0) if path.suffix == ".gz" else data


def amazon2014_files(ds: Dataset, folder: Path) -> dict[Path, bytes]:
    reviews, meta = folder / "reviews_Synth_5.json.gz", folder / "meta_Synth.json.gz"
    return {
        reviews: write_lines(reviews, [json.dumps({"reviewerID": u, "asin": a, "unixReviewTime": t, "overall": 4.0})
                                       for u, a, t in timed(ds)]),
        meta: write_lines(meta, [repr({"asin": k, "title": it.fields["title"], "brand": it.fields["brand"],
                                       "categories": [it.fields["categories"]], "salesRank": {"Synth": n}})
                                 for n, (k, it) in enumerate(ds.items.items())]),
    }


def amazon2018_files(ds: Dataset, folder: Path) -> dict[Path, bytes]:
    reviews, meta = folder / "Synth_5.json", folder / "meta_Synth.json"
    return {
        reviews: write_lines(reviews, [json.dumps({"reviewerID": u, "asin": a, "unixReviewTime": t, "verified": True})
                                       for u, a, t in timed(ds)]),
        meta: write_lines(meta, [json.dumps({"asin": k, "title": it.fields["title"], "brand": it.fields["brand"],
                                             "category": it.fields["categories"], "description": [it.fields["description"]]},
                                            ensure_ascii=False) for k, it in ds.items.items()]),
    }


def yelp_files(ds: Dataset, folder: Path) -> dict[Path, bytes]:
    import datetime

    business, review = folder / "business.json", folder / "review.json"
    when = lambda t: datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")  # noqa: E731
    return {
        business: write_lines(business, [json.dumps({"business_id": k, "name": it.fields["title"], "city": "Tempe",
                                                     "categories": ", ".join(it.fields["categories"]), "state": "AZ",
                                                     "attributes": {"WiFi": "u'free'", "Parking": "{'garage': False}"}},
                                                    ensure_ascii=False) for k, it in ds.items.items()]),
        review: write_lines(review, [json.dumps({"user_id": u, "business_id": a, "date": when(t), "stars": 5})
                                     for u, a, t in timed(ds)]),
    }


def idgenrec_files(ds: Dataset, folder: Path) -> dict[Path, bytes]:
    ds.save(folder)
    return {folder / name: (folder / name).read_bytes() for name in (ITEM_FILE, USER_FILE, "items.jsonl")}


def mutate(data: bytes, rng: random.Random, gz: bool) -> tuple[str, bytes]:
    """One random mutation of a file's bytes (of the compressed stream or of its content, for gzip files)."""
    if gz and rng.random() < 0.3:  # the compressed stream itself
        kind = rng.choice(["gz-flip", "gz-truncate"])
        return kind, (flip(data, rng) if kind == "gz-flip" else data[: rng.randrange(len(data))])
    text = gzip.decompress(data) if gz else data
    kind, text = mutate_content(text, rng)
    return kind, gzip.compress(text, mtime=0) if gz else text


def flip(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        out[rng.randrange(len(out))] ^= rng.randint(1, 255)
    return bytes(out)


def mutate_content(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    lines = data.splitlines(keepends=True)
    i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
    kind = rng.choice(["flip", "insert", "truncate", "duplicate-line", "delete-line", "swap-lines", "cut-field",
                       "duplicate-field", "latin-1", "utf-16", "empty"])
    if kind == "flip":
        return kind, flip(data, rng)
    if kind == "insert":
        at = rng.randrange(len(data))
        return kind, data[:at] + bytes(rng.randrange(256) for _ in range(rng.randint(1, 4))) + data[at:]
    if kind == "truncate":
        return kind, data[: rng.randrange(len(data))]
    if kind == "duplicate-line":
        lines.insert(j, lines[i])
    elif kind == "delete-line":
        del lines[i]
    elif kind == "swap-lines":
        lines[i], lines[j] = lines[j], lines[i]
    elif kind in ("cut-field", "duplicate-field"):  # a span between separators: a field, a key or a value
        line = lines[i]
        cuts = [n for n, b in enumerate(line) if b in b",: "] or [0]
        a = rng.choice(cuts)
        b = min((c for c in cuts if c > a), default=len(line) - 1)
        lines[i] = line[:a] + line[b:] if kind == "cut-field" else line[:b] + line[a:b] + line[b:]
    elif kind == "latin-1":
        return kind, data.decode("utf-8").encode("latin-1", errors="replace")
    elif kind == "utf-16":
        return kind, data.decode("utf-8").encode("utf-16")
    else:
        return kind, b""
    return kind, b"".join(lines)


READERS: dict[str, tuple[Callable, Callable]] = {
    "amazon2014": (amazon2014_files, lambda f, k, skip: read_amazon2014(*f, k=k, skip_bad_lines=skip)),
    "amazon2018": (amazon2018_files, lambda f, k, skip: read_amazon2018(*f, k=k, skip_bad_lines=skip)),
    "yelp": (yelp_files, lambda f, k, skip: read_yelp(*f, k=k, skip_bad_lines=skip)),
    "idgenrec": (idgenrec_files, lambda f, k, skip: Dataset.load(f[0].parent, skip_bad_lines=skip)),
}


def fuzz(reader: str, folder: Path, runs: int = RUNS, seed: int = 0) -> Counter:
    """``runs`` mutated reads; returns the outcome counts ('ok', 'DataError with line', 'DataError whole file')."""
    make, read = READERS[reader]
    (folder / "src").mkdir(parents=True)
    clean = make(sample(), folder / "src")
    paths = list(clean)
    rng = random.Random(f"{reader}:{seed}")
    outcomes: Counter = Counter()
    for run in range(runs):
        target = rng.choice(paths)
        kind, data = mutate(clean[target], rng, target.suffix == ".gz")
        for path, original in clean.items():
            path.write_bytes(data if path == target else original)
        skip, k = rng.random() < 0.5, rng.choice([0, 2])
        what = f"{reader} run {run}: {kind} of {target.name}, skip_bad_lines={skip}, k={k}"
        try:
            ds = read([p for p in paths if p.name != "items.jsonl"], k, skip)
        except DataError as e:
            assert e.path in {str(p) for p in paths}, f"{what}: error names {e.path!r}"
            if e.line is None:
                assert any(p in e.problem for p in WHOLE_FILE), f"{what}: no line for {e}"
                outcomes["DataError whole file"] += 1
            else:
                assert 1 <= e.line <= len(data.splitlines()) + 1 or target.suffix == ".gz", f"{what}: {e}"
                outcomes["DataError with line"] += 1
            continue
        except Exception as e:  # noqa: BLE001 - the point of the test: name the mutation that broke the reader
            raise AssertionError(f"{what}: {type(e).__name__}: {e}") from e
        out = folder / "saved"
        ds.save(out)
        again = Dataset.load(out)
        assert again.users == ds.users and {k: v.text for k, v in again.items.items()} == {k: v.text for k, v in ds.items.items()}, what
        outcomes["ok"] += 1
    return outcomes


@pytest.mark.parametrize("reader", list(READERS))
def test_mutated_files_give_data_errors_or_data(reader, tmp_path):
    outcomes = fuzz(reader, tmp_path)
    assert sum(outcomes.values()) == RUNS and outcomes["ok"] and outcomes["DataError with line"], outcomes


if __name__ == "__main__":  # the counts quoted in docs/bad-input.md: python tests/test_reader_fuzz.py
    import logging
    import tempfile

    logging.disable(logging.WARNING)
    for name in READERS:
        with tempfile.TemporaryDirectory() as scratch:
            print(name, dict(sorted(fuzz(name, Path(scratch)).items())))

"""Error type for bad input and a line reader that reports it, atomic writers and owned output folders: no command
shows a traceback for bad input, leaves a half-written output or deletes a file it did not write."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import IO, Any, Callable, Iterator

log = logging.getLogger(__name__)


class DataError(ValueError):
    """Bad input: names the file, the line (1-based, when there is one) and the problem."""

    def __init__(self, path: str | os.PathLike, line: int | None, problem: str):
        self.path, self.line, self.problem = str(path), line, problem
        where = f"{self.path}:{line}" if line else self.path
        super().__init__(f"{where}: {problem}")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary file beside ``path``; rename it over ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; the result should look like any other output
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: str | os.PathLike, obj: Any, default: Callable[[Any], Any] | None = None) -> None:
    """``obj`` as indented JSON at ``path``, written atomically (``default``: as in ``json.dump``)."""
    with atomic_write(path) as f:
        json.dump(obj, f, indent=2, default=default)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; it replaces ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


MANIFEST = ".idgenrec-output.json"
OVERWRITE_HELP = "write into a non-empty folder this command did not create (replaces only what the command writes)"


def read_manifest(folder: str | os.PathLike) -> dict | None:
    """The manifest an idgenrec command left in ``folder`` (``None`` when there is none or it is unreadable)."""
    try:
        data = json.loads((Path(folder) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("files"), list) else None


class OutputDir:
    """An output folder owned by one command: what it refuses, and how it replaces only what it writes.

    A folder is the command's own when its manifest (``.idgenrec-output.json``: the command and the top-level
    entries it wrote) names that command. A non-empty folder that is not its own is refused (``DataError``, so the
    CLI prints one line and exits 2) unless ``overwrite``; a resumable command (``resume`` not ``None``: training
    runs) also refuses its own previous run unless resumed or overwritten. Entries that neither the manifest nor the
    command's own output name are never touched, with or without ``overwrite``.

    Finished outputs are staged (:meth:`write`): written into a hidden folder beside (or, for an existing folder,
    inside) the target, then renamed into place entry by entry, the manifest last. Commands that work in place for
    a long time (a training run checkpoints into its folder so ``--resume`` can continue it) use :meth:`claim`.
    """

    def __init__(self, path: str | os.PathLike, command: str, overwrite: bool = False, resume: bool | None = None):
        self.given, self.command, self.resume = str(path), command, resume
        self.path = Path(os.path.abspath(path))  # '.' and '..' have no name; their absolute form does
        if resume and overwrite:
            raise DataError(self.given, None, "--resume and --overwrite contradict each other: give one")
        if self.path.exists() and not self.path.is_dir():
            raise DataError(self.given, None, "exists and is not a folder")
        self.previous = read_manifest(self.path)
        self.own = self.previous is not None and self.previous.get("command") == command
        if overwrite or resume or not self.path.is_dir() or not any(self.path.iterdir()):
            return
        if self.own and resume is None:
            return
        if self.own:
            raise DataError(self.given, None, f"holds a previous 'idgenrec {command}' run; pass --resume to continue "
                                              "it or --overwrite to start over")
        raise DataError(self.given, None, f"folder is not empty and was not written by 'idgenrec {command}'; pass "
                                          "--overwrite to write into it (files the command does not write are kept)")

    def _previous_files(self) -> set[str]:
        """The entries the manifest names, if the folder is this command's: plain names only, never a path."""
        if not self.own:
            return set()
        names = {name for name in self.previous["files"] if isinstance(name, str)}
        return {name for name in names if name not in ("", ".", "..", MANIFEST) and Path(name).name == name}

    def _write_manifest(self, folder: Path, files: list[str]) -> None:
        with atomic_write(folder / MANIFEST) as f:
            json.dump({"command": self.command, "files": sorted(files),
                       "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, f, indent=2)

    @contextlib.contextmanager
    def write(self) -> Iterator[Path]:
        """Yield an empty staging folder; on success its entries replace the target's, else nothing changes."""
        if not self.path.exists():
            with atomic_dir(self.path) as tmp:
                yield tmp
                self._write_manifest(tmp, [p.name for p in tmp.iterdir()])
            return
        tmp = Path(tempfile.mkdtemp(prefix=".idgenrec-staging-", dir=self.path))
        os.chmod(tmp, 0o777 & ~_umask())
        try:
            yield tmp
            new = [p.name for p in tmp.iterdir()]
            self._replace(self._previous_files() - set(new), moves={name: tmp / name for name in new})
            self._write_manifest(self.path, new)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def claim(self, entries: list[str]) -> None:
        """For commands writing in place: remove this command's old ``entries`` (unless resuming), record them."""
        self.path.mkdir(parents=True, exist_ok=True)
        ours = set(entries) | self._previous_files()
        if not self.resume:
            self._replace(ours, moves={})
        self._write_manifest(self.path, sorted(ours))

    def _replace(self, remove: set[str], moves: dict[str, Path]) -> None:
        """Rename each ``moves`` source over its entry and move ``remove`` away; both only touch the named entries."""
        trash = Path(tempfile.mkdtemp(prefix=".idgenrec-replaced-", dir=self.path))
        try:
            for name, src in moves.items():
                dst = self.path / name
                if os.path.lexists(dst) and (src.is_dir() or (dst.is_dir() and not dst.is_symlink())):
                    os.replace(dst, trash / name)  # rename cannot put a folder over a non-empty folder or a file
                os.replace(src, dst)
            for name in remove:
                if os.path.lexists(self.path / name):
                    os.replace(self.path / name, trash / name)
        finally:
            shutil.rmtree(trash, ignore_errors=True)


def check_output_file(path: str | os.PathLike, command: str, overwrite: bool, header: str) -> None:
    """Refuse to replace an existing file that this command did not write (its first line is not ``header``)."""
    path = Path(path)
    if overwrite or not path.exists():
        return
    if path.is_dir():
        raise DataError(path, None, "is a folder; give a file name")
    with open(path, "rb") as f:
        first = f.read(len(header.encode()))
    if first and first != header.encode():
        raise DataError(path, None, f"exists and was not written by 'idgenrec {command}'; pass --overwrite to replace it")


class BadLines:
    """Where bad lines go: raised by default; with ``skip`` counted per file (the first one kept for the report)."""

    def __init__(self, skip: bool = False):
        self.skip = skip
        self.counts: Counter[str] = Counter()
        self.first: dict[str, DataError] = {}

    def __call__(self, error: DataError) -> None:
        if not self.skip:
            raise error
        self.counts[error.path] += 1
        self.first.setdefault(error.path, error)
        log.debug("skipped %s", error)

    def report(self) -> None:
        """One warning per file with skipped lines: how many, and the first one."""
        for path, n in self.counts.items():
            first = self.first[path]
            log.warning("skipped %d bad line(s) in %s (first: line %s: %s)", n, path, first.line, first.problem)


def read_lines(path: str | os.PathLike, bad: BadLines) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of a UTF-8 file (``*.gz`` gunzipped), read as bytes so an undecodable line is reported
    (or skipped) at its own line; a file that cannot be read any further is a :class:`DataError` at the line it stops."""
    import gzip
    import zlib

    from tqdm import tqdm

    path = Path(path)
    if not path.is_file():
        raise DataError(path, None, "file not found" if not path.exists() else "not a file")
    lineno = 0
    try:
        f = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")
    except OSError as e:
        raise DataError(path, None, f"cannot open ({type(e).__name__}: {e.strerror or e})") from None
    with f, tqdm(desc=f"reading {path.name}", unit=" lines", mininterval=2, disable=None) as bar:
        while True:
            try:
                raw = f.readline()
            except (EOFError, OSError, zlib.error) as e:  # truncated or corrupt gzip: nothing after this is readable
                raise DataError(path, lineno + 1, f"unreadable ({type(e).__name__}: {e})") from None
            if not raw:
                return
            lineno += 1
            bar.update()
            try:
                text = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as e:
                bad(DataError(path, lineno, f"not UTF-8 (byte {raw[e.start]:#04x} at column {e.start + 1})"))
                continue
            yield lineno, text

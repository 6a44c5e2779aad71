"""JSONL and dataset I/O shared by every stage: line-numbered reads that never raise on a bad line, atomic writes,
and append-only writers that survive `kill -9` (a torn last line is detected and ignored on the next read).

orjson instead of json/jsonlines: 5-10x faster parse/dump, which is most of the cost of the rule scorers and resume scans.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

BOM = b"\xef\xbb\xbf"  # the UTF-8 byte-order mark


@dataclass
class BadRow:
    """The one bad-row type every reader and stage reports: a row that could not be used (not JSON, not an object, a
    missing or malformed field, a schema check it fails), at its 1-based `line` (the row number in parquet files and
    saved datasets), why, its `id` when known and its file when known. `as_dict()` is the summary's problem entry."""

    line: int
    reason: str
    id: str | None = None
    path: str | None = None

    def as_dict(self) -> dict:
        return {"line": self.line, "id": self.id, "reason": self.reason}

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}" if self.path else f"line {self.line}: {self.reason}"


def listed(problems: list[str], sep: str, limit: int = 10) -> str:
    """The first `limit` problems joined by `sep`, then `<sep>... and N more`: an error message that names what is
    wrong without flooding the terminal."""
    more = f"{sep}... and {len(problems) - limit} more" if len(problems) > limit else ""
    return sep.join(problems[:limit]) + more


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict | BadRow]]:
    """Yield (1-based line number, row dict or BadRow) for each non-blank line; never raises on content.

    A UTF-8 byte-order mark before line 1 is skipped. A final line without a trailing newline is a torn write (a killed appender) when it does not parse; it is
    reported as a BadRow like any other so callers can decide (resume readers skip it, validate reports it).
    """
    path = str(path)
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if lineno == 1 and raw.startswith(BOM):  # editors on Windows save one; orjson refuses it: row 1 was lost
                raw = raw[len(BOM) :]
            if not raw.strip():
                continue
            try:
                row = orjson.loads(raw)
            except orjson.JSONDecodeError as e:
                torn = "" if raw.endswith(b"\n") else " (unterminated last line: an interrupted write?)"
                yield lineno, BadRow(lineno, f"invalid JSON: {e}{torn}", path=path)
                continue
            if not isinstance(row, dict):
                yield lineno, BadRow(lineno, f"expected a JSON object, got {type(row).__name__}", path=path)
                continue
            yield lineno, row


def checked_rows(path: str | Path, check) -> Iterator[tuple[int, dict | BadRow]]:
    """`iter_jsonl`, with rows that fail `check` (a `distill.records.ROW_CHECKS` function: row -> reasons) turned
    into BadRows naming the row's id and every reason: the one way stages read rows."""
    for line, item in iter_jsonl(path):
        if not isinstance(item, BadRow) and (reasons := check(item)):
            row_id = item.get("id")
            who = f"row {row_id!r}: " if isinstance(row_id, str) else ""
            item = BadRow(line, who + "; ".join(reasons), row_id if isinstance(row_id, str) else None, str(path))
        yield line, item


def read_jsonl(path: str | Path) -> list[dict]:
    """All good rows of a JSONL file (bad lines skipped; use `iter_jsonl` to see them)."""
    return [row for _, row in iter_jsonl(path) if isinstance(row, dict)]


def dumps(row: dict) -> bytes:
    """One JSONL line (with newline). Keys keep insertion order, so outputs are byte-stable across reruns."""
    return orjson.dumps(row, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n"


def current_umask() -> int:
    """The process umask, read without changing it where Linux shows it (`os.umask` sets and restores it, a race
    with other threads creating files)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def umask_mode(paths: Iterable[str | Path]) -> None:
    """Give files another library created private (safetensors writes 0600) the mode `open` would give them."""
    mode = 0o666 & ~current_umask()
    for p in paths:
        os.chmod(p, mode)


def atomic_temp(path: Path, binary: bool = True):
    """(open file, temp path) beside `path` for an atomic write, with the mode an ordinary `open` would give
    (0666 minus the umask): `mkstemp` makes files 0600, which another user or a serving container cannot read."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
    except BaseException:
        os.close(fd)
        Path(tmp).unlink(missing_ok=True)
        raise
    return (os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8")), tmp


def write_jsonl_atomic(path: str | Path, rows: Iterable[dict]) -> int:
    """Write rows to `path` through a temp file in the same directory + fsync + rename; returns the row count.

    Readers never see a half-written file, and a killed writer leaves the old file (or none) in place.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    file, tmp = atomic_temp(path)
    n = 0
    try:
        with file as f:
            for row in rows:
                f.write(dumps(row))
                n += 1
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return n


def write_text_atomic(path: str | Path, text: str, private: bool = False) -> None:
    """Atomically replace a small text file (reports, manifests, summaries); `private`: mode 0600 (it holds a secret)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    file, tmp = atomic_temp(path, binary=False)
    try:
        if private:
            os.fchmod(file.fileno(), 0o600)
        with file as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | Path, obj) -> None:
    write_text_atomic(path, orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY).decode() + "\n")


class AppendLog:
    """Append-only JSONL file for journals: each `append` is one complete line, flushed (and optionally fsynced).

    On open, a torn last line left by a killed process is cut off, so later appends start on a clean line.
    """

    def __init__(self, path: str | Path, fsync: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._truncate_torn_tail()
        self._f = open(self.path, "ab")
        self._fsync = fsync

    def _truncate_torn_tail(self) -> None:
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        with open(self.path, "rb+") as f:
            # Read backwards from the end, a block at a time: journals run to gigabytes, a torn tail is one line.
            end = pos = f.seek(0, os.SEEK_END)
            while pos > 0:
                step = min(1 << 20, pos)
                pos -= step
                f.seek(pos)
                block = f.read(step)
                if pos + step == end and block.endswith(b"\n"):
                    return
                cut = block.rfind(b"\n")
                if cut >= 0:
                    f.truncate(pos + cut + 1)
                    return
            f.truncate(0)

    def append(self, row: dict) -> int:
        """Write `row` as one line; returns the line's length in bytes (callers track offsets without re-encoding)."""
        line = dumps(row)
        self._f.write(line)
        self._f.flush()
        if self._fsync:
            os.fsync(self._f.fileno())
        return len(line)

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> AppendLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def iter_table(path: str | Path) -> Iterator[tuple[int, dict | BadRow]]:
    """Rows of a .jsonl file, a .parquet file or a `datasets.save_to_disk` directory as (1-based line/row, row).

    JSONL is read line by line so one bad line is reported instead of failing the file; parquet and saved datasets
    are read with `datasets` (their row index stands in for the line number).
    """
    path = Path(path)
    if path.is_dir():
        from datasets import load_from_disk

        ds = load_from_disk(str(path))
        if hasattr(ds, "keys"):  # a DatasetDict: take the only split, or 'train'
            ds = ds["train"] if "train" in ds else ds[next(iter(ds.keys()))]
        for i, row in enumerate(ds, start=1):
            yield i, row
    elif path.suffix == ".parquet":
        from datasets import Dataset

        for i, row in enumerate(Dataset.from_parquet(str(path)), start=1):
            yield i, row
    elif path.suffix in (".jsonl", ".json"):
        yield from iter_jsonl(path)
    else:
        raise ValueError(f"{path}: unsupported input (expected .jsonl, .parquet or a saved HF dataset directory)")

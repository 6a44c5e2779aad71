"""Content-keyed journal of paid teacher answers: what makes `generate` (and `complete_many`) resumable.

Key = sha256 over (model, keyed messages with images as `image-sha256:` digests, sampling params, sample index): the
same request always has the same key, whatever row order, shard, num_samples or parser is used. A record stores the
*unparsed* response (content, reasoning_content, finish_reason, usage), so changing the parser or the output schema
reuses every answer (curator-style). Only answers (ok / truncated) are journaled; failures are retried on the next run.

Records are appended one flushed line each through `distill.io.AppendLog`: after `kill -9` at any moment the journal
holds complete lines plus at most one torn tail, which AppendLog cuts on open. Lines are flushed, not fsynced: a killed
process loses nothing (the OS has the bytes); a machine crash may lose the last answers, which are then re-sent. Only key -> byte offset is held in
memory, so a journal of millions of answers stays cheap; `get` reads the record back from disk.
One writer per journal (an flock refuses a second): shards write their own (their outputs differ), `distill merge`
joins the outputs. A line that is not a usable answer (e.g. `content` a number, journaled by an older version that did
not check response shapes) is skipped when the journal opens, so its key counts as missing and is asked again: an old
poisoned entry heals on the next run instead of crashing every rerun.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
from pathlib import Path

import orjson

from distill.io import AppendLog

log = logging.getLogger(__name__)


class JournalLocked(RuntimeError):
    """Another process holds the journal (one writer per journal); str() is one line naming the file."""


def journal_path(output: str | Path) -> Path:
    """`<stem>.journal.jsonl` beside a trace output `<stem>.jsonl` (or beside `output` when it has another name)."""
    out = Path(output)
    return out.with_name(f"{out.name.removesuffix('.jsonl')}.journal.jsonl")


def usable(record) -> bool:
    """A journal record the readers can use: an object with a key, `content` / `reasoning_content` strings or null."""
    return (
        isinstance(record, dict)
        and isinstance(record.get("key"), str)
        and all(isinstance(record.get(k), str | None) for k in ("content", "reasoning_content"))
        and record.get("status", "ok") in ("ok", "truncated")
    )


def request_key(model: str, messages: list[dict], sampling: dict, sample_index: int = 0) -> str:
    """The content key of one request. `messages` must be keyed (image refs, never base64)."""
    payload = {"model": model, "messages": messages, "sampling": sampling, "sample_index": sample_index}
    return hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()


class Journal:
    """Append-only answer store: `key in journal`, `get(key)`, `put(key, record)`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.open("ab").close()  # create if missing; unlike touch() it leaves a running writer's mtime alone
        self._reader = open(self.path, "rb")
        try:  # two writers would interleave lines: refuse clearly (the lock dies with its process, kill -9 included)
            fcntl.flock(self._reader.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._reader.close()
            raise JournalLocked(f"{self.path} is in use by another process (one writer per journal)") from None
        self._log = AppendLog(self.path)  # cuts a torn tail first, so the scan below sees whole lines only
        self._offsets: dict[str, int] = {}
        self._size = 0
        self.skipped = 0  # lines that are not usable answers (see `usable`): their keys are asked again
        with open(self.path, "rb") as f:
            for line in f:
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError:
                    record = None
                if usable(record):
                    self._offsets.setdefault(record["key"], self._size)
                elif line.strip():
                    self.skipped += 1
                self._size += len(line)
        self.opened_size = self._size  # answers at offsets below this were journaled before this process opened it
        if self.skipped:
            log.warning("%s: skipped %d unusable line(s) (not an answer of the expected shape); their requests are "
                        "sent again", self.path, self.skipped)  # fmt: skip

    def __contains__(self, key: str) -> bool:
        return key in self._offsets

    def __len__(self) -> int:
        return len(self._offsets)

    def keys(self) -> set[str]:
        return set(self._offsets)

    def from_before(self, key: str) -> bool:
        """True when `key` was journaled before this journal was opened (by an earlier run), not by this run."""
        return self._offsets.get(key, self.opened_size) < self.opened_size

    def get(self, key: str) -> dict | None:
        offset = self._offsets.get(key)
        if offset is None:
            return None
        self._reader.seek(offset)
        return orjson.loads(self._reader.readline())

    def put(self, key: str, record: dict) -> None:
        """Append `record` (a dict; `key` is added) unless the key is already journaled."""
        if key in self._offsets:
            return
        self._offsets[key] = self._size
        self._size += self._log.append({"key": key, **record})

    def close(self) -> None:
        self._log.close()
        self._reader.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

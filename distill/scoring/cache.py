"""Content-keyed cache of expensive scores (embedding_gain, llm_judge): the teacher journal's idea for `distill score`.

    with ScoreCache(Path("runs/x/score/score_cache"), "embedding_gain", params) as cache:
        keys = [cache.key(row) for row in rows]; hits = [cache.get(k) for k in keys]; ...; cache.put(key, value)

Key = sha256 over (registry name, parameters, the content of any file a parameter names, the row without its
`scores`, and `extra`: what else the value depends on). Adding a scorer to an already scored file changes only
`scores`, so every other expensive value is a hit; a rerun after a crash finds the values of the chunks that
finished. A scorer whose value depends on other rows passes their digests as `extra` (embedding_gain: the pool
positives among the row's candidates), so a changed row recomputes only itself and the rows that use it as a
candidate. One append-only file per scorer (`distill.client.journal.Journal`: key -> offset in
memory, values read back from disk, torn tails cut, one writer).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import orjson

from distill.client.journal import Journal


def _file_digest(value) -> str | None:
    if not isinstance(value, str) or len(value) > 4096:
        return None
    from distill.teacher.prompts import resolve_prompt_file

    path = resolve_prompt_file(value)
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
    except OSError:
        return None


def row_digest(row: dict) -> bytes:
    """sha256 of the row without its `scores` (what a scorer's inputs are)."""
    body = {k: v for k, v in row.items() if k != "scores"}
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY)).digest()


class ScoreCache:
    def __init__(self, directory: Path, name: str, params: dict):
        ident = {"scorer": name, "params": params, "files": {k: _file_digest(v) for k, v in params.items()}}
        self._prefix = hashlib.sha256(orjson.dumps(ident, option=orjson.OPT_SORT_KEYS, default=str)).digest()
        self._journal = Journal(Path(directory) / f"{name}.jsonl")
        self.hits = self.misses = 0

    def key(self, row: dict, extra: bytes = b"") -> str:
        """The row's key; `extra`: digests of the other inputs its value depends on (none for row-local scorers)."""
        return hashlib.sha256(self._prefix + row_digest(row) + extra).hexdigest()

    def get(self, key: str):
        """(True, value) when cached, else (False, None)."""
        record = self._journal.get(key)
        if record is None:
            self.misses += 1
            return False, None
        self.hits += 1
        return True, record.get("value")

    def put(self, key: str, value) -> None:
        self._journal.put(key, {"value": value})

    def close(self) -> None:
        self._journal.close()

    def __enter__(self) -> ScoreCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

"""embedding_gain's candidate pools in bounded memory: 16-byte digests and line numbers instead of rows.

    pool = PositivePool(RowReader("traces.jsonl"))          # or PositivePool(rows.__getitem__) for rows in memory
    pool.add([("MSCOCO_t2i", item_digest("MSCOCO_t2i", item), 7), ...])   # pass 1: (dataset, digest, line) per row
    k = pool.position(digest); pool.digest(dataset, (k + 1) % pool.size(dataset)); pool.row(dataset, k + 1)

A dataset's pool is its distinct positive items in order of first appearance in the input. What a row needs from it
(the positives that follow its own, cyclically) is found by digest; the item itself is read back from the input line
that first carried it (one seek + readline + parse), so only ~150 bytes per distinct positive (digest, line, dict slot)
and 8 bytes per input line stay in memory, whatever the number of samples or the size of the rows.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Callable, Iterable
from pathlib import Path

import orjson

DIGEST = 16  # bytes: a collision among 1e6 items has probability ~1e-27


def item_digest(dataset, item) -> bytes:
    """The digest of an (text, images) item within its dataset: equal digests <=> equal items of the same dataset."""
    return hashlib.blake2b(orjson.dumps([dataset, item[0], list(item[1])]), digest_size=DIGEST).digest()


class RowReader:
    """The rows of a JSONL file by 1-based line number (the numbering of `distill.io.iter_jsonl`): one scan builds a
    line -> byte offset index (8 bytes per line), then each read is a seek and one line."""

    def __init__(self, path: str | Path):
        self._offsets = array("q", [0])  # index 0 unused: line numbers start at 1
        pos = 0
        with open(path, "rb") as f:
            for raw in f:
                self._offsets.append(pos)
                pos += len(raw)
        self._file = open(path, "rb")

    def __call__(self, line: int) -> dict:
        self._file.seek(self._offsets[line])
        return orjson.loads(self._file.readline())

    def close(self) -> None:
        self._file.close()


class PositivePool:
    """Per dataset, the distinct positives (digest, first line) in order of first appearance; `fetch(line)` reads a
    row back."""

    def __init__(self, fetch: Callable[[int], dict]):
        self.fetch = fetch
        # dataset -> (concatenated digests, first line of each): two flat buffers, no object per item
        self._pools: dict = {}
        # digest -> position in its dataset's pool (the digest covers the dataset)
        self._position: dict[bytes, int] = {}

    def add(self, features: Iterable[tuple]) -> None:
        """(dataset, digest or None, line) per row, in input order; None (a row without a positive) adds nothing."""
        for dataset, digest, line in features:
            if digest is None or digest in self._position:
                continue
            digests, lines = self._pools.setdefault(dataset, (bytearray(), array("q")))
            self._position[digest] = len(lines)
            digests += digest
            lines.append(line)

    def size(self, dataset) -> int:
        return len(self._pools[dataset][1]) if dataset in self._pools else 0

    def position(self, digest: bytes) -> int | None:
        return self._position.get(digest)

    def digest(self, dataset, k: int) -> bytes:
        return bytes(self._pools[dataset][0][k * DIGEST : (k + 1) * DIGEST])

    def row(self, dataset, k: int) -> dict:
        """The first row whose positive is the dataset's k-th pool item."""
        return self.fetch(self._pools[dataset][1][k])

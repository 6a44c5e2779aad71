"""Images embedded in parquet files (a `datasets` Image column: a struct {bytes, path}), read a row at a time with no
extraction step. MMEB-V2's visual-document corpora ship their pages this way (ViDoRe, VisRAG, ViDoSeek, MMLongBench).

    ref = embedded_ref("visdoc/ViDoRe_arxivqa/corpus/test-00000-of-00001.parquet", 12)   # 'parquet:...#12'
    data = row_bytes(Path("/data/mmeb") / "visdoc/.../test-00000-of-00001.parquet", 12)  # the encoded page image

A reference `parquet:<file>#<row>` names row <row> (0-based, within that file) of the file's `image` column; <file>
is relative to image_root like any image path, so `distill.images` resolves and checks it the same way and every
stage (generate, score, eval, export, embed) opens it through `distill.images.load_image`. Reading one image reads
that row group's image column only (`datasets` writes image parquet in groups of 100 rows); the last groups read are
kept in an LRU bounded by CACHE_BYTES, so walking a corpus in order reads each group once and memory stays bounded
whatever the corpus size.
"""

from __future__ import annotations

import bisect
import threading
from collections import OrderedDict
from pathlib import Path

PREFIX = "parquet:"
COLUMN = "image"
CACHE_BYTES = 256 * 2**20  # decoded row groups kept: ~2-10 groups of page images
OPEN_FILES = 16  # parquet footers kept (a corpus is a handful of shards)

_lock = threading.Lock()  # generate encodes images in a thread pool
_files: OrderedDict[Path, tuple] = OrderedDict()  # path -> (ParquetFile, row-group start rows, total rows)
_groups: OrderedDict[tuple[Path, int], tuple] = OrderedDict()  # (path, group) -> (bytes array, path array | None)
_cached = 0


def embedded_ref(rel_file: str, row: int) -> str:
    return f"{PREFIX}{rel_file}#{row}"


def parse_ref(ref: str) -> tuple[str, int]:
    """(file relative to image_root, 0-based row) of a `parquet:<file>#<row>` ref; ValueError when malformed."""
    body = ref[len(PREFIX) :] if ref.startswith(PREFIX) else ""
    rel, sep, row = body.rpartition("#")
    if not (rel and sep and row.isdigit()):
        raise ValueError(f"{ref!r} is not a parquet:<file>#<row> image reference")
    return rel, int(row)


def _file(path: Path) -> tuple:
    import pyarrow.parquet as pq

    if path not in _files:
        pf = pq.ParquetFile(path)
        if COLUMN not in pf.schema_arrow.names:
            raise ValueError(f"no {COLUMN!r} column (columns: {', '.join(pf.schema_arrow.names)})")
        sizes = [pf.metadata.row_group(g).num_rows for g in range(pf.num_row_groups)]
        starts = [sum(sizes[:g]) for g in range(len(sizes))]
        _files[path] = (pf, starts, sum(sizes))
        while len(_files) > OPEN_FILES:
            _files.popitem(last=False)
    _files.move_to_end(path)
    return _files[path]


def _read_group(pf, group: int) -> tuple:
    """(bytes array, path array or None) of one row group's image column, kept as Arrow arrays: a row's bytes are
    copied out only when asked for, so a group costs its encoded size once."""
    import pyarrow as pa
    import pyarrow.compute as pc

    column = pf.read_row_group(group, columns=[COLUMN]).column(0)  # chunked: no combining copy
    if pa.types.is_struct(column.type):
        names = [column.type.field(i).name for i in range(column.type.num_fields)]
        if "bytes" not in names:
            raise ValueError(f"column {COLUMN!r} has no 'bytes' field (fields: {', '.join(names)})")
        return pc.struct_field(column, "bytes"), pc.struct_field(column, "path") if "path" in names else None
    if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
        return column, None
    raise ValueError(f"column {COLUMN!r} holds {column.type}, not embedded images ({{bytes, path}} or binary)")


def row_bytes(path: Path, row: int) -> bytes:
    """The encoded image in `row` of `path`'s image column; ValueError / OSError say why it cannot be had."""
    global _cached
    with _lock:
        pf, starts, total = _file(path)
        if not 0 <= row < total:
            raise ValueError(f"row {row} out of range (the file has {total} rows)")
        group = bisect.bisect_right(starts, row) - 1
        key = (path, group)
        if key not in _groups:
            _groups[key] = _read_group(pf, group)
            _cached += _groups[key][0].nbytes
            while _cached > CACHE_BYTES and len(_groups) > 1:
                _cached -= _groups.popitem(last=False)[1][0].nbytes
        _groups.move_to_end(key)
        data_array, paths = _groups[key]
        data = data_array[row - starts[group]].as_py()
        name = paths[row - starts[group]].as_py() if paths is not None and not data else None
    if not data:
        raise ValueError(f"row {row} has no embedded image bytes" + (f" (only a path: {name!r})" if name else ""))
    return data


def clear() -> None:
    """Drop cached footers and row groups (tests; a file rewritten in place)."""
    global _cached
    with _lock:
        _files.clear()
        _groups.clear()
        _cached = 0

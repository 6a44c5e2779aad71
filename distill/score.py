"""`distill score`: run named scorers over trace rows and add a `scores` dict to each row; nothing is dropped.

    distill score --input runs/demo/traces.jsonl --output runs/demo/scored.jsonl --config recipes/demo/score.yaml

Rows keep their order and fields; `scores` gains one entry per configured scorer (entries already present for other
names are kept, so scorers can be added in later runs). Output is written atomically, and a rerun on the same input
gives a byte-identical file. Lines that are not JSON objects, or rows that are not trace rows (`distill.records`:
`"trace": "str"`, `"id": 3`, ...), cannot be scored or passed on: each is reported with its
line number and reason (log + the summary); `--strict` stops on them with exit status 1 before writing.
Also written (the stage contract, `distill.stage`): `<output stem>.config.yaml` (the resolved config) and
`<output stem>.summary.json` (rows, bad lines, per-scorer time, rows/s, not-applicable counts and value ranges).

score.yaml: `scorers` maps an output name to the scorer's parameters (null for none). The output name is the
scorer's registry name, or any name with `scorer: <registry name>` among the parameters, so one scorer can run twice
(e.g. two embedders).
"""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from distill.io import BadRow, checked_rows, write_jsonl_atomic
from distill.records import trace_problems
from distill.score_config import ScoreConfig
from distill.stage import DataError, Paths, Stage, StageError, every_row_dropped, reason_class
from distill.stage import summary as stage_summary

log = logging.getLogger(__name__)


def build_scorers(config: ScoreConfig) -> dict:
    """Output name -> built scorer, in config order."""
    from distill.scoring import build_scorer  # importing the package registers every scorer family

    context = {"image_root": config.image_root, "work_dir": str(Path(config.output).parent),
               "min_pixels": config.min_pixels, "max_pixels": config.max_pixels}  # fmt: skip
    built = {}
    for name, params in config.scorers.items():
        params = dict(params or {})
        built[name] = build_scorer(params.pop("scorer", name), context=context, **params)
    return built


# How each scorer runs (`_kind`), all in bounded memory except the last:
# - "chunk": the value depends on the row alone (ROW_LOCAL): run chunk by chunk;
# - "global": `features`/`combine` (near_duplicate, self_consistency): compact per-row features of every row in pass 1,
#   one `combine` over them, values handed out in pass 2;
# - "pooled": `pool_features`/`score_chunk` (embedding_gain): pass 1 builds a compact pool (digests, line numbers) of
#   what a row may need from other rows; pass 2 scores chunk by chunk, reading those rows back from the input;
# - "whole": any other callable (a third-party scorer registered as a plain function that is not row-local) is
#   handed every row at once: the one exception that holds rows in memory.
ROW_LOCAL = frozenset({"format", "truncated", "length", "repetition", "answer_match", "llm_judge"})
# Expensive scorers whose values are cached by content (distill.scoring.cache) under <output dir>/score_cache/.
CACHED = frozenset({"embedding_gain", "llm_judge"})
CHUNK_ROWS = 8192  # rows per chunk: big enough for batched scorers, small enough that a chunk is a few MB


class _Stats:
    """Per-scorer summary figures accumulated chunk by chunk (same numbers as over one list)."""

    def __init__(self):
        self.rows = self.none = self.count = 0
        self.total, self.lo, self.hi, self.seconds = 0, None, None, 0.0

    def add(self, values: list, seconds: float) -> None:
        self.rows += len(values)
        self.seconds += seconds
        for v in values:
            if v is None:
                self.none += 1
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                self.count += 1
                self.total += v
                self.lo = v if self.lo is None or v < self.lo else self.lo
                self.hi = v if self.hi is None or v > self.hi else self.hi

    def as_dict(self) -> dict:
        out = {"seconds": round(self.seconds, 3), "rows_per_s": round(self.rows / max(self.seconds, 1e-9)),
               "none": self.none}  # fmt: skip
        if self.count:
            out |= {"min": self.lo, "max": self.hi, "mean": round(self.total / self.count, 6)}
        return out


def _kind(config: ScoreConfig, name: str, scorer) -> str:
    if hasattr(scorer, "features") and hasattr(scorer, "combine"):
        return "global"
    if hasattr(scorer, "pool_features") and hasattr(scorer, "score_chunk"):
        return "pooled"
    return "chunk" if _registry_name(config, name) in ROW_LOCAL else "whole"


def _registry_name(config: ScoreConfig, name: str) -> str:
    return (config.scorers.get(name) or {}).get("scorer", name)


def _attach(rows: list[dict], name: str, values: list) -> None:
    for row, value in zip(rows, values, strict=True):
        scores = row.get("scores")
        if not isinstance(scores, dict):
            scores = row["scores"] = {}
        scores[name] = value


class _Bad(Exception):
    """A bad line under --strict: stop before the atomic write completes."""


def _chunks(config: ScoreConfig, bad: list | None):
    """(line numbers, rows) chunks of good rows in input order; bad lines are logged and collected into `bad` (when
    given)."""
    lines, chunk = [], []
    for line, item in checked_rows(config.input, trace_problems):  # the trace schema, as every stage checks it
        if isinstance(item, BadRow):
            if bad is not None:
                log.warning("%s (line not scored; it is not passed on)", item)
                bad.append({"line": line, "reason": item.reason})
            if config.strict:
                raise _Bad(str(item))
            continue
        lines.append(line)
        chunk.append(item)
        if len(chunk) >= CHUNK_ROWS:
            yield lines, chunk
            lines, chunk = [], []
    if chunk:
        yield lines, chunk


def _cached(cache, scorer, rows: list[dict]) -> list:
    """The scorer's values for `rows`, computing only the rows the cache lacks."""
    keys = [cache.key(r) for r in rows]
    found = [cache.get(k) for k in keys]
    todo = [i for i, (hit, _) in enumerate(found) if not hit]
    fresh = scorer([rows[i] for i in todo]) if todo else []
    values = [v for _, v in found]
    for i, v in zip(todo, fresh, strict=True):
        values[i] = v
        cache.put(keys[i], v)
    return values


def stream_scores(config: ScoreConfig, scorers: dict, bad: list) -> tuple[int, dict, dict]:
    """Score `config.input` into `config.output` in bounded memory; returns (rows, stats, cache stats).

    Pass 1 (only when a scorer needs other rows): compact features for global scorers, pools for pooled ones, rows
    for "whole" ones. Pass 2: read again chunk by chunk, run the chunk and pooled scorers, attach every value and
    stream the rows out."""
    from distill.scoring.cache import ScoreCache

    kinds = {name: _kind(config, name, s) for name, s in scorers.items()}
    stats = {name: _Stats() for name in scorers}
    done, pools, reader = _first_pass(config, scorers, kinds, stats)
    cache_dir = Path(config.output).parent / "score_cache"
    budget = {"min_pixels": config.min_pixels, "max_pixels": config.max_pixels}  # what the scorers saw (context)
    caches = {name: ScoreCache(cache_dir, name, {**(config.scorers.get(name) or {}), **budget})
              for name, kind in kinds.items() if kind in ("chunk", "pooled") and _registry_name(config, name) in CACHED}  # fmt: skip
    position = 0

    bar = tqdm(desc="score", unit="row", disable=not config.progress, mininterval=1.0)

    def scored():
        nonlocal position
        for _, chunk in _chunks(config, bad):
            for name, scorer in scorers.items():
                t0 = time.perf_counter()
                if kinds[name] == "chunk":
                    values = _cached(caches[name], scorer, chunk) if name in caches else scorer(chunk)
                elif kinds[name] == "pooled":
                    values = scorer.score_chunk(chunk, pools[name], caches.get(name))
                else:
                    values = done[name][position : position + len(chunk)]
                if kinds[name] in ("chunk", "pooled"):
                    if len(values) != len(chunk):
                        raise RuntimeError(f"scorer {name!r} returned {len(values)} values for {len(chunk)} rows")
                    stats[name].add(values, time.perf_counter() - t0)
                _attach(chunk, name, values)
            position += len(chunk)
            bar.update(len(chunk))
            yield from chunk

    try:
        n = write_jsonl_atomic(config.output, scored())
    finally:
        bar.close()
        for cache in caches.values():
            cache.close()
        if reader is not None:
            reader.close()
    cache_stats = {name: {"hits": c.hits, "misses": c.misses} for name, c in caches.items()}
    return n, {name: st.as_dict() for name, st in stats.items()}, cache_stats


def _first_pass(config: ScoreConfig, scorers: dict, kinds: dict, stats: dict) -> tuple[dict, dict, object]:
    """(values of global and whole scorers, pools of pooled scorers, the pools' row reader or None)."""
    from distill.scoring.pool import PositivePool, RowReader

    done: dict[str, list] = {}
    if all(k == "chunk" for k in kinds.values()):
        return done, {}, None
    feats = {n: [] for n, k in kinds.items() if k == "global"}
    whole = [n for n, k in kinds.items() if k == "whole"]
    reader = RowReader(config.input) if "pooled" in kinds.values() else None
    pools = {n: PositivePool(reader) for n, k in kinds.items() if k == "pooled"}
    rows_all: list[dict] = []
    for lines, chunk in _chunks(config, None):
        for name in [*feats, *pools]:
            t0 = time.perf_counter()
            if name in feats:
                feats[name].append(scorers[name].features(chunk))
            else:
                pools[name].add(scorers[name].pool_features(chunk, lines))
            stats[name].seconds += time.perf_counter() - t0
        if whole:
            rows_all += chunk
    for name, chunks in feats.items():
        t0 = time.perf_counter()
        done[name] = scorers[name].combine(chunks)
        stats[name].add(done[name], time.perf_counter() - t0)
    for name in whole:
        t0 = time.perf_counter()
        done[name] = scorers[name](rows_all)
        if len(done[name]) != len(rows_all):
            raise RuntimeError(f"scorer {name!r} returned {len(done[name])} values for {len(rows_all)} rows")
        stats[name].add(done[name], time.perf_counter() - t0)
    return done, pools, reader


def run(config: ScoreConfig) -> dict:
    t0 = time.time()
    try:  # before reading the input: a wrong model or tokenizer path fails in seconds, not after the load
        scorers = build_scorers(config)
    except (ValueError, OSError, ImportError) as e:
        raise StageError(f"cannot build the scorers: {e}") from None
    bad: list[dict] = []
    try:
        n_rows, stats, cache_stats = stream_scores(config, scorers, bad)
    except _Bad as e:
        raise DataError(f"{e} (--strict: stopping, nothing written)") from None
    dropped = Counter(reason_class(b["reason"]) for b in bad)
    print(f"{config.input}: {n_rows} rows scored by {', '.join(stats)} -> {config.output}")
    if bad:
        print(f"  {len(bad)} unreadable line(s) not passed on: " + ", ".join(str(b["line"]) for b in bad[:20]))
    return stage_summary("score", n_rows + len(bad), n_rows, time.time() - t0, dropped=dropped, problems=bad,
                         input=config.input, output=config.output, bad_lines=bad, scorers=stats,
                         score_cache=cache_stats)  # fmt: skip


STAGE = Stage(
    "score",
    (ScoreConfig,),
    run,
    output="output",
    paths=lambda c: Paths(reads=[c.image_root], read_files=[c.input], writes=[c.output]),
    verdict=every_row_dropped,
)
main = STAGE.main


if __name__ == "__main__":
    from distill.cli import main as cli_main

    sys.exit(cli_main(["score", *sys.argv[1:]]))

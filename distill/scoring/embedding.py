"""`embedding_gain`, the TTE-specific scorer: how much the trace helps an embedder pick the row's positive.

For each row, the candidates are its positive and negatives, topped up to `num_candidates` with the positives of
other examples of the same dataset (in-batch negatives, taken in order of first appearance after this example's, so
the choice is deterministic). The trace conditions the side it is about (`side`, see `distill.records.trace_side`):
a query-side trace is appended to the query; a target-side trace (a description of the positive) is appended to the
positive, with the query embedded alone, and every other candidate is conditioned by its own target-side trace where
the input holds one (the first row whose positive it is): the positive is never the only candidate with extra text.
A page row of a visual-document corpus (`queries`: the queries its qrels point at) is scored through them: the page,
alone and with its trace, ranks its most relevant query against other pages' queries (never the page against itself).
Target-only rows (`distill.data.targets`) are not scored. Texts as `distill.embed_text` builds them (per MMEB-V2
dataset, VLM2Vec-V2's evaluation text, docs/eval.md). The trace is embedded as the student writes it
(`part: full`, the exported `<think>…</think>` + final; or `think` / `final` / `raw`). Every distinct (text, images)
item of a chunk is embedded once, in one batched call per `chunk_rows` rows (the embedders sort by length inside the
call, so 8k-row calls pad little). All samples of an example get the same candidates, so their gains compare fairly
in best-of-n.

Bounded memory (`distill score`, `EmbeddingGain`): pass 1 keeps, per dataset, the 16-byte digests and first line
numbers of its distinct positives (`distill.scoring.pool`); pass 2 scores chunk by chunk and reads a pool positive that
lives in another chunk (lookahead, wrap-around, repeated samples far apart) back from the input. Values do not depend
on the chunking. With the score cache, a row's key covers the row and the digests of its pool candidates.

Value per row, without (`_query`) and with (`_trace`) the trace: the positive's rank among the candidates (1 = best;
ties count against it), its cosine margin (positive's similarity minus the best negative's) and its log-probability
under the embedder's InfoNCE (log-softmax of similarity / `temperature` over the candidates; TTE trains with 0.02):
{"rank_query", "rank_trace", "margin_query", "margin_trace", "logp_query", "logp_trace", "logp_gain", "gain",
"candidates"}, where `gain` is `margin_trace - margin_query` (`objective: margin`, the default) or `logp_gain`
(`objective: log_softmax`). None for rows without a trace, when the embedder cannot tell the candidates apart (a
text-only embedder and image-only candidates that share one placeholder text), and when an image of the row's query or
candidates cannot be read (the embedder logs it; the run goes on).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from distill.embed_text import PARTS, Item, candidate_items, query_item, target_item, trace_for_embedding, with_trace
from distill.records import trace_side
from distill.scoring.embedders import make_embedder
from distill.scoring.pool import PositivePool, item_digest
from distill.scoring.ranking import gain_value, log_softmax_positive, rank_and_margin  # noqa: F401  (API)
from distill.scoring.registry import register
from distill.stage import StageError

log = logging.getLogger(__name__)
OBJECTIVES = ("margin", "log_softmax")


@dataclass
class _Plan:
    """A scoreable row: its items (the candidates' pool part as pool positions, resolved only when embedded)."""

    query: Item
    query_cond: Item  # the query as conditioned (with the trace when it is query-side)
    pos: Item
    pos_cond: Item  # the positive as conditioned (with the trace when it is target-side)
    negs: list[Item]  # the row's own distinct negatives
    negs_cond: list[Item]  # ... as conditioned: target-side, each with its own trace where the input has one
    dataset: object  # the pool key: the dataset, or (dataset, "queries") for page rows (their candidates are queries)
    pos_digest: bytes
    pooled: list[int]  # positions in the dataset's pool of the positives that top the candidates up
    pooled_digests: list[bytes]
    target_side: bool  # pooled candidates are conditioned by their own traces too
    extra: bytes = b""  # what the score cache key needs beyond the row: the conditioned candidates' digests


class EmbeddingGain:
    """The scorer. `distill score` runs it in two passes over the input (bounded memory): `pool_features` per chunk
    builds the candidate pools (`distill.scoring.pool`), then `score_chunk` per chunk computes the values, reading
    pool positives that live outside the chunk back from the input. Called on rows in memory, it does both itself."""

    def __init__(self, embedder, part: str = "full", num_candidates: int = 8, chunk_rows: int = 8192,
                 temperature: float = 0.02, objective: str = "margin"):  # fmt: skip
        self.embedder, self.part, self.num_candidates = embedder, part, num_candidates
        self.chunk_rows, self.temperature, self.objective = max(1, chunk_rows), temperature, objective

    def __call__(self, rows: list[dict]) -> list:
        pool = PositivePool(rows.__getitem__)
        pool.add(self.pool_features(rows, range(len(rows))))
        return self.score_chunk(rows, pool)

    def _pool_key(self, row: dict):
        return (row.get("dataset"), "queries") if _page_queries(row) else row.get("dataset")

    def _pool_item(self, row: dict) -> Item | None:
        """What a row adds to its pool: its positive as a candidate; for a page row its most relevant query."""
        queries = _page_queries(row)
        if queries:
            return _relevant_query_items(row, self.embedder.uses_images)[0]
        return target_item(row, row.get("positive"), self.embedder.uses_images)

    def pool_features(self, rows: list[dict], lines) -> list[tuple]:
        """(pool key, digest of the pool item or None, line) per row: all that the pools keep of a row."""
        out = []
        for row, line in zip(rows, lines, strict=True):
            key, item = self._pool_key(row), self._pool_item(row)
            out.append((key, None if item is None else item_digest(key, item), line))
        return out

    def score_chunk(self, rows: list[dict], pool: PositivePool, cache=None) -> list:
        """One value per row. With `cache` (a `ScoreCache`), a row's key covers the row and the digests of the pool
        positives among its candidates: only rows whose own content or candidates changed are embedded again."""
        plans = [self._plan(row, pool) for row in rows]
        out: list = [None] * len(rows)
        todo = [i for i, plan in enumerate(plans) if plan is not None]
        keys = []
        if cache is not None:
            extras = [b"".join(plan.pooled_digests) + plan.extra if plan else b"" for plan in plans]
            keys = [cache.key(row, extra) for row, extra in zip(rows, extras, strict=True)]
            todo = []
            for i, key in enumerate(keys):
                hit, value = cache.get(key)
                if hit:
                    out[i] = value
                elif plans[i] is None:
                    cache.put(key, None)
                else:
                    todo.append(i)
        resolve = self._resolver(plans, pool)
        for start in range(0, len(todo), self.chunk_rows):  # `chunk_rows` rows per embedding call
            group = todo[start : start + self.chunk_rows]
            for i, value in zip(group, self._values([plans[i] for i in group], resolve), strict=True):
                out[i] = value
                if cache is not None:
                    cache.put(keys[i], value)
        return out

    def _plan(self, row: dict, pool: PositivePool) -> _Plan | None:
        trace = trace_for_embedding(row, self.part)
        try:
            side = trace_side(row)
        except ValueError as e:  # never guess which side a trace belongs to
            log.warning("embedding_gain: row %s: %s", row.get("id"), e)
            side = None
        if not trace or not trace.strip() or side is None or row.get("target_only"):
            return None  # a target-only row (distill.data.targets) has no query to rank it for
        uses = self.embedder.uses_images
        if side == "target" and _page_queries(row):
            # a page's trace, scored through the queries the qrels point at: the page (alone / with its trace) ranks
            # its most relevant query against other pages' queries; never the page against itself
            q, relevant = target_item(row, row.get("positive"), uses), _relevant_query_items(row, uses)
            pos, negs, q_cond, target_side = (
                relevant[0],
                [],
                with_trace(target_item(row, row.get("positive"), uses), trace),
                False,
            )
            own = {item_digest(self._pool_key(row), r) for r in relevant}
        else:
            cands = candidate_items(row, uses)
            pos, q = cands[0], query_item(row, uses)
            if pos is None:
                return None
            negs = [n for n in dict.fromkeys(n for n in cands[1:] if n) if n != pos]  # tell-apart candidates only
            target_side, q_cond = side == "target", q
            own = {item_digest(self._pool_key(row), n) for n in negs}
        key = self._pool_key(row)
        pos_digest = item_digest(key, pos)
        start = pool.position(pos_digest)
        if start is None:
            raise StageError(f"embedding_gain: row {row.get('id')!r}: its positive is not in the candidate pool "
                               "(did the input change while it was scored?)")  # fmt: skip
        pooled, digests, size = [], [], pool.size(key)
        for k in range(1, size):  # the pool's positives after this row's, cyclically (deterministic in-batch negatives)
            if len(negs) + len(pooled) + 1 >= self.num_candidates:
                break
            digest = pool.digest(key, (start + k) % size)
            if digest != pos_digest and digest not in own:
                pooled.append((start + k) % size)
                digests.append(digest)
        if not (negs or pooled):
            return None
        if side == "query":
            q_cond = with_trace(q, trace.strip())
        pos_cond, negs_cond, extra = pos, negs, b""
        if target_side:  # every candidate with its own trace where the input has one, the positive with this row's
            pos_cond = with_trace(pos, trace)
            negs_cond = [self._conditioned(pool, key, n) for n in negs]
            # the cache key must change when another row's trace does: the conditioned candidates' digests (pooled
            # ones read back once here; `_resolver` reads them again only for rows that are embedded)
            pooled_cond = [self._with_own_trace(pool.row(key, k), None) for k in pooled]
            extra = b"".join(item_digest(key, n) for n in negs_cond) + b"".join(
                item_digest(key, (t, ())) for t in pooled_cond
            )
        return _Plan(q, q_cond, pos, pos_cond, negs, negs_cond, key, pos_digest, pooled, digests, target_side, extra)

    def _conditioned(self, pool: PositivePool, key, item: Item) -> Item:
        """A candidate with the target-side trace of the first input row whose positive it is (itself when none)."""
        k = pool.position(item_digest(key, item))
        return item if k is None else self._with_own_trace(pool.row(key, k), item)

    def _with_own_trace(self, row: dict, item: Item | None) -> Item | str:
        """`item` conditioned by `row`'s target-side trace (itself when the row has none); with item None, that
        trace's text ("" when none)."""
        trace = trace_for_embedding(row, self.part)
        try:
            usable = trace and trace.strip() and trace_side(row) == "target" and not _page_queries(row)
        except ValueError:
            usable = False
        if item is None:
            return trace if usable else ""
        return with_trace(item, trace) if usable else item

    def _resolver(self, plans: list, pool: PositivePool):
        """(pool key, position, digest) -> (item, item as its own target-side trace conditions it): the chunk's own
        positives, else read back from the input once per chunk."""
        known: dict[bytes, tuple] = {}

        def resolve(key, k: int, digest: bytes) -> tuple[Item, Item]:
            if digest not in known:
                row = pool.row(key, k)
                item = self._pool_item(row)
                if item is None or item_digest(key, item) != digest:
                    raise StageError("embedding_gain: the input changed while it was scored (a pool positive "
                                       f"differs: row {row.get('id')!r})")  # fmt: skip
                known[digest] = (item, self._with_own_trace(row, item))
            return known[digest]

        return resolve

    def _values(self, plans: list[_Plan], resolve) -> list:
        index_plans, items = _table(plans, resolve)
        emb = self.embedder.embed(items) if items else np.zeros((0, 1), np.float32)
        return [gain_value(emb, plan, self.temperature, self.objective) for plan in index_plans]


def _table(plans: list[_Plan], resolve) -> tuple[list, list[Item]]:
    """Per plan (query, query as conditioned, positive, positive as conditioned, candidates, candidates as
    conditioned) as indices into the distinct items, in first-use order (every item is embedded once)."""
    table: dict[Item, int] = {}

    def idx(item: Item) -> int:
        return table.setdefault(item, len(table))

    out = []
    for p in plans:
        pooled = [resolve(p.dataset, k, d) for k, d in zip(p.pooled, p.pooled_digests, strict=True)]
        negs = p.negs + [item for item, _ in pooled]
        negs_cond = p.negs_cond + [cond if p.target_side else item for item, cond in pooled]
        out.append((idx(p.query), idx(p.query_cond), idx(p.pos), idx(p.pos_cond), [idx(n) for n in negs],
                    [idx(n) for n in negs_cond]))  # fmt: skip
    return out, list(table)


def _page_queries(row: dict) -> list[dict]:
    """The queries the qrels point at, on a page row (`distill.data.beir`, `--side target`), most relevant first."""
    queries = row.get("queries")
    return [q for q in queries if isinstance(q, dict) and str(q.get("text") or "").strip()] if queries else []


def _relevant_query_items(row: dict, uses_images: bool) -> list[Item]:
    return [query_item({"task": row.get("task"), "dataset": row.get("dataset"), "instruction": q.get("instruction"),
                        "query": {"text": q["text"], "images": []}}, uses_images) for q in _page_queries(row)]  # fmt: skip


def _plans(rows: list[dict], uses_images: bool, part: str, num_candidates: int) -> tuple[list, list[Item]]:
    """(index plans of the scoreable rows, distinct items) of rows in memory: what one embedding call embeds."""
    scorer = EmbeddingGain(type("Embedder", (), {"uses_images": uses_images})(), part, num_candidates)
    pool = PositivePool(rows.__getitem__)
    pool.add(scorer.pool_features(rows, range(len(rows))))
    plans = [p for p in (scorer._plan(row, pool) for row in rows) if p is not None]
    return _table(plans, scorer._resolver(plans, pool))


def embedding_gain(
    rows: list[dict],
    embedder,
    part: str = "full",
    num_candidates: int = 8,
    chunk_rows: int = 8192,
    temperature: float = 0.02,
    objective: str = "margin",
) -> list:
    """One value per row of `rows` (in memory; see the module docstring) using `embedder` (an object with
    `uses_images` and `embed`), at most `chunk_rows` rows per embedding call. The same code as `distill score`'s
    streamed path, with the rows list as the pool's source."""
    return EmbeddingGain(embedder, part, num_candidates, chunk_rows, temperature, objective)(rows)


@register("embedding_gain")
def make_embedding_gain(
    model: str | None = None,
    embedder: str = "sentence-transformers",
    part: str = "full",
    num_candidates: int = 8,
    objective: str = "margin",
    temperature: float = 0.02,
    batch_size: int = 64,
    device: str | None = None,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    chunk_rows: int = 8192,
    image_root: str = ".",
) -> EmbeddingGain:
    """embedding_gain with an embedder of kind `embedder` ('sentence-transformers' | 'vlm' loaded from `model`, or
    the model-free 'hashing'); `part` (full | think | final | raw), `objective` (margin | log_softmax: which one `gain`
    is) and the InfoNCE `temperature` as in the module docstring; at most `chunk_rows` rows per embedding call
    (`distill score` hands it chunks of `distill.score.CHUNK_ROWS` rows)."""
    if num_candidates < 2:
        raise ValueError("embedding_gain: num_candidates must be >= 2 (the positive and at least one negative)")
    if part not in PARTS or objective not in OBJECTIVES or not temperature > 0:
        raise ValueError(f"embedding_gain: need part in {PARTS}, objective in {OBJECTIVES} and temperature > 0; got "
                         f"{part!r}, {objective!r}, {temperature}")  # fmt: skip
    if not model and embedder != "hashing":
        raise ValueError(f"embedding_gain: embedder {embedder!r} needs `model` (a path or package:NAME)")
    extra = {"batch_size": batch_size, "device": device}
    if embedder == "vlm":
        extra |= {"min_pixels": min_pixels, "max_pixels": max_pixels}
    emb = make_embedder(embedder, model, image_root=image_root, **extra)
    return EmbeddingGain(emb, part, num_candidates, chunk_rows, temperature, objective)

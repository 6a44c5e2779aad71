"""`embedding_gain`, the TTE-specific scorer: how much the trace helps an embedder pick the row's positive.

For each row, the candidates are its positive and negatives, topped up to `num_candidates` with the positives of
other examples of the same dataset (in-batch negatives, taken in order of first appearance after this example's, so
the choice is deterministic). The trace conditions the side it is about (`side`, see `distill.records.trace_side`):
a query-side trace is appended to the query (instruction + query text [+ images]); a target-side trace (a description
of the positive, e.g. a document page) is appended to the positive, with the query embedded alone. Candidates carry
the target instruction (MMEB eval `tgt_inst`) where the data gives one. The trace is embedded as the student writes it
(`part: full`, the exported `<think>…</think>` + final; or `think` / `final` / `raw`). Every distinct (text, images)
item is embedded exactly once, in one batched call per chunk of whole datasets (`chunk_rows`). All samples of an
example get the same candidates, so their gains compare fairly in best-of-n.

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
from collections import defaultdict

import numpy as np

from distill.chat_format import assistant_text
from distill.records import trace_side
from distill.scoring.embedders import VIDEO, Item, make_embedder
from distill.scoring.registry import register, trace_text

log = logging.getLogger(__name__)
PARTS = ("full", "think", "final", "raw")
OBJECTIVES = ("margin", "log_softmax")


def visuals(side: dict) -> tuple[str, ...]:
    """A side's images, then its video as one `video:<path>` entry (the VLM embedder samples the frames)."""
    return tuple(side.get("images") or ()) + ((VIDEO + side["video"],) if side.get("video") else ())


def _item(side, uses_images: bool, instruction: str = "") -> Item | None:
    if not isinstance(side, dict):
        return None
    images = visuals(side) if uses_images else ()
    text = (side.get("text") or "").strip()
    if not (text or images):
        return None
    return "\n".join(t for t in (instruction, text) if t), images


def _query_item(row: dict, uses_images: bool) -> Item:
    query = row.get("query") or {}
    text = " ".join(t for t in ((row.get("instruction") or "").strip(), (query.get("text") or "").strip()) if t)
    return text, visuals(query) if uses_images else ()


def _with_trace(item: Item, trace: str) -> Item:
    return (item[0] + "\n" + trace).strip(), item[1]


# `distill eval` ranks MMEB candidates with exactly these items, so its figures and embedding_gain's agree.
side_item, query_item, with_trace = _item, _query_item, _with_trace


def trace_for_embedding(row: dict, part: str) -> str | None:
    """The trace text the embedder reads: `full` is the exported assistant turn (what the student learns to write)."""
    if part != "full":
        return trace_text(row, part)
    if trace_text(row, "raw") is None:  # failed row or no trace object
        return None
    trace = row["trace"]
    if not (str(trace.get("think") or "").strip() or str(trace.get("final") or "").strip()):
        return None
    return assistant_text(trace)


def _plans(rows: list[dict], uses_images: bool, part: str, num_candidates: int):
    """Per row (query, query as conditioned, positive, positive as conditioned, negatives) as item indices, or None;
    and the distinct items in order."""
    table: dict[Item, int] = {}

    def idx(item: Item) -> int:
        return table.setdefault(item, len(table))

    def target_item(row: dict, side) -> Item | None:
        return _item(side, uses_images, (row.get("target_instruction") or "").strip())

    pools: dict[str, list[Item]] = defaultdict(list)
    pool_pos: dict[tuple, int] = {}
    for row in rows:
        pos = target_item(row, row.get("positive"))
        if pos is not None and (row.get("dataset"), pos) not in pool_pos:
            pool_pos[(row.get("dataset"), pos)] = len(pools[row.get("dataset")])
            pools[row.get("dataset")].append(pos)

    plans: list = []
    for row in rows:
        trace, pos = trace_for_embedding(row, part), target_item(row, row.get("positive"))
        try:
            side = trace_side(row)
        except ValueError as e:  # never guess which side a trace belongs to
            log.warning("embedding_gain: row %s: %s", row.get("id"), e)
            side = None
        if not trace or not trace.strip() or pos is None or side is None:
            plans.append(None)
            continue
        negs = list(dict.fromkeys(n for n in (target_item(row, s) for s in row.get("negatives") or []) if n))
        negs = [n for n in negs if n != pos]  # indistinguishable from the positive for this embedder
        pool = pools[row.get("dataset")]
        start = pool_pos[(row.get("dataset"), pos)]
        for k in range(1, len(pool)):
            if len(negs) + 1 >= num_candidates:
                break
            cand = pool[(start + k) % len(pool)]
            if cand != pos and cand not in negs:
                negs.append(cand)
        if not negs:
            plans.append(None)
            continue
        q = _query_item(row, uses_images)
        q_cond, pos_cond = (_with_trace(q, trace.strip()), pos) if side == "query" else (q, _with_trace(pos, trace))
        plans.append((idx(q), idx(q_cond), idx(pos), idx(pos_cond), [idx(n) for n in negs]))
    return plans, list(table)


def rank_and_margin(sims: np.ndarray) -> tuple[int, float]:
    """sims[0] is the positive's similarity, sims[1:] the negatives'. Rank = 1 + negatives scoring >= the positive;
    margin = positive - best negative. sims [0.9, 0.5, 0.95] -> rank 2, margin 0.9 - 0.95 = -0.05."""
    pos, negs = sims[0], sims[1:]
    return 1 + int((negs >= pos).sum()), float(pos - negs.max())


def log_softmax_positive(sims: np.ndarray, temperature: float) -> float:
    """log p(positive) under InfoNCE: sims[0] / t - logsumexp(sims / t). sims [0.8, 0.8], t 0.02 -> -log 2."""
    logits = np.asarray(sims, np.float64) / temperature
    top = logits.max()
    return float(logits[0] - top - np.log(np.exp(logits - top).sum()))


def embedding_gain(
    rows: list[dict],
    embedder,
    part: str = "full",
    num_candidates: int = 8,
    chunk_rows: int = 100_000,
    temperature: float = 0.02,
    objective: str = "margin",
) -> list:
    """One value per row (see the module docstring) using `embedder` (an object with `uses_images` and `embed`).

    Whole datasets are grouped into chunks of about `chunk_rows` rows (candidates never cross datasets, and a dataset
    is never split), one embedding call per chunk: memory stays bounded on big runs, and small datasets still share
    one call (separate small calls cost ~35% more in padding, measured with MiniLM).
    """
    by_dataset: dict = defaultdict(list)
    for i, row in enumerate(rows):
        by_dataset[row.get("dataset")].append(i)
    chunks, current = [], []
    for idx in by_dataset.values():
        if current and len(current) + len(idx) > chunk_rows:
            chunks.append(current)
            current = []
        current = current + idx
    chunks += [current] if current else []
    out: list = [None] * len(rows)
    for idx in chunks:
        values = _gain([rows[i] for i in idx], embedder, part, num_candidates, temperature, objective)
        for i, value in zip(idx, values, strict=True):
            out[i] = value
    return out


def _gain(rows: list[dict], embedder, part: str, num_candidates: int, temperature: float, objective: str) -> list:
    plans, items = _plans(rows, embedder.uses_images, part, num_candidates)
    emb = embedder.embed(items) if items else np.zeros((0, 1), np.float32)
    out: list = []
    for plan in plans:
        if plan is None:
            out.append(None)
            continue
        q, q_cond, pos, pos_cond, negs = plan
        if np.isnan(emb[[q, q_cond, pos, pos_cond, *negs]]).any():  # an image the embedder could not read (logged)
            out.append(None)
            continue
        sims_q = emb[[pos, *negs]] @ emb[q]  # without the trace
        sims_t = emb[[pos_cond, *negs]] @ emb[q_cond]  # with it, on the side it is about
        rank_q, margin_q = rank_and_margin(sims_q)
        rank_t, margin_t = rank_and_margin(sims_t)
        logp_q, logp_t = log_softmax_positive(sims_q, temperature), log_softmax_positive(sims_t, temperature)
        # Rounded so reruns are byte-identical despite last-bit float noise across BLAS batch shapes.
        value = {
            "rank_query": rank_q,
            "rank_trace": rank_t,
            "margin_query": round(margin_q, 6),
            "margin_trace": round(margin_t, 6),
            "logp_query": round(logp_q, 6),
            "logp_trace": round(logp_t, 6),
            "logp_gain": round(logp_t - logp_q, 6),
            "gain": round(margin_t - margin_q, 6),
            "candidates": len(negs) + 1,
        }
        if objective == "log_softmax":
            value["gain"] = value["logp_gain"]
        out.append(value)
    return out


@register("embedding_gain")
def make_embedding_gain(
    model: str,
    embedder: str = "sentence-transformers",
    part: str = "full",
    num_candidates: int = 8,
    objective: str = "margin",
    temperature: float = 0.02,
    batch_size: int = 64,
    device: str | None = None,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    chunk_rows: int = 100_000,
    image_root: str = ".",
):
    """embedding_gain with an embedder of kind `embedder` ('sentence-transformers' | 'vlm') loaded from `model`;
    `part` (full | think | final | raw), `objective` (margin | log_softmax: which one `gain` is) and the InfoNCE
    `temperature` as in the module docstring."""
    if num_candidates < 2:
        raise ValueError("embedding_gain: num_candidates must be >= 2 (the positive and at least one negative)")
    if part not in PARTS or objective not in OBJECTIVES or not temperature > 0:
        raise ValueError(f"embedding_gain: need part in {PARTS}, objective in {OBJECTIVES} and temperature > 0; got "
                         f"{part!r}, {objective!r}, {temperature}")  # fmt: skip
    extra = {"batch_size": batch_size, "device": device}
    if embedder == "vlm":
        extra |= {"min_pixels": min_pixels, "max_pixels": max_pixels}
    emb = make_embedder(embedder, model, image_root=image_root, **extra)
    return lambda rows: embedding_gain(rows, emb, part, num_candidates, chunk_rows, temperature, objective)

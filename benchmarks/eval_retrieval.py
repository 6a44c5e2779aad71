"""Cost of `distill eval`'s ranking + metrics path at MMEB scale, beside a plain numpy Hit@1. Prints; asserts nothing.

    python benchmarks/eval_retrieval.py [--queries 1000] [--candidates 1000] [--conditions 4]

A fixed random unit-vector "embedder" makes embedding free, so the figures are the rest of the stage: planning the
items, cosine scores per query, and Hit@1 through ir-measures (pytrec_eval). The numpy column computes the same Hit@1
directly (positive strictly above every negative; ties count against it) on the same vectors; both must agree. MMEB
image tasks have ~1000 queries x 1000 candidates per dataset, so one line here is one dataset under `--conditions`
conditions (no_trace + trace sets). Wall-clock on a shared machine: the load average is printed next to the figures.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distill.eval.inputs import EvalRow  # noqa: E402
from distill.eval.retrieval import NO_TRACE, retrieval  # noqa: E402


class RandomEmbedder:
    """Unit vectors seeded by the item text: deterministic, and free compared with any real encoder."""

    uses_images = False

    def __init__(self, dim: int = 64):
        self.dim = dim

    def embed(self, items):
        out = np.empty((len(items), self.dim), np.float32)
        for i, (text, _) in enumerate(items):
            out[i] = np.random.default_rng(abs(hash(text)) % 2**32).standard_normal(self.dim)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def synthetic(queries: int, candidates: int, conditions: int, pool: int = 5000):
    rng = np.random.default_rng(0)
    texts = [f"candidate {k}" for k in range(pool)]
    rows = []
    for i in range(queries):
        cands = [texts[j] for j in rng.choice(pool, candidates, replace=False)]
        ex = {"id": f"D-{i}", "task": "retrieval", "dataset": "D", "instruction": "", "answer": None,
              "query": {"text": f"query {i}", "images": []}, "positive": {"text": cands[0], "images": []},
              "negatives": [{"text": t, "images": []} for t in cands[1:]]}  # fmt: skip
        rows.append(EvalRow("synthetic", i + 1, ex))
    traces = {f"set{k}": {f"D-{i}": f"trace {k} {i}" for i in range(queries)} for k in range(conditions - 1)}
    return rows, traces


def numpy_hit1(rows, traces, embedder) -> dict[str, float]:
    """Hit@1 per condition with numpy only, on the same vectors (every distinct item embedded once, as in eval)."""
    from distill.embed_text import query_item, side_item, with_trace

    table: dict = {}
    plans = []
    for row in rows:
        q = query_item(row.example, False)
        conds = {NO_TRACE: q, **{c: with_trace(q, t[row.example["id"]]) for c, t in traces.items()}}
        cands = [table.setdefault(side_item(c, False), len(table)) for c in row.candidates]
        plans.append(({c: table.setdefault(item, len(table)) for c, item in conds.items()}, np.asarray(cands)))
    emb = embedder.embed(list(table))
    out = {}
    for cond in [NO_TRACE, *traces]:
        hits = [float(((s := emb[c] @ emb[qs[cond]])[1:] < s[0]).all()) for qs, c in plans]
        out[cond] = round(float(np.mean(hits)), 4)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--candidates", type=int, default=1000)
    ap.add_argument("--conditions", type=int, default=4)
    args = ap.parse_args()
    rows, traces = synthetic(args.queries, args.candidates, args.conditions)
    embedder = RandomEmbedder()
    t0 = time.perf_counter()
    ours = retrieval(rows, traces, embedder)["datasets"]["D"]["scores"]
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    plain = numpy_hit1(rows, traces, embedder)
    t_plain = time.perf_counter() - t0
    scored = args.queries * args.candidates * args.conditions
    print(f"load average {os.getloadavg()[0]:.1f}; {args.queries} queries x {args.candidates} candidates x "
          f"{args.conditions} conditions = {scored / 1e6:.1f}M scores")  # fmt: skip
    print(f"distill eval (ir-measures): {t_ours:7.1f} s   {scored / t_ours / 1e6:.2f}M scores/s   Hit@1 {ours}")
    print(f"plain numpy Hit@1:          {t_plain:7.1f} s   {scored / t_plain / 1e6:.2f}M scores/s   Hit@1 {plain}")
    print(f"same values: {ours == plain}; ratio distill / numpy time: {t_ours / t_plain:.2f}")


if __name__ == "__main__":
    main()

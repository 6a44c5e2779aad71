"""Retrieval with and without traces on MMEB eval rows, scored by ir-measures (pytrec_eval's trec_eval code).

    from distill.eval.retrieval import retrieval
    result = retrieval(rows, {"teacher": {id: trace}, "student": {...}}, embedder)

For each row the query is embedded alone (condition `no_trace`) and with each trace set's trace appended (the same
items and embedders as `embedding_gain`: candidates carry MMEB's `tgt_inst`, the trace is embedded as `trace_part`
says, `full` = as exported); candidates are the row's list, positive first, scored by cosine. Metrics as
MMEB reports them: Hit@1 (ir-measures `Success@1`) for image and video tasks, NDCG@5 (`nDCG@5`) for visual documents;
a dataset's score is the mean over its queries, a meta-task's (the task type; video split into classification, qa,
retrieval and moment as MMEB-V2 does) or modality's the mean over its datasets, overall the mean over all datasets
(MMEB's "Overall").

Ties: trec_eval orders equal scores by document id, descending; pytrec_eval and ir-measures inherit that. Candidates
are named c0000000 (the positive), c0000001, ... so a negative that ties with the positive ranks above it: ties count
against the positive, as in `embedding_gain`'s rank. Identical candidate items are embedded once, so their scores tie
exactly. A query with no relevant candidate (graded `relevance` all 0) scores 0 and stays in the mean. A row whose
candidates are all one item for this embedder (image-only candidates under a text embedder) cannot be ranked at all:
it is left out and counted (`indistinguishable`); a dataset left with no rows shows no score.
"""

from __future__ import annotations

import logging
from collections import defaultdict

import numpy as np

from distill.embed_text import query_item, target_item, with_trace

log = logging.getLogger(__name__)
NO_TRACE = "no_trace"
MEASURES = {"Hit@1": "Success@1", "NDCG@5": "nDCG@5"}  # report name -> ir-measures name
TIE_POLICY = ("trec_eval's: equal scores are ordered by candidate id, descending; the positive is c0000000, so every "
              "tie counts against it")  # fmt: skip


class EmbedError(RuntimeError):
    """The embedder returned no vector for some item (it logged why); `distill eval` reports it in one line."""


def metric_for(task: str) -> str:
    """MMEB's metric for a task type: NDCG@5 for visual documents, Hit@1 otherwise."""
    return "NDCG@5" if task == "visdoc" else "Hit@1"


def modality(task: str) -> str:
    return task if task in ("video", "visdoc") else "image"


def meta_task(task: str, dataset: str) -> str:
    """MMEB's meta-task: the task type, and for video its kind (MMEB-V2 averages video CLS / QA / RET / MRET apart)."""
    if task != "video":
        return task
    from distill.data.mmeb_video import video_kind

    try:
        return f"video {video_kind(dataset)}"
    except ValueError:  # a video set outside MMEB-V2's table
        return "video"


def doc_id(i: int) -> str:
    return f"c{i:07d}"


_DOC_IDS: list[str] = []


def doc_ids(n: int) -> list[str]:
    """doc_id(0..n-1), built once: MMEB has ~1000 candidates per query and formatting them per query cost 20%."""
    _DOC_IDS.extend(doc_id(i) for i in range(len(_DOC_IDS), n))
    return _DOC_IDS[:n]


def measure_queries(run: dict[str, dict[str, float]], qrels: dict[str, dict[str, int]], metric: str):
    """(mean, {query id: value}) of `metric` (Hit@1 | NDCG@5) with ir-measures' pytrec_eval provider.

    Every query of `qrels` must have a run entry and is scored, also those with no relevant candidate (value 0).
    The mean over queries is what ir-measures' calc_aggregate returns (tested); taking it from the per-query values
    saves a second pytrec_eval pass."""
    import ir_measures

    measure = ir_measures.parse_measure(MEASURES[metric])
    evaluator = ir_measures.pytrec_eval.evaluator([measure], qrels)
    per_query = {m.query_id: m.value for m in evaluator.iter_calc(run)}
    if set(per_query) != set(qrels):  # pytrec_eval skips queries missing from the run; we never pass such
        raise RuntimeError(f"ir-measures scored {len(per_query)} of {len(qrels)} queries")
    return float(np.mean(list(per_query.values()))), per_query


def _mean(values: list[float]) -> float | None:
    return round(float(np.mean(values)), 4) if values else None


def _plan(rows, traces: dict[str, dict[str, str | None]], uses_images: bool):
    """Distinct items, and per row: candidate item indices and one query item index per condition."""
    table: dict = {}

    def idx(item) -> int:
        return table.setdefault(item, len(table))

    plans = []
    for row in rows:
        ex = row.example
        cands = [idx(target_item(ex, c, uses_images) or ("", ())) for c in row.candidates]  # with MMEB's tgt_inst
        q = query_item(ex, uses_images)
        queries = {NO_TRACE: idx(q)}
        for name, by_id in traces.items():
            trace = by_id.get(ex["id"])
            queries[name] = idx(with_trace(q, trace.strip()) if trace and trace.strip() else q)
        plans.append((cands, queries))
    return plans, list(table)


def retrieval(rows: list, traces: dict[str, dict[str, str | None]], embedder) -> dict:
    """Scores per dataset, task, modality and overall for `no_trace` and every trace set; see the module docstring.

    `rows`: EvalRow objects; `traces`: set name -> {id: trace text or None (no usable trace: query alone)}.
    One dataset at a time (candidates never cross datasets): memory stays bounded by the largest dataset."""
    conditions = [NO_TRACE, *traces]
    by_dataset: dict[str, list] = defaultdict(list)
    for row in rows:
        by_dataset[row.example["dataset"]].append(row)
    datasets, per_query = {}, []
    for ds, ds_rows in sorted(by_dataset.items()):
        datasets[ds], queries = _dataset(ds_rows, traces, embedder, conditions)
        per_query += queries
        log.info("retrieval %s: %d rows, %s", ds, len(ds_rows), datasets[ds]["scores"])
    return {"conditions": conditions, "tie_policy": TIE_POLICY, "datasets": datasets,
            **_averages(datasets, conditions), "per_query": per_query}  # fmt: skip


def _dataset(rows: list, traces: dict, embedder, conditions: list[str]) -> tuple[dict, list[dict]]:
    """One dataset's entry and per-query rows."""
    ex0 = rows[0].example
    ds, task, metric = ex0["dataset"], ex0["task"], metric_for(ex0["task"])
    plans, items = _plan(rows, traces, embedder.uses_images)
    ranked = [i for i, (cands, _) in enumerate(plans) if len(set(cands)) > 1]
    qrels = {}
    for i in ranked:
        rel = rows[i].example.get("relevance") or [1] + [0] * (len(plans[i][0]) - 1)
        qrels[f"{i}"] = dict(zip(doc_ids(len(rel)), map(int, rel), strict=True))
    entry = {"task": task, "meta_task": meta_task(task, ds), "modality": modality(task), "metric": metric, "rows": len(rows), "queries": len(ranked),
             "indistinguishable": len(rows) - len(ranked),
             "no_relevant": sum(not any(v > 0 for v in q.values()) for q in qrels.values()),
             "candidates_mean": _mean([len(cands) for cands, _ in plans]),
             "no_trace_used": {n: sum(not (traces[n].get(rows[i].example["id"]) or "").strip() for i in ranked)
                               for n in traces},
             "scores": dict.fromkeys(conditions)}  # fmt: skip
    if not ranked:  # nothing this embedder can rank: skip the embedding too
        return entry, []
    emb = embedder.embed(items)
    if np.isnan(emb).any():  # check_images ran before, so only an embedder-side failure gets here
        raise EmbedError(f"{ds}: the embedder could not embed some items (see the log above)")
    per_query = []
    for cond in conditions:
        run = {}
        for i in ranked:
            cands, queries = plans[i]
            uniq, inverse = np.unique(np.asarray(cands), return_inverse=True)
            sims = (emb[uniq] @ emb[queries[cond]])[inverse]  # identical items -> bit-identical scores
            run[f"{i}"] = dict(zip(doc_ids(len(sims)), sims.tolist(), strict=True))
        mean, values = measure_queries(run, qrels, metric)
        entry["scores"][cond] = round(float(mean), 4)
        per_query += [{"id": rows[i].example["id"], "dataset": ds, "condition": cond, "metric": metric,
                       "value": values[f"{i}"]} for i in ranked]  # fmt: skip
    return entry, per_query


def _averages(datasets: dict, conditions: list[str]) -> dict:
    """Means over datasets (those with a score): per task, per modality and overall, as MMEB averages."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for d in datasets.values():
        if d["queries"]:
            groups[("by_task", d["meta_task"])].append(d)
            groups[("by_modality", d["modality"])].append(d)
            groups[("overall", "")].append(d)
    out: dict = {"by_task": {}, "by_modality": {}, "overall": {"datasets": 0, "scores": dict.fromkeys(conditions)}}
    for (kind, key), ds in sorted(groups.items()):
        entry = {"datasets": len(ds), "scores": {c: _mean([d["scores"][c] for d in ds]) for c in conditions}}
        if kind == "overall":
            out["overall"] = entry
        else:
            out[kind][key] = entry
    return out

"""Retrieval with and without traces on MMEB eval rows, scored by ir-measures (pytrec_eval's trec_eval code).

    from distill.eval.retrieval import retrieval
    result = retrieval(rows, {"teacher": {id: trace}, "student": {...}}, embedder)

For each row the query is embedded alone (condition `no_trace`) and with each trace set's trace appended (the same
items and embedders as `embedding_gain`, built by distill.embed_text: per MMEB-V2 dataset the text VLM2Vec-V2's evaluation
builds, docs/eval.md; the trace is embedded as `trace_part` says, `full` = as exported); candidates are the row's
list, positive first, scored by cosine. With target traces (`target_traces`: target key -> trace), every condition is
ranked a second time with each candidate that has a trace conditioned by it, positives and negatives alike
(conditions `<name>+targets`). Metrics as
MMEB reports them: Hit@1 (ir-measures `Success@1`) for image and video tasks, NDCG@5 (`nDCG@5`) for visual documents;
a dataset's score is the mean over its queries, a meta-task's (the task type; video split into classification, qa,
retrieval and moment as MMEB-V2 does) or modality's the mean over its datasets, overall the mean over all datasets
(MMEB's "Overall").

Ties (`ties`): trec_eval orders equal scores by document id, descending; pytrec_eval and ir-measures inherit that, so
the policy is in the candidate names. `against_positive` (default): candidates are c0000000 (the positive), c0000001,
... so a negative that ties with the positive ranks above it, as in `embedding_gain`'s rank. `argmax_first`: candidate
i is c{9999999 - i}, so the first of equal scores wins, as VLM2Vec's argmax / argsort over the candidate list (positive
at index 0) does: the policy that reproduces its numbers. Identical candidate items are embedded once, so their
scores tie exactly. A query with no relevant candidate (graded `relevance` all 0) scores 0 and stays in the mean. A row whose
candidates are all one item for this embedder (image-only candidates under a text embedder) cannot be ranked at all:
it is left out and counted (`indistinguishable`); a dataset left with no rows shows no score.
"""

from __future__ import annotations

import logging
from collections import defaultdict

import numpy as np
from tqdm import tqdm

from distill.embed_text import candidate_items, query_item, visuals, with_trace

log = logging.getLogger(__name__)
NO_TRACE = "no_trace"
TARGETS = "+targets"  # suffix of a condition whose candidates carry their target-side traces
HEADLINE = {"Hit@1": "hit@1", "NDCG@5": "ndcg_linear@5"}  # MMEB's metric of a task type -> its score-file key
# every cut MMEB's score files hold (`hit@k`, `ndcg_linear@k`: linear gain, trec_eval's nDCG), ir-measures names
CUTS = (1, 5, 10)
ALL_MEASURES = {f"hit@{k}": f"Success@{k}" for k in CUTS} | {f"ndcg_linear@{k}": f"nDCG@{k}" for k in CUTS}
TIES = {
    "against_positive": "trec_eval's: equal scores are ordered by candidate id, descending; the positive is c0000000, "
    "so every tie counts against it",
    "argmax_first": "VLM2Vec's argmax: of equal scores the first candidate in the row's list wins (the positive, at "
    "index 0, wins its ties)",
}


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


def doc_id(i: int, ties: str = "against_positive") -> str:
    """The name of candidate i under a tie policy (see the module docstring)."""
    return f"c{i:07d}" if ties == "against_positive" else f"c{9_999_999 - i:07d}"


_DOC_IDS: dict[str, list[str]] = {"against_positive": [], "argmax_first": []}


def doc_ids(n: int, ties: str = "against_positive") -> list[str]:
    """doc_id(0..n-1), built once: MMEB has ~1000 candidates per query and formatting them per query cost 20%."""
    names = _DOC_IDS[ties]
    names.extend(doc_id(i, ties) for i in range(len(names), n))
    return names[:n]


def headline(values: dict[str, dict[str, float]], metric: str) -> tuple[float, dict[str, float]]:
    """(mean, {query id: value}) of `metric` (Hit@1 | NDCG@5) out of `measure_all`'s values.

    Every query of the qrels is there, also those with no relevant candidate (value 0). The mean over queries is what
    ir-measures' calc_aggregate returns (tested); taking it from the per-query values saves a second pytrec_eval pass."""
    per_query = values[HEADLINE[metric]]
    return float(np.mean(list(per_query.values()))), per_query


def measure_all(run: dict[str, dict[str, float]], qrels: dict[str, dict[str, int]]) -> dict[str, dict[str, float]]:
    """{MMEB score-file key (hit@k, ndcg_linear@k): {query id: value}} in one pytrec_eval pass."""
    import ir_measures

    measures = {ir_measures.parse_measure(m): key for key, m in ALL_MEASURES.items()}
    evaluator = ir_measures.pytrec_eval.evaluator(list(measures), qrels)
    out: dict[str, dict[str, float]] = {key: {} for key in ALL_MEASURES}
    for m in evaluator.iter_calc(run):
        out[measures[m.measure]][m.query_id] = m.value
    if any(set(v) != set(qrels) for v in out.values()):  # pytrec_eval skips queries missing from the run
        raise RuntimeError(f"ir-measures scored {len(out['hit@1'])} of {len(qrels)} queries")
    return out


def target_key(dataset, side: dict) -> tuple:
    """What identifies a retrieval target across files: its dataset, text and visuals (a page is its image)."""
    return dataset, (side.get("text") or "").strip(), visuals(side)


def _mean(values: list[float]) -> float | None:
    return round(float(np.mean(values)), 4) if values else None


def _plan(rows, traces: dict[str, dict[str, str | None]], uses_images: bool, targets: dict | None):
    """Distinct items, and per row: candidate item indices (plain, and with target traces when `targets`) and one
    query item index per query condition."""
    table: dict = {}

    def idx(item) -> int:
        return table.setdefault(item, len(table))

    plans = []
    for row in rows:
        ex = row.example
        items = [c or ("", ()) for c in candidate_items(ex, uses_images, row.candidates)]
        cands = [idx(c) for c in items]
        conditioned = None
        if targets is not None:
            found = [targets.get(target_key(ex["dataset"], c)) for c in row.candidates]
            conditioned = [idx(with_trace(c, t)) if t else k for c, t, k in zip(items, found, cands, strict=True)]
        q = query_item(ex, uses_images)
        queries = {NO_TRACE: idx(q)}
        for name, by_id in traces.items():
            trace = by_id.get(ex["id"])
            queries[name] = idx(with_trace(q, trace.strip()) if trace and trace.strip() else q)
        plans.append((cands, conditioned, queries))
    return plans, list(table)


def retrieval(rows: list, traces: dict[str, dict[str, str | None]], embedder, ties: str = "against_positive",
              target_traces: dict | None = None, sink=None) -> dict:  # fmt: skip
    """Scores per dataset, task, modality and overall for `no_trace` and every trace set (and each again with the
    target traces, `<name>+targets`, when `target_traces` is given); see the module docstring.

    `rows`: EvalRow objects; `traces`: set name -> {id: trace text or None (no usable trace: query alone)};
    `target_traces`: `target_key` -> trace text; `sink(dataset entry, condition, run, qrels, ids)` receives every
    dataset's ranking per condition (MMEB score files, TREC run). One dataset at a time (candidates never cross
    datasets): memory stays bounded by the largest dataset."""
    conditions = [NO_TRACE, *traces]
    if target_traces is not None:
        conditions += [c + TARGETS for c in conditions]
    by_dataset: dict[str, list] = defaultdict(list)
    for row in rows:
        by_dataset[row.example["dataset"]].append(row)
    datasets, per_query = {}, []
    # rows/s over the whole eval, on stderr (each dataset is embedded at once, so the bar moves a dataset at a time)
    with tqdm(total=len(rows), desc="eval retrieval", unit="row", mininterval=1.0) as bar:
        for ds, ds_rows in sorted(by_dataset.items()):
            datasets[ds], queries = _dataset(ds_rows, traces, embedder, conditions, ties, target_traces, sink)
            per_query += queries
            log.info("retrieval %s: %d rows, %s", ds, len(ds_rows), datasets[ds]["scores"])
            bar.update(len(ds_rows))
    return {"conditions": conditions, "ties": ties, "tie_policy": TIES[ties], "datasets": datasets,
            **_averages(datasets, conditions), "per_query": per_query}  # fmt: skip


def _dataset(rows: list, traces: dict, embedder, conditions: list[str], ties: str, targets, sink):
    """One dataset's entry and per-query rows."""
    ex0 = rows[0].example
    ds, task, metric = ex0["dataset"], ex0["task"], metric_for(ex0["task"])
    plans, items = _plan(rows, traces, embedder.uses_images, targets)
    ranked = [i for i, (cands, _, _) in enumerate(plans) if len(set(cands)) > 1]
    qrels = {}
    for i in ranked:
        rel = rows[i].example.get("relevance") or [1] + [0] * (len(plans[i][0]) - 1)
        qrels[f"{i}"] = dict(zip(doc_ids(len(rel), ties), map(int, rel), strict=True))
    entry = {"task": task, "meta_task": meta_task(task, ds), "modality": modality(task), "metric": metric,
             "rows": len(rows), "queries": len(ranked), "indistinguishable": len(rows) - len(ranked),
             "no_relevant": sum(not any(v > 0 for v in q.values()) for q in qrels.values()),
             "candidates_mean": _mean([len(cands) for cands, _, _ in plans]),
             "no_trace_used": {n: sum(not (traces[n].get(rows[i].example["id"]) or "").strip() for i in ranked)
                               for n in traces},
             "scores": dict.fromkeys(conditions)}  # fmt: skip
    if targets is not None:
        entry["target_traces_used"] = sum(c != p for i in ranked for c, p in zip(plans[i][1], plans[i][0], strict=True))
    if not ranked:  # nothing this embedder can rank: skip the embedding too
        return entry, []
    emb = embedder.embed(items)
    if np.isnan(emb).any():  # check_images ran before, so only an embedder-side failure gets here
        raise EmbedError(f"{ds}: the embedder could not embed some items (see the log above)")
    per_query = []
    for cond in conditions:
        base, with_targets = (cond[: -len(TARGETS)], True) if cond.endswith(TARGETS) else (cond, False)
        run = {}
        for i in ranked:
            plain, conditioned, queries = plans[i]
            cands = conditioned if with_targets else plain
            uniq, inverse = np.unique(np.asarray(cands), return_inverse=True)
            sims = (emb[uniq] @ emb[queries[base]])[inverse]  # identical items -> bit-identical scores
            run[f"{i}"] = dict(zip(doc_ids(len(sims), ties), sims.tolist(), strict=True))
        values = measure_all(run, qrels)
        mean, by_query = headline(values, metric)
        entry["scores"][cond] = round(mean, 4)
        per_query += [{"id": rows[i].example["id"], "dataset": ds, "condition": cond, "metric": metric,
                       "value": by_query[f"{i}"]} for i in ranked]  # fmt: skip
        if sink is not None:
            sink(entry | {"dataset": ds}, cond, run, qrels, values, {f"{i}": rows[i].example["id"] for i in ranked})
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

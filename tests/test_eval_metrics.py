"""`distill eval` retrieval metrics: equal to pytrec_eval's on a hand-made ranking table (ties, a query with no relevant
candidate), and the ranking path with a fake embedder whose vectors we choose."""

import math

import ir_measures
import numpy as np
import pytest
import pytrec_eval

from distill.embed_text import DOC_QUERY
from distill.eval.inputs import EvalRow
from distill.eval.retrieval import NO_TRACE, doc_id, headline, measure_all, retrieval

# query -> candidate scores (candidate 0 is the positive unless `relevance` grades them), then hand-computed values.
# NDCG as trec_eval computes it: linear gain (the grade), log2(rank + 1) discount.
TABLE = [
    # name,          scores,                          relevance,        hit@1, ndcg@5
    ("top",          [0.9, 0.1, 0.2],                 None,             1.0, 1.0),
    ("tie_at_top",   [0.7, 0.7, 0.1],                 None,             0.0, 1 / math.log2(3)),  # tie: against it
    ("three_way",    [0.5, 0.5, 0.5, 0.9],            None,             0.0, 1 / math.log2(5)),  # rank 4 of 4
    ("third",        [0.3, 0.9, 0.8, 0.1],            None,             0.0, 0.5),
    ("below_five",   [0.1, 0.9, 0.8, 0.7, 0.6, 0.5],  None,             0.0, 0.0),
    ("no_relevant",  [0.9, 0.1],                      [0, 0],           0.0, 0.0),
    ("graded",       [0.2, 0.9, 0.1],                 [0, 2, 1],        1.0, 2.5 / (2 + 1 / math.log2(3))),
]  # fmt: skip


def _run_qrels():
    run, qrels = {}, {}
    for name, scores, rel, *_ in TABLE:
        rel = rel or [1] + [0] * (len(scores) - 1)
        run[name] = {doc_id(k): s for k, s in enumerate(scores)}
        qrels[name] = {doc_id(k): r for k, r in enumerate(rel)}
    return run, qrels


@pytest.mark.parametrize("metric, trec, column", [("Hit@1", "success_1", 3), ("NDCG@5", "ndcg_cut_5", 4)])
def test_metrics_equal_pytrec_eval_and_hand_values(metric, trec, column):
    run, qrels = _run_qrels()
    mean, per_query = headline(measure_all(run, qrels), metric)
    direct = pytrec_eval.RelevanceEvaluator(qrels, {trec}).evaluate(run)
    assert set(per_query) == set(qrels)  # the query with no relevant candidate is scored (0), not dropped
    for name, *_ in TABLE:
        assert per_query[name] == pytest.approx(direct[name][trec])
    for row in TABLE:
        assert per_query[row[0]] == pytest.approx(row[column]), row[0]
    assert mean == pytest.approx(sum(r[column] for r in TABLE) / len(TABLE))
    measure = ir_measures.parse_measure({"Hit@1": "Success@1", "NDCG@5": "nDCG@5"}[metric])
    assert mean == pytest.approx(ir_measures.pytrec_eval.evaluator([measure], qrels).calc_aggregate(run)[measure])


class FakeEmbedder:
    """An item's first image, else its text -> a fixed 2-d direction; unknown ones point away from everything."""

    uses_images = True

    def __init__(self, angles: dict[str, float]):
        self.angles = angles

    def embed(self, items):
        a = [self.angles.get(images[0] if images else text, 3.0) for text, images in items]
        return np.array([[math.cos(x), math.sin(x)] for x in a], np.float32)


def _row(i, dataset, task, query, cands, images=None):
    ex = {"id": f"{dataset}-{i}", "task": task, "dataset": dataset, "instruction": "", "answer": None,
          "query": {"text": query, "images": []},
          "positive": {"text": cands[0], "images": list(images or [])},
          "negatives": [{"text": c, "images": list(images or [])} for c in cands[1:]]}  # fmt: skip
    return EvalRow("rows.jsonl", i + 1, ex)


def test_retrieval_conditions_ties_indistinguishable_and_visdoc_metric():
    # Directions (radians) of each text; the query "q" is at 0, the teacher's query + trace ("q\nT") at 0.45.
    angles = {"q": 0.0, "q\nT": 0.45, "q\nbad": 1.0, "q\nworse": -0.5, "pos": 0.5, "twin": 0.5, "neg": 0.2,
              "far": 2.0, "same": 0.1}  # fmt: skip
    rows = [
        _row(0, "Cls", "classification", "q", ["pos", "neg"]),  # neg is nearer the bare query
        _row(1, "Cls", "classification", "q", ["pos", "far"]),
        _row(2, "Cls", "classification", "q", ["same", "same"]),  # one item for this embedder: left out
        _row(3, "Cls", "classification", "q", ["pos", "twin"]),  # an exact tie: counts against the positive
        _row(4, "Doc", "visdoc", "q", ["", "", ""]),  # pages: told apart by their images (VLM2Vec's fixed texts)
        _row(5, "Unjudged", "vqa", "q", ["pos", "neg"]),
    ]
    rows[5].example["relevance"] = [0, 0]  # no relevant candidate: scored 0, kept in the mean
    doc = rows[4].example
    doc["positive"]["images"], doc["negatives"][0]["images"], doc["negatives"][1]["images"] = ["pos"], ["far"], ["neg"]
    angles |= {f"{DOC_QUERY} q": 0.0, f"{DOC_QUERY} q\nT": 0.45, f"{DOC_QUERY} q\nbad": 1.0}
    traces = {"teacher": {"Cls-0": "T", "Cls-1": "T", "Cls-2": "T", "Cls-3": "T", "Doc-4": "T", "Unjudged-5": "T"},
              "student": {"Cls-0": "worse", "Cls-1": None, "Cls-2": "bad", "Cls-3": "bad", "Doc-4": "bad",
                          "Unjudged-5": "T"}}  # fmt: skip
    out = retrieval(rows, traces, FakeEmbedder(angles))
    cls, doc = out["datasets"]["Cls"], out["datasets"]["Doc"]
    assert out["conditions"] == [NO_TRACE, "teacher", "student"]
    assert (cls["queries"], cls["indistinguishable"], cls["metric"]) == (3, 1, "Hit@1")
    assert cls["scores"] == {NO_TRACE: 0.3333, "teacher": 0.6667, "student": 0.3333}
    assert cls["no_trace_used"] == {"teacher": 0, "student": 1}  # Cls-1: no student trace, the query alone
    assert doc["metric"] == "NDCG@5" and doc["modality"] == "visdoc"
    # bare query: neg (0.2) beats pos (0.5): rank 2 -> 1/log2(3); with either trace pos is first.
    assert doc["scores"] == {NO_TRACE: round(1 / math.log2(3), 4), "teacher": 1.0, "student": 1.0}
    unjudged = out["datasets"]["Unjudged"]
    assert (unjudged["queries"], unjudged["no_relevant"], unjudged["scores"]["teacher"]) == (1, 1, 0.0)
    assert out["overall"]["datasets"] == 3
    assert out["overall"]["scores"]["teacher"] == pytest.approx((0.6667 + 1.0 + 0.0) / 3, abs=1e-4)
    assert out["by_task"]["vqa"]["scores"]["teacher"] == 0.0
    assert set(out["by_modality"]) == {"image", "visdoc"}
    assert {q["condition"] for q in out["per_query"]} == {NO_TRACE, "teacher", "student"}


@pytest.mark.parametrize(
    "task, dataset, meta",
    [("vqa", "OK-VQA", "vqa"), ("video", "DemoVideoCLS", "video classification"),
     ("video", "MSR-VTT", "video retrieval"), ("video", "QVHighlight", "video moment"), ("video", "NewSet", "video")],
)  # fmt: skip
def test_meta_task_splits_video_like_mmeb_v2(task, dataset, meta):
    from distill.eval.retrieval import meta_task

    assert meta_task(task, dataset) == meta

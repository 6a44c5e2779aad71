"""Target-side traces end to end: each distinct target once (generate --side target), embedding_gain on page traces
through the queries the qrels point at (never the page against itself) and on other target-side rows with every
candidate conditioned by its own trace, and `distill eval --target_traces` (positives and negatives alike)."""

import json
import math
from functools import partial

import numpy as np
import pytest

from distill.data.mmeb import load_examples
from distill.data.targets import distinct_targets
from distill.embed_text import candidate_items, query_item, target_item, trace_for_embedding, with_trace
from distill.io import write_jsonl_atomic
from distill.records import make_example, side
from distill.scoring.embedding import embedding_gain
from distill.testing.traces import trace_row


def img(path):
    return side("", [path])


def test_each_distinct_target_once_negatives_included(tmp_path):
    rows = [make_example("r1", "retrieval", "MSCOCO_t2i", side("a bus"), "Find:", img("bus.jpg"), [img("car.jpg")]),
            make_example("r2", "retrieval", "MSCOCO_t2i", side("a bus again"), "Find:", img("bus.jpg"),
                         [img("tree.jpg"), img("car.jpg")]),
            make_example("r3", "retrieval", "MSCOCO_t2i", side("a car"), "Find:", img("car.jpg"), [img("bus.jpg")])]  # fmt: skip
    path = tmp_path / "MSCOCO_t2i.jsonl"
    write_jsonl_atomic(path, rows)
    out = [row for _, row in distinct_targets(partial(load_examples, path, None, "target"))]
    # r1 (bus), the tree (only ever a negative: a target-only row), r3 (car: a positive later, so sent as r3, not as
    # r1's negative); r2 repeats the bus and is not sent again
    assert [r["id"] for r in out][0] == "r1" and out[2]["id"] == "r3" and len(out) == 3
    assert out[1]["target_only"] and out[1]["positive"] == img("tree.jpg") and not out[1]["query"]["text"]
    from distill.teacher.generate import iter_shard
    from distill.teacher.generate_config import GenerateConfig

    config = GenerateConfig(input=str(path), output=str(tmp_path / "t.jsonl"), model="m", side="target")
    assert [r["id"] for r in iter_shard(config)] == [r["id"] for r in out]  # what generate --side target sends
    assert [r["id"] for r in iter_shard(GenerateConfig(**{**vars(config), "side": "query"}))] == ["r1", "r2", "r3"]


class Angles:
    """Conditioned items (text with a trace: a newline) by their text, others by their first visual, else text."""

    uses_images = True

    def __init__(self, angles):
        self.angles, self.items = angles, []

    def key(self, item):
        text, visuals = item
        return text if "\n" in text.strip() or not visuals else visuals[0]

    def embed(self, items):
        self.items += items
        a = [self.angles[self.key(i)] for i in items]
        return np.array([[math.cos(x), math.sin(x)] for x in a], np.float32)


def _page(cid, queries):
    ex = make_example(
        f"Docs-page-{cid}", "visdoc", "ViDoRe_docvqa", img(f"{cid}.png"), "Understand:", img(f"{cid}.png")
    )
    return {**ex, "corpus_id": cid, "side": "target",
            "queries": [{"query_id": q, "text": t, "instruction": "", "score": s} for q, t, s in queries]}  # fmt: skip


def test_page_trace_is_scored_through_its_qrels_queries_never_against_itself():
    p1 = trace_row(
        _page("p1", [("q1", "revenue 2019?", 2), ("q3", "costs?", 1)]), 0, "<think>t</think>A revenue table."
    )
    p2 = trace_row(_page("p2", [("q2", "staff count?", 1)]), 0, "<think>t</think>A staff list.")
    p1, p2 = {**p1, "side": "target"}, {**p2, "side": "target"}
    page1 = target_item(p1, p1["positive"], True)
    q = {k: query_item({"task": "visdoc", "dataset": "ViDoRe_docvqa", "query": {"text": t}}, True)[0]
         for k, t in (("q1", "revenue 2019?"), ("q2", "staff count?"), ("q3", "costs?"))}  # fmt: skip
    cond1 = with_trace(page1, trace_for_embedding(p1, "full"))[0]
    # the page alone ties its query q1 with the other page's query q2; its trace turns it towards q1
    emb = Angles({"p1.png": 0.3, "p2.png": 1.0, cond1: 0.45, q["q1"]: 0.5, q["q2"]: 0.1, q["q3"]: 2.0,
                  with_trace(target_item(p2, p2["positive"], True), trace_for_embedding(p2, "full"))[0]: 1.0})  # fmt: skip
    v1, _ = embedding_gain([p1, p2], emb, num_candidates=2)
    assert (v1["rank_query"], v1["rank_trace"], v1["candidates"]) == (2, 1, 2)  # a tie counts against it
    assert v1["gain"] == pytest.approx(math.cos(0.05) - math.cos(0.35), abs=1e-5) and v1["gain"] > 0
    page2 = target_item(p2, p2["positive"], True)
    cond2 = with_trace(page2, trace_for_embedding(p2, "full"))
    # pages only ever in the query role, queries only as candidates; q3 (p1's other relevant query) never a negative
    assert set(emb.items) == {page1, (cond1, page1[1]), (q["q1"], ()), (q["q2"], ()), page2, cond2}


def test_target_side_trace_conditions_the_negatives_with_their_own_traces():
    def row(i, text, pos, neg, trace):
        ex = make_example(f"r{i}", "retrieval", "MSCOCO_t2i", side(text), "Find:", img(pos), [img(neg)])
        return {**trace_row(ex, 0, f"<think>t</think>{trace}"), "side": "target"}

    r1, r2 = (
        row(1, "a red bus", "bus.jpg", "car.jpg", "A red bus."),
        row(2, "a grey car", "car.jpg", "bus.jpg", "A car."),
    )
    bus, car = candidate_items(r1, True)
    bus_t, car_t = (with_trace(i, trace_for_embedding(r, "full")) for i, r in ((bus, r1), (car, r2)))
    emb = Angles({query_item(r1, True)[0]: 0.0, query_item(r2, True)[0]: 0.0, "bus.jpg": 0.4, "car.jpg": 0.2,
                  bus_t[0]: 0.1, car_t[0]: 0.3})  # fmt: skip
    v1, _ = embedding_gain([r1, r2], emb, num_candidates=2)
    assert car_t in emb.items  # the negative carries r2's trace, not only r1's positive its own
    # without traces car (0.2) beats bus (0.4); with them bus (0.1) beats car (0.3)
    assert (v1["rank_query"], v1["rank_trace"]) == (2, 1)
    assert v1["margin_trace"] == pytest.approx(math.cos(0.1) - math.cos(0.3), abs=1e-5)


def test_target_only_rows_are_not_scored():
    ex = make_example("t", "retrieval", "MSCOCO_t2i", side(), "Find:", img("tree.jpg"))
    row = {**trace_row({**ex, "target_only": True}, 0, "<think>t</think>A tree."), "side": "target"}
    assert embedding_gain([row], Angles({}), num_candidates=2) == [None]


def test_eval_target_traces_end_to_end_and_bad_file(tmp_path, demo_dir, capsys):
    """Target traces from a file condition every candidate with a trace (the `+targets` conditions); a query-side file
    given as target traces is one error line naming file and line."""
    from distill.eval.stage import EvalConfig, main

    rows = [json.loads(line) for line in (demo_dir / "eval" / "ShapesI2T.jsonl").read_text().splitlines()]
    examples = [r for _, r in load_examples(demo_dir / "eval" / "ShapesI2T.jsonl")]
    write_jsonl_atomic(tmp_path / "teacher.jsonl", [trace_row(e, 0, "<think>x</think>Something.") for e in examples])
    # a caption target described by its own words: the right caption gets nearer its image's query
    targets = [{**trace_row(make_example(f"t{i}", "retrieval", "ShapesI2T", side(), "", side(c)), 0,
                            f"<think>x</think>{c}"), "side": "target"}
               for i, c in enumerate(dict.fromkeys(t for r in rows for t in r["tgt_text"]))]  # fmt: skip
    write_jsonl_atomic(tmp_path / "targets.jsonl", targets)
    common = dict(traces=[f"teacher={tmp_path / 'teacher.jsonl'}"], eval_rows=[str(demo_dir / "eval" / "ShapesI2T.jsonl")],
                  image_root=str(demo_dir), require_think=False, embedder="hashing")  # fmt: skip
    assert (
        main(EvalConfig(output_dir=str(tmp_path / "out"), target_traces=str(tmp_path / "targets.jsonl"), **common)) == 0
    )
    ret = json.loads((tmp_path / "out" / "eval.json").read_text())["retrieval"]
    assert ret["conditions"] == ["no_trace", "teacher", "no_trace+targets", "teacher+targets"]
    ds = ret["datasets"]["ShapesI2T"]
    assert ds["target_traces_used"] == sum(len(r["tgt_text"]) for r in rows)  # every candidate, negatives too
    assert (tmp_path / "out" / "mmeb_scores" / "teacher+targets" / "image" / "ShapesI2T_score.json").exists()
    assert main(EvalConfig(output_dir=str(tmp_path / "bad"), target_traces=str(tmp_path / "teacher.jsonl"),
                           **common)) == 2  # fmt: skip
    assert "teacher.jsonl:1: not a target-side trace row" in capsys.readouterr().err


def test_the_score_cache_key_follows_the_other_candidates_traces():
    """A target-side row's value depends on its candidates' own traces, so its cache key must change with them (own
    negatives and pool candidates alike), and must not when they stay."""
    from distill.scoring.embedding import EmbeddingGain
    from distill.scoring.pool import PositivePool

    def row(i, pos, negs, trace):
        ex = make_example(f"r{i}", "retrieval", "MSCOCO_t2i", side(f"q{i}"), "Find:", img(pos), [img(n) for n in negs])
        return {**trace_row(ex, 0, f"<think>t</think>{trace}"), "side": "target"}

    def extra(rows):
        scorer = EmbeddingGain(Angles({}), num_candidates=3)
        pool = PositivePool(rows.__getitem__)
        pool.add(scorer.pool_features(rows, range(len(rows))))
        return scorer._plan(rows[0], pool).extra

    base = [
        row(1, "bus.jpg", ["car.jpg"], "A bus."),
        row(2, "car.jpg", [], "A car."),
        row(3, "tree.jpg", [], "A tree."),
    ]
    assert extra(base) == extra([dict(r) for r in base])
    for k, changed in ((1, "A grey car."), (2, "A tall tree.")):  # r1's own negative; a pool candidate
        other = [*base[:k], row(k + 1, base[k]["positive"]["images"][0], [], changed), *base[k + 1 :]]
        assert extra(other) != extra(base), k

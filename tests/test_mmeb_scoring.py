"""Scoring like MMEB: the embedder's text per task kind (VLM2Vec-V2's eval), both tie policies against hand-computed
scores, MMEB's score files read the way its leaderboard script reads them, the TREC run read back by ir-measures, and
target-side traces conditioning every candidate that has one."""

import json
import math

import ir_measures
import numpy as np
import pytest

from distill.embed_text import candidate_items, query_item, with_trace
from distill.eval.inputs import EvalRow
from distill.eval.mmeb_files import MMEBFiles
from distill.eval.retrieval import NO_TRACE, retrieval, target_key


def ex(dataset, task, query, cands, instruction="", target_instruction="", video=None, images=()):
    row = {"id": f"{dataset}-{query}", "task": task, "dataset": dataset, "instruction": instruction, "answer": None,
           "query": {"text": query, "images": list(images), **({"video": video} if video else {})},
           "positive": cands[0], "negatives": cands[1:]}  # fmt: skip
    if target_instruction:
        row["target_instruction"] = target_instruction
    return row


def img(text, path):
    return {"text": text, "images": [path]}


def txt(text):
    return {"text": text, "images": []}


def vid(path):
    return {"text": "", "images": [], "video": path}


PAGE = " Understand the content of the provided document image."
VIDEO = " Understand the content of the provided video."
# one row per task kind: (row, query text, candidate texts) as VLM2Vec-V2's eval builds them after the visual token
KINDS = [
    ("image classification: tgt_inst ignored",
     ex("ImageNet-1K", "classification", "", [txt("tench"), txt("goldfish")], "Represent the given image for "
        "classification", "Represent the class label:", images=["q.jpg"]),
     " Represent the given image for classification\n", ["tench", "goldfish"]),
    ("image QA: the instruction on its own line",
     ex("OK-VQA", "vqa", "What is it?", [txt("a dog"), txt("a cat")], "Represent the given image with the following "
        "question:", "Represent the answer:", images=["q.jpg"]),
     "\nRepresent the given image with the following question: What is it?\n", ["a dog", "a cat"]),
    ("image i2t: captions alone",
     ex("MSCOCO_i2t", "retrieval", "", [txt("a man"), txt("a bus")], "Find an image caption describing the given "
        "image.", "Represent the caption:", images=["q.jpg"]),
     " Find an image caption describing the given image.\n", ["a man", "a bus"]),
    ("image t2i: tgt_inst on image-only candidates, VisDial's extra newline",
     ex("VisDial", "retrieval", "Q:A", [img("", "a.jpg"), img("", "b.jpg")], "Represent the given dialogue about an "
        "image, which is used for image retrieval:", "Represent the given image"),
     "Represent the given dialogue about an image, which is used for image retrieval: Q:A\n\n",
     [" Represent the given image\n"] * 2),
    ("image t2i with captions (WebQA): tgt_inst + caption",
     ex("WebQA", "retrieval", "Who?", [img("Caption A", "a.jpg"), img("Caption B", "b.jpg")], "Find a Wikipedia "
        "image that answers this question:", "Represent the given Wikipedia image with related text information:"),
     "Find a Wikipedia image that answers this question: Who?\n",
     [" Represent the given Wikipedia image with related text information: Caption A\n",
      " Represent the given Wikipedia image with related text information: Caption B\n"]),
    ("grounding (i2i): image-only candidates get no final newline",
     ex("RefCOCO", "grounding", "the bus", [img("", "a.jpg"), img("", "b.jpg")], "Select the portion of the image "
        "that isolates the object of the given label:", "Represent the given cropped image of the object"),
     "\nSelect the portion of the image that isolates the object of the given label: the bus\n",
     [" Represent the given cropped image of the object"] * 2),
    ("visual document: fixed instructions, the row's are not used",
     ex("ViDoRe_docvqa", "visdoc", "revenue?", [img("", "p1.png"), img("", "p2.png")], "Some other instruction:",
        "Represent the page:"),
     "Find a document image that matches the given query: revenue?", [PAGE, PAGE]),
    ("video classification: the dataset's instruction alone",
     ex("HMDB51", "video", "", [txt("wave"), txt("run")], "Recognize the category of the video content.",
        video="v/1"),
     " What actions or objects interactions are the person in the video doing?", ["wave", "run"]),
    ("video QA: VLM2Vec's prompt before the question (options as the reader renders them)",
     ex("NExTQA", "video", "why?\nOptions:\n(A) x\n(B) y", [txt("x"), txt("y")], video="v/1"),
     " Given a video and a question, select the most accurate answer from the provided candidates. Return only the "
     "exact text of your chosen answer. Question:  why?\nOptions:\n(A) x\n(B) y", ["x", "y"]),
    ("text -> video: the dataset's query instruction, no tgt_inst",
     ex("DiDeMo", "video", "a dog runs", [vid("v/1"), vid("v/2")], "Find a video that contains the following visual "
        "content:", "ignored"),
     "Find a video that includes the following described scenes: a dog runs", [VIDEO, VIDEO]),
    ("moment retrieval: the video query and its clips",
     ex("QVHighlight", "video", "a goal", [vid("c/1"), vid("c/2")], video="v/1"),
     " Find the clip that corresponds to the described scene in the given video: a goal", [VIDEO, VIDEO]),
    ("a dataset outside MMEB-V2: the generic items",
     ex("ShapesT2I", "retrieval", "a red square", [img("", "a.png"), img("", "b.png")], "Find an image:",
        "Represent the image:"),
     "Find an image: a red square", ["Represent the image:"] * 2),
]  # fmt: skip


@pytest.mark.parametrize("name, row, query, cands", KINDS, ids=[k[0].split(":")[0] for k in KINDS])
def test_item_text_per_task_kind_is_vlm2vecs(name, row, query, cands):
    assert query_item(row, uses_images=True)[0] == query
    items = candidate_items(row, uses_images=True)
    assert [text for text, _ in items] == cands
    assert all(len(v) == bool(s.get("images")) + bool(s.get("video")) for (_, v), s in
               zip(items, [row["positive"], *row["negatives"]], strict=True))  # fmt: skip
    assert with_trace((query, ()), " T ")[0] == query.rstrip() + "\nT"


class Angles:
    """An item's first visual, else its text -> a fixed 2-d direction (unknown: pointing away)."""

    uses_images = True

    def __init__(self, angles):
        self.angles = angles

    def embed(self, items):
        a = [self.angles.get(v[0] if v else t, 3.0) for t, v in items]
        return np.array([[math.cos(x), math.sin(x)] for x in a], np.float32)


def _rows():
    """OK-VQA (Hit@1): a tie at the top, a clear hit, a miss. ViDoRe (NDCG@5, graded): the relevant page ties with an
    irrelevant one."""
    qa = [ex("OK-VQA", "vqa", q, [txt(p), *map(txt, negs)], images=["i.jpg"]) for q, p, negs in
          (("q1", "tie_pos", ["tie_neg", "far"]), ("q2", "near", ["far"]), ("q3", "mid", ["near"]))]  # fmt: skip
    doc = ex("ViDoRe_docvqa", "visdoc", "d1", [img("", "rel2.png"), img("", "tie.png"), img("", "rel1.png")])
    doc["relevance"] = [2, 0, 1]
    rows = [EvalRow("rows.jsonl", i + 1, r) for i, r in enumerate([*qa, doc])]
    angles = {"tie_pos": 0.1, "tie_neg": 0.1, "near": 0.05, "mid": 0.5, "far": 2.0, "rel2.png": 0.2, "tie.png": 0.2,
              "rel1.png": 0.3, "i.jpg": 0.0}  # fmt: skip
    for r in rows:  # every query points at 0 (the OK-VQA ones by their image)
        angles[query_item(r.example, True)[0]] = 0.0
    return rows, Angles(angles)


# hand computation: hit@1 per OK-VQA query, and the ViDoRe ranking with its NDCG (linear gain, log2 discount)
IDCG = 2 + 1 / math.log2(3)
HAND = {
    "against_positive": {"OK-VQA": (0 + 1 + 0) / 3, "ViDoRe_docvqa": (0 + 2 / math.log2(3) + 1 / math.log2(4)) / IDCG},
    "argmax_first": {"OK-VQA": (1 + 1 + 0) / 3, "ViDoRe_docvqa": (2 + 0 + 1 / math.log2(4)) / IDCG},
}


def leaderboard_read(base):
    """Read score files as MMEB's experiments/report_score_v2.py does: <modality>/<Dataset>_score.json, the modality's
    main metric (hit@1 image and video, ndcg_linear@5 visdoc) from the JSON dict."""
    modality2metric = {"image": "hit@1", "video": "hit@1", "visdoc": "ndcg_linear@5"}
    scores = {}
    for modality, metric in modality2metric.items():
        folder = base / modality
        if not folder.is_dir():
            continue
        for f in folder.iterdir():
            if f.name.endswith("_score.json"):
                data = json.loads(f.read_text())
                assert isinstance(data[metric], float) and data["num_pred"] == data["num_data"]
                scores[f.name[: -len("_score.json")]] = data[metric]
    return scores


@pytest.mark.parametrize("ties", ["against_positive", "argmax_first"])
def test_scores_score_files_and_trec_run_equal_the_hand_computation(tmp_path, ties):
    rows, embedder = _rows()
    sink = MMEBFiles(tmp_path, depth=100)
    out = retrieval(rows, {}, embedder, ties, sink=sink)
    files = sink.close()
    assert out["ties"] == ties
    for ds, value in HAND[ties].items():
        assert out["datasets"][ds]["scores"][NO_TRACE] == pytest.approx(value, abs=1e-4)
    read = leaderboard_read(tmp_path / "mmeb_scores" / NO_TRACE)
    assert read == pytest.approx(HAND[ties], abs=1e-6)
    assert "mmeb_scores/no_trace/visdoc/ViDoRe_docvqa_score.json" in files
    # trec_eval's own order on the run file reproduces the policy (ir-measures runs trec_eval's code)
    run = list(ir_measures.read_trec_run(str(tmp_path / "trec" / "no_trace.run")))
    qrels = list(ir_measures.read_trec_qrels(str(tmp_path / "trec" / "qrels.txt")))
    per_query = {m.query_id: m.value for m in ir_measures.iter_calc([ir_measures.P @ 1, ir_measures.nDCG @ 5], qrels,
                                                                       run) if m.query_id.startswith(("OK", "ViD"))}  # fmt: skip
    assert len(run) == 3 + 2 + 2 + 3 and len(per_query) == 4
    hits = [m.value for m in ir_measures.iter_calc([ir_measures.Success @ 1], qrels, run) if "OK-VQA" in m.query_id]
    assert sum(hits) / 3 == pytest.approx(HAND[ties]["OK-VQA"])
    doc_q, doc_run = ([r for r in rs if "ViDoRe" in r.query_id] for rs in (qrels, run))
    ndcg = ir_measures.calc_aggregate([ir_measures.nDCG @ 5], doc_q, doc_run)
    assert ndcg[ir_measures.nDCG @ 5] == pytest.approx(HAND[ties]["ViDoRe_docvqa"])


def test_target_traces_condition_negatives_too():
    """A trace for the positive alone would lift it by its extra text; every candidate with a trace gets its own."""
    row = ex("MSCOCO_t2i", "retrieval", "a red bus", [img("", "bus.jpg"), img("", "car.jpg")], "Find me:",
             "Represent the given image")  # fmt: skip
    rows = [EvalRow("rows.jsonl", 1, row)]
    cand = candidate_items(row, True)
    texts = {c[0] for c in cand}
    assert len(texts) == 1  # image-only candidates: the same text before the traces
    angles = {query_item(row, True)[0]: 0.0}
    emb = Angles(angles)

    class ByText(Angles):  # the traces decide: conditioned items are told apart by their text
        def embed(self, items):
            return super().embed([(t, ()) if "\n" in t else (t, v) for t, v in items])

    emb = ByText({**angles, "bus.jpg": 0.4, "car.jpg": 0.2, with_trace(cand[0], "red bus")[0]: 0.1,
                  with_trace(cand[1], "grey car")[0]: 1.0})  # fmt: skip
    targets = {target_key("MSCOCO_t2i", row["positive"]): "red bus",
               target_key("MSCOCO_t2i", row["negatives"][0]): "grey car"}  # fmt: skip
    out = retrieval(rows, {}, emb, target_traces=targets)
    ds = out["datasets"]["MSCOCO_t2i"]
    assert out["conditions"] == [NO_TRACE, NO_TRACE + "+targets"]
    assert ds["scores"] == {NO_TRACE: 0.0, NO_TRACE + "+targets": 1.0} and ds["target_traces_used"] == 2

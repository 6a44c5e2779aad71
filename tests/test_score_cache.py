"""Score cache by content and streaming score (issue 11): adding a scorer to a scored file, or rerunning, does not
recompute the expensive scorers; chunked scoring gives the same file as one chunk. embedding_gain runs for real with
the model-free `hashing` embedder (what is tested is the pooling and the cache, not a model).

    pytest -q tests/test_score_cache.py
"""

import json
import random

import pytest

import distill.score as score_mod
from distill.cli import main as cli_main
from distill.data.mmeb import load_examples
from distill.io import read_jsonl, write_jsonl_atomic
from distill.scoring.pool import RowReader
from distill.scoring.registry import SCORERS
from distill.testing.traces import demo_trace_rows


@pytest.fixture
def traces(tmp_path, demo_dir):
    rows = demo_trace_rows([e for _, e in load_examples(demo_dir / "train") if isinstance(e, dict)])
    path = tmp_path / "traces.jsonl"
    write_jsonl_atomic(path, rows)
    return path


@pytest.fixture
def counting(monkeypatch):
    """`llm_judge` replaced by a cheap scorer that counts the rows it is asked to score (the real one needs a teacher;
    what is tested here is whether the stage asks it at all)."""
    seen = {"llm_judge": 0}

    def fake(name):
        def factory(model: str = "m"):
            def score(rows):
                seen[name] += len(rows)
                return [{"gain": len(r["trace"]["raw"]) % 7} for r in rows]

            return score

        return factory

    for name in seen:
        monkeypatch.setitem(SCORERS, name, fake(name))
    return seen


def _score(src, out, scorers):
    return cli_main(["score", "--input", str(src), "--output", str(out), "--scorers", json.dumps(scorers)])


GAIN = {"embedder": "hashing", "part": "final"}


def _cache_stats(out):
    return json.loads(out.with_name(out.stem + ".summary.json").read_text())["score_cache"]


def test_adding_a_scorer_reuses_the_cached_expensive_scores(traces, tmp_path, counting):
    first = {"format": None, "embedding_gain": GAIN, "llm_judge": {"model": "m"}}
    assert _score(traces, tmp_path / "s1/scored.jsonl", first) == 0
    n = len(read_jsonl(traces))
    assert counting == {"llm_judge": n}
    assert _cache_stats(tmp_path / "s1/scored.jsonl")["embedding_gain"] == {"hits": 0, "misses": n}
    # the scored file gains a scorer, written next to the first output: nothing expensive is recomputed
    second = {**first, "repetition": {"n": 4}}
    assert _score(tmp_path / "s1/scored.jsonl", tmp_path / "s1/rescored.jsonl", second) == 0
    assert counting == {"llm_judge": n}
    rows = read_jsonl(tmp_path / "s1/rescored.jsonl")
    assert all(set(r["scores"]) == {"format", "embedding_gain", "llm_judge", "repetition"} for r in rows)
    assert _cache_stats(tmp_path / "s1/rescored.jsonl") == {"embedding_gain": {"hits": n, "misses": 0},
                                                            "llm_judge": {"hits": n, "misses": 0}}  # fmt: skip


def _naive_candidates(rows: list[dict], num_candidates: int = 8) -> list[list]:
    """Per row, the texts of its negatives, then of the pool positives that top them up, by the documented rule (text
    embedder): the dataset's distinct positives in order of first appearance, after the row's own, cyclically."""
    text = lambda r, s: "\n".join(t for t in ((r.get("target_instruction") or "").strip(), s["text"].strip()) if t)  # noqa: E731
    pools: dict = {}
    for r in rows:
        pools.setdefault(r["dataset"], dict.fromkeys([]))[text(r, r["positive"])] = None
    out = []
    for r in rows:
        pool, pos = list(pools[r["dataset"]]), text(r, r["positive"])
        negs = [n for n in dict.fromkeys(text(r, s) for s in r["negatives"]) if n != pos]
        start, picked = pool.index(pos), []
        for k in range(1, len(pool)):
            if len(negs) + len(picked) + 1 >= num_candidates:
                break
            if (c := pool[(start + k) % len(pool)]) not in negs:
                picked.append(c)
        out.append(negs + picked)
    return out


@pytest.mark.parametrize("change", ["trace", "positive"])
def test_a_changed_row_recomputes_only_itself_and_the_rows_using_it(traces, tmp_path, counting, change):
    scorers = {"llm_judge": {"model": "m"}, "embedding_gain": GAIN}
    assert _score(traces, tmp_path / "a/scored.jsonl", scorers) == 0
    old = read_jsonl(traces)
    scoreable = {j for j, r in enumerate(read_jsonl(tmp_path / "a/scored.jsonl")) if r["scores"]["embedding_gain"]}
    rows = read_jsonl(traces)
    i = next(i for i, r in enumerate(rows) if r["dataset"] == "ShapesI2T" and r["sample_index"] == 0)
    if change == "trace":
        rows[i]["trace"]["raw"] += " more"
    else:  # a new caption: every row whose candidates include the old or the new one is recomputed too
        rows[i]["positive"]["text"] = "A brand new caption."
    write_jsonl_atomic(traces, rows)
    before = dict(counting)
    assert _score(traces, tmp_path / "a/scored.jsonl", scorers) == 0
    assert counting["llm_judge"] - before["llm_judge"] == 1  # only the changed row
    changed = {
        j for j, (a, b) in enumerate(zip(_naive_candidates(old), _naive_candidates(rows), strict=True)) if a != b
    }
    assert (len(changed & scoreable) > 3) == (change == "positive")  # other rows' candidates moved, or none did
    recomputed = len({i} | (changed & scoreable))  # a row without a trace has no candidates to change
    assert _cache_stats(tmp_path / "a/scored.jsonl")["embedding_gain"] == {"hits": len(rows) - recomputed,
                                                                           "misses": recomputed}  # fmt: skip
    # the values reused from the cache are those a run without the cache computes
    assert _score(traces, tmp_path / "fresh/scored.jsonl", scorers) == 0
    assert (tmp_path / "a/scored.jsonl").read_bytes() == (tmp_path / "fresh/scored.jsonl").read_bytes()


def test_chunked_scoring_equals_one_chunk(traces, tmp_path, monkeypatch):
    scorers = {"format": None, "answer_match": None, "self_consistency": None, "near_duplicate": {"threshold": 0.5}}
    assert _score(traces, tmp_path / "one/scored.jsonl", scorers) == 0
    monkeypatch.setattr(score_mod, "CHUNK_ROWS", 7)
    assert _score(traces, tmp_path / "many/scored.jsonl", scorers) == 0
    assert (tmp_path / "one/scored.jsonl").read_bytes() == (tmp_path / "many/scored.jsonl").read_bytes()


@pytest.mark.parametrize("order", ["file", "by_sample", "shuffled"])
def test_streamed_embedding_gain_equals_one_in_memory_call(traces, tmp_path, monkeypatch, order):
    """Chunks of 3 rows: every row's pool positives live in other chunks (the next ones, the dataset's start on
    wrap-around; `by_sample` puts an example's samples a third of the file apart, `shuffled` mixes the datasets)."""
    from distill.scoring.embedders import HashingEmbedder
    from distill.scoring.embedding import embedding_gain

    reads = []
    monkeypatch.setattr(
        RowReader, "__call__", lambda self, line, real=RowReader.__call__: reads.append(line) or real(self, line)
    )
    rows = read_jsonl(traces)
    if order == "by_sample":
        rows.sort(key=lambda r: r["sample_index"])
    elif order == "shuffled":
        random.Random(0).shuffle(rows)
    write_jsonl_atomic(traces, rows)
    monkeypatch.setattr(score_mod, "CHUNK_ROWS", 3)
    assert _score(traces, tmp_path / "s/scored.jsonl", {"embedding_gain": GAIN}) == 0
    streamed = [r["scores"]["embedding_gain"] for r in read_jsonl(tmp_path / "s/scored.jsonl")]
    assert streamed == embedding_gain(rows, HashingEmbedder(), part="final")
    assert reads  # pool positives were read back from other chunks
    assert sum(v is not None for v in streamed) > 60 and 8 in {v["candidates"] for v in streamed if v}
    # an independent count of each row's candidates (wrap-around included: the last rows of a dataset have 8 too)
    assert [1 + len(c) for v, c in zip(streamed, _naive_candidates(rows), strict=True) if v] == [
        v["candidates"] for v in streamed if v
    ]


def test_a_rerun_after_a_crash_reuses_the_finished_chunks(traces, tmp_path, monkeypatch):
    from distill.scoring.embedders import HashingEmbedder

    monkeypatch.setattr(score_mod, "CHUNK_ROWS", 50)
    real, calls = HashingEmbedder.embed, []

    def crash_on_third_chunk(self, items):
        calls.append(len(items))
        if len(calls) == 3:
            raise KeyboardInterrupt  # what a kill mid-run leaves behind: two chunks journaled, no output
        return real(self, items)

    monkeypatch.setattr(HashingEmbedder, "embed", crash_on_third_chunk)
    assert _score(traces, tmp_path / "c/scored.jsonl", {"embedding_gain": GAIN}) != 0  # "distill score: interrupted"
    assert not (tmp_path / "c/scored.jsonl").exists()
    monkeypatch.setattr(HashingEmbedder, "embed", real)
    assert _score(traces, tmp_path / "c/scored.jsonl", {"embedding_gain": GAIN}) == 0
    stats = _cache_stats(tmp_path / "c/scored.jsonl")["embedding_gain"]
    assert stats["hits"] >= 100 and stats["hits"] + stats["misses"] == 180
    assert _score(traces, tmp_path / "fresh/scored.jsonl", {"embedding_gain": GAIN}) == 0
    assert (tmp_path / "c/scored.jsonl").read_bytes() == (tmp_path / "fresh/scored.jsonl").read_bytes()


def test_a_plain_function_scorer_that_is_not_row_local_gets_every_row_at_once(traces, tmp_path, monkeypatch):
    """The documented exception: a third-party scorer registered as a plain function is handed all rows in one call."""
    calls = []

    def factory():
        def score(rows):
            calls.append(len(rows))
            return [len(rows)] * len(rows)

        return score

    monkeypatch.setitem(SCORERS, "whole_run", factory)
    monkeypatch.setattr(score_mod, "CHUNK_ROWS", 7)
    assert _score(traces, tmp_path / "w/scored.jsonl", {"whole_run": None, "format": None}) == 0
    assert calls == [180] and {r["scores"]["whole_run"] for r in read_jsonl(tmp_path / "w/scored.jsonl")} == {180}

"""Score cache by content and streaming score (issue 11): adding a scorer to a scored file, or rerunning, does not
recompute the expensive scorers; chunked scoring gives the same file as one chunk.

    pytest -q tests/test_score_cache.py
"""

import json

import pytest

import distill.score as score_mod
from distill.cli import main as cli_main
from distill.data.mmeb import load_examples
from distill.io import read_jsonl, write_jsonl_atomic
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
    """`embedding_gain` and `llm_judge` replaced by cheap scorers that count the rows they are asked to score (the
    real ones need a model / a teacher; what is tested here is whether the stage asks them at all)."""
    seen = {"embedding_gain": 0, "llm_judge": 0}

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


def test_adding_a_scorer_reuses_the_cached_expensive_scores(traces, tmp_path, counting):
    first = {"format": None, "embedding_gain": {"model": "m"}, "llm_judge": {"model": "m"}}
    assert _score(traces, tmp_path / "s1/scored.jsonl", first) == 0
    n = len(read_jsonl(traces))
    assert counting == {"embedding_gain": n, "llm_judge": n}
    # the scored file gains a scorer, written next to the first output: nothing expensive is recomputed
    second = {**first, "repetition": {"n": 4}}
    assert _score(tmp_path / "s1/scored.jsonl", tmp_path / "s1/rescored.jsonl", second) == 0
    assert counting == {"embedding_gain": n, "llm_judge": n}
    rows = read_jsonl(tmp_path / "s1/rescored.jsonl")
    assert all(set(r["scores"]) == {"format", "embedding_gain", "llm_judge", "repetition"} for r in rows)
    summary = json.loads((tmp_path / "s1/rescored.summary.json").read_text())
    assert summary["score_cache"] == {"embedding_gain": {"hits": n, "misses": 0}, "llm_judge": {"hits": n, "misses": 0}}


def test_a_changed_row_is_recomputed_by_the_row_local_scorer_only(traces, tmp_path, counting):
    scorers = {"llm_judge": {"model": "m"}, "embedding_gain": {"model": "m"}}
    assert _score(traces, tmp_path / "a/scored.jsonl", scorers) == 0
    rows = read_jsonl(traces)
    rows[5]["trace"]["raw"] += " more"
    write_jsonl_atomic(traces, rows)
    before = dict(counting)
    assert _score(traces, tmp_path / "a/scored.jsonl", scorers) == 0
    assert counting["llm_judge"] - before["llm_judge"] == 1  # only the changed row
    # embedding_gain's candidates come from other rows: any change of the input recomputes it for all rows
    assert counting["embedding_gain"] - before["embedding_gain"] == len(rows)


def test_chunked_scoring_equals_one_chunk(traces, tmp_path, monkeypatch):
    scorers = {"format": None, "answer_match": None, "self_consistency": None, "near_duplicate": {"threshold": 0.5}}
    assert _score(traces, tmp_path / "one/scored.jsonl", scorers) == 0
    monkeypatch.setattr(score_mod, "CHUNK_ROWS", 7)
    assert _score(traces, tmp_path / "many/scored.jsonl", scorers) == 0
    assert (tmp_path / "one/scored.jsonl").read_bytes() == (tmp_path / "many/scored.jsonl").read_bytes()

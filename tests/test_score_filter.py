"""`distill score` and `distill filter` end to end on demo-derived traces: order, idempotence, reasons, report."""

import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import yaml

from distill.cli import main as cli
from distill.data.mmeb import load_examples
from distill.io import read_jsonl, write_jsonl_atomic
from distill.testing.traces import demo_trace_rows

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run(tmp_path_factory, demo_dir):
    """Demo traces (60 examples x 3 samples), a tokenizer, score + filter recipes, and one scored file."""
    from distill.testing.tiny import build_tokenizer

    d = tmp_path_factory.mktemp("run")
    build_tokenizer().save_pretrained(d / "tok")
    traces = d / "traces.jsonl"
    write_jsonl_atomic(traces, demo_trace_rows([e for _, e in load_examples(demo_dir / "train")]))
    score_yaml = yaml.safe_load((REPO / "recipes/demo/score.yaml").read_text())
    score_yaml["scorers"]["length"]["tokenizer"] = str(d / "tok")
    (d / "score.yaml").write_text(yaml.safe_dump(score_yaml, sort_keys=False))
    argv = ["score", "--input", str(traces), "--output", str(d / "scored.jsonl"), "--config", str(d / "score.yaml"),
            "--image_root", str(demo_dir)]  # fmt: skip
    assert cli(argv) == 0
    return {"dir": d, "traces": traces, "scored": d / "scored.jsonl", "score_argv": argv}


@pytest.mark.slow
def test_score_adds_scores_keeps_rows_and_order_and_is_idempotent(run):
    traces, scored = read_jsonl(run["traces"]), read_jsonl(run["scored"])
    assert len(scored) == len(traces) == 180
    for before, after in zip(traces, scored, strict=False):
        assert {k: v for k, v in after.items() if k != "scores"} == before  # fields untouched, same order
        assert list(after["scores"]) == ["format", "truncated", "length", "repetition", "answer_match",
                                         "self_consistency", "near_duplicate", "embedding_gain"]  # fmt: skip
    first = run["scored"].read_bytes()
    assert cli(run["score_argv"]) == 0
    assert run["scored"].read_bytes() == first  # byte-identical rerun (embedding floats included)
    summary = orjson.loads((run["dir"] / "scored.summary.json").read_bytes())
    assert summary["rows_out"] == 180 and summary["scorers"]["answer_match"]["none"] > 0
    assert (run["dir"] / "scored.config.yaml").exists()


def test_score_reports_bad_lines_and_strict_stops(tmp_path, run):
    lines = run["traces"].read_bytes().splitlines(keepends=True)[:4]
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(lines[0] + b"{not json\n" + lines[1] + b"[1, 2]\n")
    out = tmp_path / "scored.jsonl"
    argv = ["score", "--input", str(bad), "--output", str(out), "--scorers", '{"format": null, "repetition": {"n": 2}}']
    assert cli(argv + ["--strict"]) == 1 and not out.exists()  # nothing written under --strict
    assert cli(argv) == 0
    assert [r["sample_index"] for r in read_jsonl(out)] == [0, 1]
    summary = orjson.loads((tmp_path / "scored.summary.json").read_bytes())
    assert [b["line"] for b in summary["bad_lines"]] == [2, 4]
    assert "invalid JSON" in summary["bad_lines"][0]["reason"]


def filter_argv(run, out: Path, *extra):
    return ["filter", "--input", str(run["scored"]), "--kept", str(out / "kept.jsonl"),
            "--rejected", str(out / "rejected.jsonl"), "--config", str(REPO / "recipes/demo/filter.yaml"), *extra]  # fmt: skip


@pytest.mark.slow
def test_filter_partitions_with_all_reasons_and_reruns_identically(run, tmp_path):
    assert cli(filter_argv(run, tmp_path)) == 0
    scored = read_jsonl(run["scored"])
    kept, rejected = read_jsonl(tmp_path / "kept.jsonl"), read_jsonl(tmp_path / "rejected.jsonl")
    assert len(kept) + len(rejected) == len(scored) and kept and rejected
    assert all(r["rejected_by"] for r in rejected) and all("rejected_by" not in r for r in kept)
    key = lambda r: (r["id"], r["sample_index"])  # noqa: E731
    stripped = {key(r): {k: v for k, v in r.items() if k != "rejected_by"} for r in rejected}
    assert {key(r): r for r in kept} | stripped == {key(r): r for r in scored}  # rows unchanged otherwise
    by_key = {key(r): r["rejected_by"] for r in rejected}
    for row in scored:
        if row["status"] == "failed":
            assert "status: failed" in by_key[key(row)]
        if row["status"] == "truncated":  # every reason, not just the first
            assert {"status: truncated", "format: 0 < min 1"} <= set(by_key[key(row)])
        if row["scores"]["answer_match"] == 0.0:
            assert "answer_match: 0 < min 1" in by_key[key(row)]
    # best-of-1 per id: no two kept rows share an example id
    assert len({r["id"] for r in kept}) == len(kept)
    first = [(tmp_path / f).read_bytes() for f in ("kept.jsonl", "rejected.jsonl", "report.md")]
    assert cli(filter_argv(run, tmp_path)) == 0
    assert [(tmp_path / f).read_bytes() for f in ("kept.jsonl", "rejected.jsonl", "report.md")] == first
    summary = orjson.loads((tmp_path / "kept.summary.json").read_bytes())
    assert summary["kept"] == len(kept) and set(summary["by_task"]) == {"vqa", "classification", "retrieval",
                                                                         "grounding"}  # fmt: skip
    for png in summary["plots"]:
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (tmp_path / "report.md").read_text()
    assert "## Examples rejected (up to 3 per check)" in report and (
        "status: failed" in report or "status: truncated" in report
    )


def test_filter_fails_clearly_on_an_unknown_score(run, tmp_path):
    argv = filter_argv(run, tmp_path, "--thresholds", '{"lenght": {"max": 5}}')
    assert cli(argv) == 2 and not (tmp_path / "kept.jsonl").exists()


@pytest.mark.parametrize(
    "override, message",
    [
        (["--thresholds", '{"length": {"min": 5, "max": 1}}'], "min 5 > max 1"),
        (["--thresholds", '{"length": {"below": 5}}'], "unknown key 'below'"),
        (["--thresholds", '{"length": {"min": 1, "none": "drop"}}'], "one of 'pass', 'reject'"),
        (["--thresholds", '{"length": {"min": [1, 2]}}'], "min: expected a number or null, got \\[1, 2\\]"),
        (["--best_of_n", '{"n": 2}'], "missing 1 required .* 'score'"),
        (["--best_of_n", '{"score": "length", "n": 2.5}'], "n: expected an integer, got 2.5"),
        (["--dedup", '{"score": "near_duplicate", "scope": "dataset"}'], "one of 'global', 'id'"),
    ],
)
def test_filter_config_validation(override, message):
    from distill.configs import parse_configs
    from distill.filter import FilterConfig

    with pytest.raises(ValueError, match=message):
        parse_configs((FilterConfig,), ["--input", "a", "--kept", "b", "--rejected", "c", *override])


def test_every_recipe_loads():
    from distill.configs import parse_configs
    from distill.filter import FilterConfig
    from distill.score import ScoreConfig

    recipes = sorted(REPO.glob("recipes/*/score.yaml")) + sorted(REPO.glob("recipes/*/filter.yaml"))
    assert len(recipes) >= 4
    for path in recipes:
        if path.name == "score.yaml":
            (cfg,) = parse_configs((ScoreConfig,), ["--config", str(path), "--input", "a", "--output", "b"])
            assert cfg.scorers
        else:
            (cfg,) = parse_configs((FilterConfig,), ["--config", str(path), "--input", "a", "--kept", "b",
                                                     "--rejected", "c"])  # fmt: skip
            assert cfg.thresholds


def test_cli_lists_the_verbs():
    out = subprocess.run([sys.executable, "-m", "distill", "--help"], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0 and "score" in out.stdout and "filter" in out.stdout


def test_score_fails_fast_on_a_missing_tokenizer(run, tmp_path):
    argv = ["score", "--input", str(run["traces"]), "--output", str(tmp_path / "s.jsonl"),
            "--scorers", f'{{"length": {{"tokenizer": "{tmp_path / "nowhere"}"}}}}']  # fmt: skip
    assert cli(argv) == 2 and not (tmp_path / "s.jsonl").exists()

"""The stage contract, checked for every declared verb (`distill.cli.VERBS`, each module's `STAGE`): `--help` works
and says where the output goes; a missing input, a bad config value and an unwritable output each give one line and
the documented exit status before any work; the config and the summary are written by the one rule."""

import json
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from distill.cli import VERBS, load_stage
from distill.cli import main as cli
from distill.data.mmeb import load_examples
from distill.io import write_jsonl_atomic
from distill.stage import EXIT_DATA, EXIT_USAGE, contract_paths, every_row_dropped, summary
from distill.testing.traces import demo_trace_rows

REPO = Path(__file__).resolve().parents[1]


def _files(tmp: Path, demo_dir: Path) -> dict:
    """Small valid inputs every verb can be pointed at."""
    examples = [e for _, e in load_examples(demo_dir / "train" / "ShapesVQA.jsonl")][:3]
    traces = [r for r in demo_trace_rows(examples) if r["status"] == "ok"][:3]
    write_jsonl_atomic(tmp / "ex.jsonl", examples)
    write_jsonl_atomic(tmp / "t.jsonl", traces)
    write_jsonl_atomic(tmp / "s.jsonl", [{**r, "scores": {"format": 1.0}} for r in traces])
    (tmp / "export").mkdir()
    (tmp / "model").mkdir()
    return {"ex": tmp / "ex.jsonl", "t": tmp / "t.jsonl", "s": tmp / "s.jsonl", "export": tmp / "export",
            "model": tmp / "model", "root": demo_dir}  # fmt: skip


# verb -> (argv from (inputs, output root), the input flag a missing path goes to, a bad YAML value)
CASES = {
    "validate": (lambda f, o: ["--input", f["ex"], "--image_root", f["root"], "--report", o / "report.json"],
                 "--input", {"strict": "maybe"}),
    "serve": (lambda f, o: ["--model", f"m={f['model']}"], None, {"port": "eighty"}),
    "generate": (lambda f, o: ["--input", f["ex"], "--image_root", f["root"], "--output", o / "t.jsonl", "--model",
                               "m", "--base_url", "http://127.0.0.1:9/v1"], "--input", {"max_tokens": 1.5}),
    "merge": (lambda f, o: ["--inputs", f["t"], "--output", o / "m.jsonl"], "--inputs", {"strict": 3}),
    "score": (lambda f, o: ["--input", f["t"], "--output", o / "s.jsonl", "--scorers", '{"format": null}'],
              "--input", {"strict": "maybe"}),
    "filter": (lambda f, o: ["--input", f["s"], "--kept", o / "k.jsonl", "--rejected", o / "r.jsonl"], "--input",
               {"strict": "maybe"}),
    "export": (lambda f, o: ["--input", f["t"], "--image_root", f["root"], "--output", o / "export"], "--input",
               {"min_pixels": "many"}),
    "train": (lambda f, o: ["--dataset_path", f["export"], "--output_dir", o / "model", "--model_name_or_path",
                            f["model"]], "--dataset_path", {"freeze_vision_tower": "maybe"}),
    "eval": (lambda f, o: ["--traces", f"teacher={f['t']}", "--output_dir", o / "eval"], None, {"require_think": 2}),
    "reason": (lambda f, o: ["--backend", "openai", "--model", "m", "--base_url", "http://127.0.0.1:9/v1", "--input",
                             f["ex"], "--image_root", f["root"], "--output", o / "r.jsonl"], "--input",
               {"max_new_tokens": "long"}),
    "embed": (lambda f, o: ["--input", f["ex"], "--output_dir", o / "embed", "--model_name_or_path", f["model"]],
              "--input", {"temperature": "cold"}),
    "run": (lambda f, o: ["--name", "t", "--runs_root", o / "runs", "--stages", "score"], None, {"force": 3}),
}  # fmt: skip


def test_every_verb_has_a_case():
    assert set(CASES) == set(VERBS)


def _cli(argv, capsys) -> tuple[int, list[str]]:
    rc = cli([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return rc, [line for line in err.splitlines() if line.startswith("distill ")]


def _written(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if p.is_file()] if out.exists() else []


@pytest.mark.parametrize("verb", list(VERBS))
def test_help_works_and_names_config_and_output(verb, capsys):
    with pytest.raises(SystemExit) as e:
        cli([verb, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert e.value.code == 0 and "--config" in text and "Output:" in text and "Exit statuses" in text


@pytest.mark.parametrize("verb", list(VERBS))
def test_bad_config_value_is_one_line_exit_2_before_any_work(verb, tmp_path, demo_dir, capsys):
    build, _, bad = CASES[verb]
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(yaml.safe_dump(bad))
    out = tmp_path / "out"
    rc, lines = _cli([verb, "--config", recipe, *build(_files(tmp_path, demo_dir), out)], capsys)
    key = next(iter(bad))
    assert rc == EXIT_USAGE and len(lines) == 1 and f"{key}:" in lines[0], lines
    assert not _written(out)


@pytest.mark.parametrize("verb", [v for v in VERBS if CASES[v][1]])
def test_missing_input_is_one_line_exit_2_before_any_work(verb, tmp_path, demo_dir, capsys):
    build, flag, _ = CASES[verb]
    out = tmp_path / "out"
    argv = [str(a) for a in build(_files(tmp_path, demo_dir), out)]
    argv[argv.index(flag) + 1] = str(tmp_path / "nope.jsonl")
    rc, lines = _cli([verb, *argv], capsys)
    assert rc == EXIT_USAGE and len(lines) == 1 and "nope.jsonl: does not exist" in lines[0], lines
    assert not _written(out)


@pytest.mark.parametrize("verb", [v for v in VERBS if load_stage(v).output])
def test_unwritable_output_is_one_line_exit_2_before_any_work(verb, tmp_path, demo_dir, capsys):
    build, _, _ = CASES[verb]
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the output's folder should be")
    rc, lines = _cli([verb, *build(_files(tmp_path, demo_dir), blocker / "out")], capsys)
    assert rc == EXIT_USAGE and len(lines) == 1 and "is a file" in lines[0], lines


@pytest.mark.parametrize("verb", [v for v in VERBS if load_stage(v).output])
def test_config_and_summary_are_written_by_the_one_rule(verb, tmp_path, demo_dir, monkeypatch, capsys):
    """The declared stage with its work replaced: the runner alone writes both files, beside the main output."""
    from distill.configs import parse_configs

    stage = load_stage(verb)
    calls = []

    def work(*configs, held=None):
        calls.append(configs)
        return summary(verb, 3, 2, 0.0, dropped={"x": 1})

    out = tmp_path / "out"
    configs = parse_configs(stage.configs, [str(a) for a in CASES[verb][0](_files(tmp_path, demo_dir), out)])
    assert replace(stage, run=work, verdict=None).main(*configs) == 0 and len(calls) == 1
    config_path, summary_path = contract_paths(getattr(configs[0], stage.output))
    assert yaml.safe_load(config_path.read_text()) and json.loads(summary_path.read_text())["rows_out"] == 2
    # a data failure still leaves its summary, and exits 1 with one line
    failing = replace(stage, run=work, verdict=lambda s: "every row failed for one reason: x")
    summary_path.unlink()
    assert failing.main(*configs) == EXIT_DATA and summary_path.exists()
    assert capsys.readouterr().err.strip() == f"distill {verb}: error: every row failed for one reason: x"


def test_unknown_verb_and_bad_log_level_are_one_line_exit_2(capsys):
    assert cli(["nosuchverb"]) == EXIT_USAGE and "unknown verb 'nosuchverb'" in capsys.readouterr().err
    rc, lines = _cli(["validate", "--log_level", "loud", "--input", "x.jsonl"], capsys)
    assert rc == EXIT_USAGE and lines == [
        "distill validate: error: --log_level: expected one of DEBUG, INFO, WARNING, ERROR"
    ]


def test_every_row_dropped_is_a_verdict_only_when_one_reason_took_every_row():
    s = summary("score", 3, 0, 0.0, dropped={"bad": 3}, problems=[{"line": 4, "id": None, "reason": "bad"}])
    assert every_row_dropped(s) == "every row was dropped for one reason: bad (e.g. line 4)"
    assert every_row_dropped({**s, "problems": []}) == "every row was dropped for one reason: bad"
    for other in ({"rows_out": 1}, {"rows_in": 0}, {"dropped": {"a": 1, "b": 2}}):
        assert every_row_dropped({**s, **other}) is None, other

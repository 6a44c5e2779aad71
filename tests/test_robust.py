"""Issue 12 (robust by construction): bad configs, files and rows through every stage's real entry point give one line
and the documented exit status, never a traceback; `run` checks every stage first; fingerprints cover what a stage
reads. One case per reported problem; each failed on the code before the stage contract."""

import errno
import json
from pathlib import Path

import pytest
import yaml

from distill.cli import main as cli
from distill.data.mmeb import load_examples
from distill.io import write_jsonl_atomic
from distill.testing.traces import demo_trace_rows

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def rows(demo_dir):
    """Four demo examples, their trace rows, and scored rows (trace rows + a `scores` object)."""
    examples = [e for _, e in load_examples(demo_dir / "train" / "ShapesVQA.jsonl")][:4]
    traces = [r for r in demo_trace_rows(examples) if r["status"] == "ok"][:4]
    return {"examples": examples, "traces": traces, "scored": [{**r, "scores": {"format": 1.0}} for r in traces]}


def run_cli(argv, capsys) -> tuple[int, str]:
    """(exit status, its error line) of `distill ARGV`; a usage error (2) is one line, and nothing prints a traceback."""
    rc = cli([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("distill ")]
    assert rc != 2 or len(errors) == 1, err
    return rc, errors[0] if errors else ""


def _jsonl(path: Path, rows: list, first: dict | None = None) -> Path:
    write_jsonl_atomic(path, ([first] if first else []) + rows)
    return path


# --- configs: types enforced, one-line errors, exit 2 -----------------------------------------------------------


@pytest.mark.parametrize(
    "recipe, message",
    [
        ("temperature: [1, 2]\n", "temperature: expected a number, got [1, 2]"),
        ("seed: 1.5\n", "seed: expected an integer or null, got 1.5"),
        ("max_retries: true\n", "max_retries: expected an integer, got True"),
        ("max_concurrency: 2.5\n", "max_concurrency: expected an integer, got 2.5"),
        ("temperature: 0.7\nmax_tokens: [64\n", "YAML syntax error"),
        ("temprature: 0.5\n", "unknown key 'temprature' (did you mean 'temperature'?)"),
        (None, "not found"),  # the config file itself is missing
    ],
)
def test_generate_config_errors_are_one_line_before_any_request(recipe, message, tmp_path, rows, fake_teacher, capsys):
    server, url = fake_teacher()
    config = tmp_path / "generate.yaml"
    if recipe is not None:
        config.write_text(recipe)
    argv = ["generate", "--config", config, "--input", _jsonl(tmp_path / "in.jsonl", rows["examples"]),
            "--output", tmp_path / "out" / "traces.jsonl", "--model", "m", "--base_url", url, "--progress", "false"]  # fmt: skip
    rc, err = run_cli(argv, capsys)
    assert rc == 2 and message in err and not server.seen_keys


def test_nested_sections_are_typed(tmp_path, capsys):
    """filter's thresholds / dedup / best_of_n and the pipeline's serve section are dataclasses, checked by type."""
    from distill.filter_config import BestOfN, FilterConfig, Threshold
    from distill.run import RunConfig, ServeSection

    cfg = FilterConfig(input="a", kept="b", rejected="c", thresholds={"length": {"max": 5}}, best_of_n={"score": "x"})
    assert cfg.thresholds == {"length": Threshold(max=5.0)} and cfg.best_of_n == BestOfN(score="x")
    assert RunConfig(serve={"models": ["smollm2"], "args": ["--max_batch_size", 4]}).serve == ServeSection(
        ["smollm2"], ["--max_batch_size", "4"]
    )
    bad = tmp_path / "pipeline.yaml"
    bad.write_text("serve: {models: smollm2}\n")
    rc, err = run_cli(["run", "--config", bad], capsys)
    assert rc == 2 and "serve: models: expected a list of strings, got 'smollm2'" in err


# --- files: checked before any work, one line, exit 2 ---------------------------------------------------------------


def _score_argv(inp, out):
    return ["score", "--input", inp, "--output", out, "--scorers", '{"format": null}']


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing input", "input {d}/nope.jsonl: does not exist"),
        ("folder as input", "input {d}: is a folder, expected a file"),
        ("output under a file", "is a file, not a folder"),
        ("output is a folder", "output {d}/outdir: is a folder, expected a file path"),
        ("full disk", "no space left on the device"),
    ],
)
def test_score_file_errors_are_one_line(case, message, tmp_path, rows, capsys, monkeypatch):
    good = _jsonl(tmp_path / "traces.jsonl", rows["traces"])
    (tmp_path / "outdir").mkdir()
    inp, out = good, tmp_path / "scored.jsonl"
    if case == "missing input":
        inp = tmp_path / "nope.jsonl"
    elif case == "folder as input":
        inp = tmp_path
    elif case == "output under a file":
        out = good / "scored.jsonl"
    elif case == "output is a folder":
        out = tmp_path / "outdir"
    elif case == "full disk":
        import distill.io

        def full(fd):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(distill.io.os, "fsync", full)
    rc, err = run_cli(_score_argv(inp, out), capsys)
    assert rc == 2 and message.format(d=tmp_path) in err


def test_generate_output_folder_is_refused_before_any_request(tmp_path, rows, fake_teacher, capsys):
    server, url = fake_teacher()
    (tmp_path / "traces.jsonl").mkdir()
    argv = ["generate", "--input", _jsonl(tmp_path / "in.jsonl", rows["examples"]), "--output", tmp_path / "traces.jsonl",
            "--model", "m", "--base_url", url, "--progress", "false"]  # fmt: skip
    rc, err = run_cli(argv, capsys)
    assert rc == 2 and "is a folder, expected a file path" in err and not server.seen_keys


@pytest.mark.parametrize("flags, message", [(["--dataset_path", "/nonexistent/export"], "input /nonexistent/export: does not exist"),
                                            ([], "dataset_path is required")])  # fmt: skip
def test_train_without_a_dataset_is_one_line(flags, message, tmp_path, capsys):
    recipe = yaml.safe_load((REPO / "recipes/demo/train.yaml").read_text())
    recipe.pop("dataset_path", None)
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(recipe))
    rc, err = run_cli(["train", "--config", tmp_path / "train.yaml", "--output_dir", tmp_path / "m", *flags], capsys)
    assert rc == 2 and message in err


# --- rows: one schema check in every stage, reported by line --------------------------------------------------------


@pytest.mark.parametrize(
    "stage, change, reason",
    [
        ("generate", {"query": "x"}, "field 'query' must be an object"),
        ("generate", {"id": 3}, "field 'id' must be a string"),
        ("validate", {"instruction": 7}, "field 'instruction' must be a string"),
        ("export", {"instruction": 7}, "field 'instruction' must be a string"),
        ("score", {"trace": "str"}, "field 'trace' must be an object"),
        ("filter", {"trace": "str"}, "field 'trace' must be an object"),
        ("filter", {"scores": None}, "field 'scores' is missing"),
    ],
)
def test_bad_rows_are_reported_by_line_in_every_stage(stage, change, reason, tmp_path, rows, demo_dir, fake_teacher,
                                                      capsys):  # fmt: skip
    kind = {"generate": "examples", "validate": "examples", "score": "traces"}.get(stage, "scored")
    bad = {**rows[kind][0], **change}
    inp = _jsonl(tmp_path / "in.jsonl", rows[kind], first=bad)  # the bad row is line 1
    out = tmp_path / "out"
    if stage == "generate":
        _, url = fake_teacher()
        argv = ["generate", "--input", inp, "--output", out / "traces.jsonl", "--model", "m", "--base_url", url,
                "--progress", "false", "--image_root", demo_dir]  # fmt: skip
        summary = out / "traces.summary.json"
    elif stage == "validate":
        argv, summary = ["validate", "--input", inp, "--image_root", demo_dir, "--report", out / "report.json"], None
    elif stage == "score":
        argv, summary = _score_argv(inp, out / "scored.jsonl"), out / "scored.summary.json"
    elif stage == "filter":
        argv = ["filter", "--input", inp, "--kept", out / "kept.jsonl", "--rejected", out / "rejected.jsonl"]
        summary = out / "kept.summary.json"
    else:
        argv = ["export", "--input", inp, "--output", out / "export", "--image_root", demo_dir, "--max_pixels", 12544]
        summary = out / "export" / "summary.json"
    rc, err = run_cli(argv, capsys)
    if stage == "validate":
        report = json.loads((out / "report.json").read_text())
        assert rc == 1 and report["problems"][0]["line"] == 1 and reason in report["problems"][0]["reason"]
        return
    assert rc == 0, err
    s = json.loads(summary.read_text())
    assert s["stage"] == stage and s["rows_in"] == len(rows[kind]) + 1 and s["rows_out"] == len(rows[kind])
    assert s["problems"][0]["line"] == 1 and reason in s["problems"][0]["reason"]
    if stage == "filter":  # neither kept nor rejected: reported
        kept = (out / "kept.jsonl").read_text().splitlines() + (out / "rejected.jsonl").read_text().splitlines()
        assert len(kept) == len(rows[kind])


def test_every_row_failing_for_one_reason_is_a_failed_stage(tmp_path, rows, fake_teacher, capsys):
    server, url = fake_teacher(status=400)
    argv = ["generate", "--input", _jsonl(tmp_path / "in.jsonl", rows["examples"]), "--output", tmp_path / "t.jsonl",
            "--model", "m", "--base_url", url, "--progress", "false", "--image_root", REPO / "data" / "demo"]  # fmt: skip
    rc, err = run_cli(argv, capsys)
    assert rc == 1 and f"every row ({len(rows['examples'])}) failed with the same reason: HTTP 400" in err
    assert json.loads((tmp_path / "t.summary.json").read_text())["dropped"] == {
        "failed: HTTP 400": len(rows["examples"])
    }


# --- run: every stage checked first; shared values; complete fingerprints -------------------------------------------


@pytest.mark.parametrize(
    "stage, change, message",
    [
        (
            "train",
            {"lerning_rate": 1e-4},
            "pipeline stage train: unknown key 'lerning_rate' (did you mean 'learning_rate'?)",
        ),
        (
            "train",
            {"recipe": "recipes/demo/no_such_train.yaml"},
            "config file recipes/demo/no_such_train.yaml: not found",
        ),
        ("score", {"scorers": {"repetition": {"n": 2.5}}}, "scorer 'repetition': n: expected an integer, got 2.5"),
        ("filter", {"best_of_n": {"score": "x", "n": "two"}}, "best_of_n: n: expected an integer, got 'two'"),
    ],
)
def test_a_pipeline_typo_fails_before_generate(stage, change, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    pipeline = yaml.safe_load((REPO / "recipes/demo/pipeline.yaml").read_text())
    pipeline.update(runs_root=str(tmp_path / "runs"), tiny_vlm=None, serve=None)
    pipeline[stage].update(change)
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(pipeline))
    rc, err = run_cli(["run", "--config", tmp_path / "p.yaml"], capsys)
    assert rc == 2 and message in err
    assert not (tmp_path / "runs" / "demo" / "generate").exists()


def test_a_shared_value_is_set_once(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    pipeline = yaml.safe_load((REPO / "recipes/demo/pipeline.yaml").read_text())
    pipeline.update(runs_root=str(tmp_path / "runs"), tiny_vlm=None, serve=None)
    pipeline["export"]["max_pixels"] = 50176
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(pipeline))
    rc, err = run_cli(["run", "--config", tmp_path / "p.yaml"], capsys)
    assert rc == 2 and "export: max_pixels: 50176 differs from the pipeline's max_pixels 12544" in err


def test_fingerprints_cover_templates_tokenizers_and_images(tmp_path, rows, monkeypatch):
    """A template edit changes generate's fingerprint and not score's; a tokenizer file, score's; an image, export's."""
    import shutil

    from distill.pipeline_stages import STAGES
    from distill.run import stage_fingerprint

    monkeypatch.chdir(tmp_path)
    shutil.copytree(REPO / "teacher_prompts", "prompts")
    shutil.copytree(REPO / "data" / "demo" / "images", "img/images")
    (tmp_path / "tok").mkdir()
    (tmp_path / "tok" / "tokenizer.json").write_text("{}")
    run_dir = tmp_path / "runs" / "t"
    _jsonl(tmp_path / "ex.jsonl", rows["examples"])
    _jsonl(run_dir / "filter" / "kept.jsonl", rows["traces"])
    (run_dir / "filter" / "kept.summary.json").write_text("{}")
    spec = {s.name: s for s in STAGES}
    configs = {
        "generate": {"input": "ex.jsonl", "model": "m", "prompts_dir": "prompts", "image_root": "img",
                     "output": str(run_dir / "generate" / "traces.jsonl")},
        "score": {"scorers": {"length": {"tokenizer": "tok"}}, "image_root": "img", **spec["score"].wire(run_dir)},
        "export": {"image_root": "img", **spec["export"].wire(run_dir)},
    }  # fmt: skip

    def fps():
        return {name: stage_fingerprint(spec[name], c, run_dir) for name, c in configs.items()}

    base = fps()
    template = next(Path("prompts").glob("vqa*.yaml"))
    template.write_text(template.read_text() + "\n# edited\n")
    after_template = fps()
    assert after_template["generate"] != base["generate"]
    assert after_template["score"] == base["score"] and after_template["export"] == base["export"]
    (tmp_path / "tok" / "tokenizer.json").write_text('{"v": 2}')
    after_tok = fps()
    assert after_tok["score"] != after_template["score"] and after_tok["export"] == after_template["export"]
    image = Path("img") / rows["traces"][0]["query"]["images"][0]
    image.write_bytes(image.read_bytes() + b"\0")
    assert fps()["export"] != after_tok["export"]


@pytest.mark.parametrize(
    "scorers, message",
    [
        ({"repetition": {"n": 2.5}}, "scorer 'repetition': n: expected an integer, got 2.5"),
        ({"near_duplicate": {"threshold": "high"}}, "scorer 'near_duplicate': threshold: expected a number"),
        ({"format": {"require_think": "no"}}, "scorer 'format': require_think: expected true or false"),
    ],
)
def test_scorer_parameters_are_typed(scorers, message, tmp_path, rows, capsys):
    argv = ["score", "--input", _jsonl(tmp_path / "t.jsonl", rows["traces"]), "--output", tmp_path / "s.jsonl",
            "--scorers", json.dumps(scorers)]  # fmt: skip
    rc, err = run_cli(argv, capsys)
    assert rc == 2 and message in err and not (tmp_path / "s.jsonl").exists()

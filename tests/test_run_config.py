"""Every pipeline recipe loads into RunConfig, and each of its stage sections resolves into that stage's configs."""

from pathlib import Path

import pytest
import yaml

from distill.cli import load_stage
from distill.configs import parse_configs
from distill.eval.stage import parse_traces
from distill.pipeline_stages import STAGES
from distill.run import RunConfig, fingerprint, shared, stage_config

REPO = Path(__file__).resolve().parents[1]
PIPELINES = sorted(REPO.glob("recipes/*/pipeline*.yaml"))


def test_there_are_pipeline_recipes():
    assert {p.parent.name for p in PIPELINES} >= {"demo", "qwen2vl-2b"}


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_pipeline_recipe_resolves_into_every_stage_config(path, monkeypatch, tmp_path):
    monkeypatch.chdir(REPO)  # recipes reference each other relative to the repo root
    (cfg,) = parse_configs((RunConfig,), ["--config", str(path)])
    present = [s for s in STAGES if not s.optional or getattr(cfg, s.name) is not None]  # every section it has
    assert set(cfg.stages) <= {s.name for s in present} and "train" in cfg.stages
    for spec in present:
        merged = stage_config(spec, getattr(cfg, spec.name), tmp_path / cfg.name, "http://127.0.0.1:1/v1", shared(cfg))
        stage_yaml = tmp_path / f"{spec.name}.yaml"
        stage_yaml.write_text(yaml.safe_dump(merged))
        configs = parse_configs(load_stage(spec.verb).configs, ["--config", str(stage_yaml)])
        first = configs[0]
        for field, value in spec.wire(tmp_path / cfg.name).items():  # the run layout wins over the recipes
            assert getattr(first, field) == (parse_traces(value) if field == "traces" else value)
        for field, value in shared(cfg).items():  # so do the values set once in the pipeline recipe
            if value is not None and hasattr(first, field):
                assert getattr(first, field) == value, (spec.name, field)


def test_unknown_stage_and_unknown_key_fail(tmp_path):
    with pytest.raises(ValueError, match="unknown stage"):
        RunConfig(stages=["generate", "distil"])
    bad = tmp_path / "p.yaml"
    bad.write_text("name: x\ngenrate: {}\n")
    with pytest.raises(ValueError, match="genrate"):
        parse_configs((RunConfig,), ["--config", str(bad)])


def test_fingerprint_follows_config_and_input_content(tmp_path):
    data = tmp_path / "in.jsonl"
    data.write_text('{"a": 1}\n')
    base = fingerprint("x: 1", [data])
    assert fingerprint("x: 1", [data]) == base
    assert fingerprint("x: 2", [data]) != base
    data.write_text('{"a": 2}\n')
    assert fingerprint("x: 1", [data]) != base
    assert fingerprint("x: 1", [tmp_path / "missing"]) != base


@pytest.mark.parametrize(
    "recipe, status, scores, kept",
    [
        # the paper-faithful recipe drops only what the teacher did not finish, whatever the scores say
        ("filter_unfiltered.yaml", "ok", {"answer_match": 0.0, "format": 0.0}, True),
        ("filter_unfiltered.yaml", "truncated", {}, False),
        ("filter_unfiltered.yaml", "failed", {}, False),
        # our filtered recipe rejects a wrong answer
        ("filter.yaml", "ok", {"answer_match": 0.0, "format": 1.0}, False),
    ],
)
def test_unfiltered_recipe_keeps_every_finished_trace(recipe, status, scores, kept, tmp_path):
    from distill.filter import FilterConfig, row_reasons, select

    path = REPO / "recipes/qwen2vl-2b" / recipe
    (cfg,) = parse_configs((FilterConfig,), ["--config", str(path), "--input", "x", "--kept", "k", "--rejected", "r"])
    rows = [{"id": "a", "sample_index": 0, "status": status, "scores": scores}]
    reasons = [row_reasons(r, cfg) for r in rows]
    select(rows, reasons, cfg)
    assert (not reasons[0]) is kept


def test_no_recipe_calls_a_filter_threshold_tte_s_criterion():
    # TTE reports no trace filtering: a threshold is our choice, never "TTE's criterion"
    offenders = [p for p in REPO.glob("recipes/**/*.yaml") if "tte's criterion" in p.read_text().lower()]
    assert offenders == []


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_pipeline_passes_the_up_front_check(path, monkeypatch):
    """What `distill run` checks before its first stage: every stage recipe + overrides typed and accepted."""
    from distill.run import check_stage_configs

    monkeypatch.chdir(REPO)
    (cfg,) = parse_configs((RunConfig,), ["--config", str(path)])
    assert list(check_stage_configs(cfg)) == cfg.stages


def test_generate_target_is_wired_as_the_target_side_and_into_eval(monkeypatch):
    """The pipeline stage `generate_target` is generate on the target side; when a run has it, eval reads its traces
    as `target_traces`."""
    from distill.run import check_stage_configs

    monkeypatch.chdir(REPO)
    (cfg,) = parse_configs((RunConfig,), ["--config", "recipes/qwen2vl-2b/pipeline.yaml"])
    assert "generate_target" in cfg.stages
    plain = check_stage_configs(cfg)
    assert plain["generate_target"]["side"] == "target"
    assert plain["eval"]["target_traces"] == str(cfg.run_dir / "generate_target" / "traces.jsonl")
    without = RunConfig(**{**vars(cfg), "generate_target": None,
                            "stages": [s for s in cfg.stages if s != "generate_target"]})  # fmt: skip
    assert "target_traces" not in check_stage_configs(without)["eval"]


def test_eval_is_wired_to_the_embedders_and_target_traces_the_pipeline_declares(tmp_path):
    """embed_base / embed train the baseline and the TTE embedder; eval ranks with both beside its frozen one, also
    when a `--stages` subset reruns eval alone; without those sections eval gets no `embedders`."""
    from distill.pipeline_stages import EVAL_EMBEDDERS

    spec = {s.name: s for s in STAGES}
    run_dir = tmp_path / "runs" / "t"
    full = RunConfig(name="t", runs_root=str(tmp_path / "runs"), embed_base={}, embed={}, eval={},
                     generate_target={}, stages=["eval"])  # fmt: skip
    assert full.stages == ["eval"] and {"embed_base", "embed", "generate_target"} <= set(full.declared)
    merged = stage_config(spec["eval"], {}, run_dir, None, None, full.declared)
    assert merged["embedders"] == [f"base={run_dir / 'embed_base' / 'model'}", f"tte={run_dir / 'embed' / 'model'}"]
    assert merged["target_traces"] == str(run_dir / "generate_target" / "traces.jsonl")
    assert [name for name, _ in EVAL_EMBEDDERS] == ["base", "tte"]  # eval's baseline_embedder / tte_embedder defaults
    embed = stage_config(spec["embed"], {"trace_condition": "none"}, run_dir, None, None, full.declared)
    assert embed["traces"] == [f"teacher={run_dir / 'filter' / 'kept.jsonl'}"] and embed["trace_condition"] == "teacher"
    assert embed["output_dir"] == str(run_dir / "embed" / "model")
    base = stage_config(spec["embed_base"], {}, run_dir, None, None, full.declared)
    assert base["trace_condition"] == "none" and "traces" not in base
    only_eval = RunConfig(name="t", runs_root=str(tmp_path / "runs"), eval={"embedders": ["mine=/m"]})
    merged = stage_config(spec["eval"], only_eval.eval, run_dir, None, None, only_eval.declared)
    assert merged["embedders"] == ["mine=/m"] and "target_traces" not in merged  # the recipe's own list is kept


def test_embed_stage_fingerprint_covers_each_input_file_and_its_images(monkeypatch, tmp_path):
    """`embed` reads a list of inputs: every file's referenced images are in its skip fingerprint."""
    from distill.fingerprint import referenced_images
    from distill.run import stage_fingerprint

    monkeypatch.chdir(REPO)
    spec = {s.name: s for s in STAGES}["embed"]
    plain = stage_config(spec, {"recipe": "recipes/demo/embed.yaml"}, tmp_path / "t", None, None, ["embed"])
    assert isinstance(plain["input"], list)
    images = referenced_images(plain["input"], plain["image_root"])
    assert len(images) == len(set(images)) and Path("data/demo/images/vqa_00.png") in images
    assert len(stage_fingerprint(spec, plain, tmp_path / "t")) == 64

"""Configs compose shared parts: one client part (`ClientFields`, spelled `base_urls`) for generate, reason and the
judge; one `PixelBudget` for every stage that sees images, set once per pipeline."""

import dataclasses
import logging
from pathlib import Path

import pytest
import yaml

from distill.client.config import ClientFields
from distill.configs import ConfigError, parse_configs
from distill.embed.config import EmbedConfig
from distill.eval.stage import EvalConfig
from distill.export import ExportConfig
from distill.images import PixelBudget
from distill.reason import ReasonConfig
from distill.score import ScoreConfig
from distill.teacher.generate_config import GenerateConfig
from distill.train.sft import TrainConfig

REPO = Path(__file__).resolve().parents[1]
BASE = ["--input", "x.jsonl", "--output", "y.jsonl", "--model", "m"]


@pytest.mark.parametrize("cls", [GenerateConfig, ReasonConfig])
def test_generate_and_reason_take_every_client_field(cls):
    """Before: reason's copy of the client fields had drifted (no connect_timeout_s, no breaker_failures)."""
    (config,) = parse_configs((cls,), [*BASE, "--connect_timeout_s", "3", "--breaker_failures", "2"])
    client = config.client()
    assert (client.connect_timeout_s, client.breaker_failures) == (3.0, 2)
    assert {f.name for f in dataclasses.fields(ClientFields)} <= {f.name for f in dataclasses.fields(client)}


def test_the_old_spelling_base_url_still_reads(tmp_path, caplog):
    recipe = tmp_path / "g.yaml"
    recipe.write_text(yaml.safe_dump({"base_url": ["http://h:1/v1"]}))
    with caplog.at_level(logging.WARNING):
        (config,) = parse_configs((GenerateConfig,), [*BASE, "--config", str(recipe)])
    assert config.base_urls == ["http://h:1/v1"] and "'base_url' is now spelled 'base_urls'" in caplog.text
    (config,) = parse_configs((GenerateConfig,), [*BASE, "--base_url", "http://h:2/v1"])  # the flag, abbreviated
    assert config.base_urls == ["http://h:2/v1"]
    recipe.write_text(yaml.safe_dump({"base_url": ["http://a/v1"], "base_urls": ["http://b/v1"]}))
    with pytest.raises(ConfigError, match="both 'base_url' and 'base_urls'; keep 'base_urls' only"):
        parse_configs((GenerateConfig,), [*BASE, "--config", str(recipe)])


def test_the_judge_reads_the_client_part_in_either_spelling():
    from distill.scoring import build_scorer

    for key in ("base_urls", "base_url"):
        judge = build_scorer("llm_judge", rubric="judge/ecr_quality.md", client={key: ["http://h:1/v1"], "model": "m"},
                             complete=lambda *a, **k: None)  # fmt: skip
        assert callable(judge)


@pytest.mark.parametrize(
    "cls", [GenerateConfig, ReasonConfig, ExportConfig, ScoreConfig, EvalConfig, TrainConfig, EmbedConfig]
)
def test_every_stage_that_sees_images_composes_the_pixel_budget(cls):
    assert issubclass(cls, PixelBudget)


def test_score_gives_its_budget_to_the_scorers_and_refuses_a_per_scorer_one(monkeypatch, tmp_path):
    from distill.score import build_scorers
    from distill.scoring import registry

    seen = {}
    monkeypatch.setitem(registry.SCORERS, "budget_probe",
                        lambda min_pixels=0, max_pixels=0: seen.update(lo=min_pixels, hi=max_pixels) or (lambda r: r))  # fmt: skip
    out = str(tmp_path / "s.jsonl")
    (config,) = parse_configs((ScoreConfig,), ["--input", "t.jsonl", "--output", out, "--scorers",
                                               '{"budget_probe": null}', "--max_pixels", "12544"])  # fmt: skip
    build_scorers(config)
    assert seen == {"lo": 56 * 56, "hi": 12544}
    with pytest.raises(ConfigError, match="max_pixels is set once for the whole stage"):
        parse_configs((ScoreConfig,), ["--input", "t.jsonl", "--output", out, "--scorers",
                                       '{"budget_probe": {"max_pixels": 5}}'])  # fmt: skip


def test_the_2b_score_recipe_no_longer_types_the_budget():
    recipe = yaml.safe_load((REPO / "recipes/qwen2vl-2b/score.yaml").read_text())
    assert "1003520" not in (REPO / "recipes/qwen2vl-2b/score.yaml").read_text()
    assert not any({"min_pixels", "max_pixels"} & set(p or {}) for p in recipe["scorers"].values())


def test_a_local_teacher_started_by_run_reaches_the_judge(tmp_path):
    from distill.pipeline_stages import STAGES
    from distill.run import stage_config

    spec = next(s for s in STAGES if s.name == "score")
    section = {"recipe": str(REPO / "recipes/qwen2vl-2b/score.yaml")}
    assert spec.needs_teacher(stage_config(spec, section, tmp_path, None))
    merged = stage_config(spec, section, tmp_path, "http://127.0.0.1:5/v1")
    assert merged["scorers"]["llm_judge"]["client"]["base_urls"] == ["http://127.0.0.1:5/v1"]
    assert merged["scorers"]["llm_judge"]["client"]["model"] == "Qwen/Qwen2.5-VL-72B-Instruct"  # the recipe's


def test_a_checkpoint_is_resolved_once_and_again_when_it_changes(tmp_path, monkeypatch):
    """Before: reason checked a checkpoint three times and hashed it twice on the way to the model load."""
    from distill import checkpoint as ckpt

    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.bin").write_bytes(b"weights v1")
    hashed = []
    real = ckpt.checkpoint_fingerprint
    monkeypatch.setattr(ckpt, "checkpoint_fingerprint", lambda *p: hashed.append(p) or real(*p))
    first = ckpt.resolve_checkpoint(str(tmp_path))
    assert ckpt.resolve_checkpoint(str(tmp_path)) is first and len(hashed) == 1 and not first.is_adapter
    (tmp_path / "model.bin").write_bytes(b"weights v2, saved again at the same path")
    assert ckpt.resolve_checkpoint(str(tmp_path)).fingerprint != first.fingerprint and len(hashed) == 2
    with pytest.raises(ValueError, match="is a full checkpoint"):
        ckpt.resolve_checkpoint(str(tmp_path), base_model=str(tmp_path))


def test_a_pipeline_section_in_the_old_spelling_overrides_its_recipe(tmp_path):
    """The demo recipe spells base_urls; a pipeline section (written before the rename) still says base_url."""
    from distill.pipeline_stages import STAGES
    from distill.run import stage_config

    spec = next(s for s in STAGES if s.name == "generate")
    section = {"recipe": str(REPO / "recipes/demo/generate.yaml"), "base_url": ["http://h:9/v1"]}
    merged = stage_config(spec, section, tmp_path, None)
    assert merged["base_urls"] == ["http://h:9/v1"] and "base_url" not in merged

"""Embed config: every embed recipe parses into (EmbedConfig, ModelConfig); flags override; validation is one line."""

from pathlib import Path

import pytest
import yaml

from distill.configs import ConfigError, parse_configs
from distill.embed.config import EmbedConfig
from distill.embed.stage import ModelConfig

REPO = Path(__file__).resolve().parents[1]
EMBED_RECIPES = sorted(REPO.glob("recipes/*/embed*.yaml"))


def _parse(*argv):
    return parse_configs((EmbedConfig, ModelConfig), list(argv))


def test_there_are_embed_recipes():
    names = {p.relative_to(REPO / "recipes").as_posix() for p in EMBED_RECIPES}
    assert {"demo/embed.yaml"} <= names


@pytest.mark.parametrize("recipe", EMBED_RECIPES, ids=lambda p: p.parent.name + "/" + p.name)
def test_every_embed_recipe_loads(recipe, tmp_path):
    cfg, model_args = _parse("--config", str(recipe), "--output_dir", str(tmp_path))
    raw = yaml.safe_load(recipe.read_text())
    assert model_args.model_name_or_path == raw["model_name_or_path"]
    assert cfg.temperature == pytest.approx(0.02) and cfg.scale == pytest.approx(50.0)  # TTE's τ in every recipe
    if "qwen" in recipe.parent.name:  # the VLM recipes: last-token pooling, GradCache, a global batch of 1024+
        assert cfg.pooling == "lasttoken" and cfg.loss == "CachedMultipleNegativesRankingLoss"
        assert cfg.global_batch_size >= 1024 and cfg.per_device_train_batch_size == cfg.global_batch_size


def test_flags_override_the_recipe(tmp_path):
    cfg, _ = _parse("--config", str(REPO / "recipes/demo/embed.yaml"), "--output_dir", str(tmp_path),
                    "--traces", "teacher=t.jsonl", "student=s.jsonl", "--trace_condition", "student",
                    "--trace_dropout", "0.5", "--resume_from_checkpoint", "none")  # fmt: skip
    assert cfg.traces == {"teacher": "t.jsonl", "student": "s.jsonl"} and cfg.trace_condition == "student"
    assert cfg.trace_dropout == 0.5 and cfg.resume_from_checkpoint is None
    assert cfg.batch_sampler == "no_duplicates" and cfg.multi_dataset_batch_sampler == "proportional"


@pytest.mark.parametrize(
    "args, match",
    [
        (["--trace_condition", "teacher"], "trace_condition must be one of none, got 'teacher'"),
        (["--traces", "t=a.jsonl", "t=b.jsonl"], "given twice"),
        (["--trace_dropout", "1.0"], r"trace_dropout must be in \[0, 1\)"),
        (["--loss", "TripletLoss"], "loss must be one of"),
        (["--global_batch_size", "16", "--gradient_accumulation_steps", "2"], "gradient_accumulation_steps must be 1"),
        (["--temperature", "0"], "temperature > 0"),
        ([], "--input is required"),
    ],
)
def test_validation(tmp_path, args, match):
    base = ["--output_dir", str(tmp_path), "--model_name_or_path", "m"] + ([] if not args else ["--input", "x"])
    with pytest.raises(ConfigError, match=match):
        _parse(*base, *args)


def test_global_batch_sets_the_per_device_batch(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "8")
    cfg, _ = _parse("--output_dir", str(tmp_path), "--input", "x", "--global_batch_size", "1024")
    assert cfg.per_device_train_batch_size == 128
    with pytest.raises(ConfigError, match="not a multiple of the 8 processes"):
        _parse("--output_dir", str(tmp_path), "--input", "x", "--global_batch_size", "1020")

"""Train config: every training recipe parses into (TrainConfig, ModelConfig); validation; unknown keys fail."""

from pathlib import Path

import pytest
import yaml

from distill.configs import parse_configs
from distill.train.sft import ModelConfig, TrainConfig

REPO = Path(__file__).resolve().parents[1]
TRAIN_RECIPES = sorted(REPO.glob("recipes/*/train*.yaml"))


def _parse(*argv):
    return parse_configs((TrainConfig, ModelConfig), list(argv))


def test_there_are_train_recipes():
    names = {p.relative_to(REPO / "recipes").as_posix() for p in TRAIN_RECIPES}
    assert {"demo/train.yaml", "qwen2vl-2b/train_full.yaml", "qwen2vl-7b/train_full_zero3.yaml",
            "qwen25vl-3b/train_lora.yaml"} <= names  # fmt: skip


@pytest.mark.parametrize("recipe", TRAIN_RECIPES, ids=lambda p: p.parent.name + "/" + p.name)
def test_every_train_recipe_loads(recipe):
    cfg, model_args = _parse("--config", str(recipe))
    raw = yaml.safe_load(recipe.read_text())
    assert cfg.dataset_path == raw["dataset_path"] and model_args.model_name_or_path == raw["model_name_or_path"]
    assert cfg.assistant_only_loss and cfg.freeze_vision_tower
    if "qwen" in recipe.parent.name:  # the real recipes keep TTE's global batch of 128 on any GPU count
        assert cfg.global_batch_size == 128  # (parsed here in one process: WORLD_SIZE 1)
        assert cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps == 128
        assert cfg.num_train_epochs == 1 and cfg.learning_rate == (2e-4 if model_args.use_peft else 2e-5)


def test_cli_overrides_recipe():
    cfg, model_args = _parse("--config", str(REPO / "recipes/demo/train.yaml"), "--learning_rate", "0.5",
                             "--use_peft", "--lora_target_modules", "q_proj", "v_proj")  # fmt: skip
    assert cfg.learning_rate == 0.5 and model_args.use_peft and model_args.lora_target_modules == ["q_proj", "v_proj"]


def test_unknown_key_fails(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset_path: x\nmodel_name_or_path: m\nfreeze_visual_tower: true\n")
    with pytest.raises((ValueError, SystemExit)):
        _parse("--config", str(bad))


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"dataset_path": ""}, "dataset_path is required"),
        ({"audit_rows": 0}, "audit_rows"),
        ({"min_pixels": 100, "max_pixels": 10}, "min_pixels"),
        ({"packing": True}, "packing"),
    ],
)
def test_train_config_validation(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**{"output_dir": str(tmp_path), "dataset_path": "d", "bf16": False, **kw})


def test_defaults_follow_the_tte_recipe(tmp_path):
    cfg = TrainConfig(output_dir=str(tmp_path), dataset_path="d")
    assert cfg.assistant_only_loss and cfg.freeze_vision_tower and not cfg.freeze_projector
    assert cfg.text_only_batch_guard and cfg.train_sampling_strategy == "group_by_length"
    assert cfg.activation_checkpointing and cfg.gradient_checkpointing  # new name set, old name mirrors it

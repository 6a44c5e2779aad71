"""Freezing by module group, the LoRA config, and the lineage record (in process, no training)."""

import pytest
from transformers import AutoModelForImageTextToText
from trl import ModelConfig

from distill.lineage import _rates, build_lineage, model_card
from distill.train.model import freeze, param_group, peft_config

VISION, PROJECTOR = ["visual", "vision_tower"], ["merger", "multi_modal_projector"]


@pytest.mark.parametrize(
    "name, group",
    [
        ("model.visual.blocks.0.attn.qkv.weight", "vision"),
        ("model.visual.merger.mlp.0.weight", "projector"),  # Qwen2-VL: the projector sits inside the tower
        ("model.multi_modal_projector.linear_1.weight", "projector"),  # LLaVA-style
        ("model.vision_tower.encoder.layers.0.mlp.fc1.weight", "vision"),
        ("model.language_model.layers.0.self_attn.q_proj.weight", "language"),
        ("lm_head.weight", "language"),
    ],
)
def test_param_group(name, group):
    assert param_group(name, VISION, PROJECTOR) == group


@pytest.mark.parametrize("freeze_vision, freeze_projector", [(True, False), (True, True), (False, False)])
def test_freeze(tiny_vlm, freeze_vision, freeze_projector):
    model = AutoModelForImageTextToText.from_pretrained(tiny_vlm)
    counts = freeze(model, freeze_vision, freeze_projector, VISION, PROJECTOR)
    assert (counts["vision"][0] == 0) == freeze_vision and (counts["projector"][0] == 0) == freeze_projector
    assert counts["language"][0] == counts["language"][1] > 0
    for n, p in model.named_parameters():
        assert p.requires_grad == (param_group(n, VISION, PROJECTOR) == "language" or (
            param_group(n, VISION, PROJECTOR) == "projector" and not freeze_projector) or (
            param_group(n, VISION, PROJECTOR) == "vision" and not freeze_vision))  # fmt: skip


def test_freeze_fails_when_no_vision_module_matches(tiny_vlm):
    model = AutoModelForImageTextToText.from_pretrained(tiny_vlm)
    with pytest.raises(ValueError, match="no parameter matches"):
        freeze(model, True, False, ["vision_encoder"], PROJECTOR)


def test_peft_config_targets_and_excludes_vision():
    args = ModelConfig(model_name_or_path="m", use_peft=True, lora_target_modules=["all-linear"], lora_r=8,
                       lora_modules_to_save=["lm_head"])  # fmt: skip
    cfg = peft_config(args, exclude_vision=True, vision_modules=VISION)
    assert cfg.target_modules == "all-linear" and cfg.r == 8 and cfg.modules_to_save == ["lm_head"]
    assert cfg.exclude_modules == r".*\.(visual|vision_tower)(\..*)?"
    assert peft_config(ModelConfig(model_name_or_path="m"), True, VISION) is None


def test_lineage_without_manifest_says_so(tmp_path):
    lineage = build_lineage({"model_name_or_path": "m", "output_dir": "o"}, str(tmp_path), {"rows_in": 3}, None, None)
    assert lineage["manifest"] is None
    assert "no export manifest found" in model_card(lineage)


def test_rates_flattens_keep_rates():
    summary = {"rows_in": 10, "keep_rate": 0.4, "per_task": {"vqa": {"keep_rate": 0.5, "kept": 5}}, "note": "x"}
    assert _rates(summary) == {"keep_rate": 0.4, "per_task.vqa.keep_rate": 0.5}

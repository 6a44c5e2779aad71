"""Global batch: gradient accumulation derived from the target global batch and the world size at launch."""

from pathlib import Path

import pytest

from distill.configs import parse_configs
from distill.train.batch import accumulation_steps, describe
from distill.train.sft import ModelConfig, TrainConfig

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "global_batch, per_device, world, given, expected",
    [
        (128, 4, 8, 1, 4),  # one 8-GPU node
        (128, 4, 16, 1, 2),  # two nodes: the same 128, not 256
        (128, 4, 32, 1, 1),
        (128, 2, 8, 8, 8),  # a recipe that also states the right accumulation is fine
        (128, 4, 3, 1, "not a multiple of per_device_train_batch_size 4 x 3 processes = 12"),
        (128, 4, 64, 1, "per_device_train_batch_size 2 would"),  # 4 x 64 = 256 > 128: suggests what fits
        (128, 4, 8, 2, "gradient_accumulation_steps 2 contradicts global_batch_size 128"),
    ],
)
def test_accumulation_steps(global_batch, per_device, world, given, expected):
    if isinstance(expected, str):
        with pytest.raises(ValueError, match=expected):
            accumulation_steps(global_batch, per_device, world, given)
    else:
        assert accumulation_steps(global_batch, per_device, world, given) == expected
        assert describe(per_device, expected, world).startswith(f"global batch {global_batch} = ")


@pytest.mark.parametrize("world, accumulation", [("8", 4), ("16", 2), ("12", None)])
def test_recipe_derives_accumulation_from_world_size_at_launch(monkeypatch, world, accumulation):
    monkeypatch.setenv("WORLD_SIZE", world)  # as torchrun / accelerate launch set it in every process
    args = ["--config", str(REPO / "recipes/qwen2vl-2b/train_full.yaml")]
    if accumulation is None:
        with pytest.raises(ValueError, match="global_batch_size 128 is not a multiple"):
            parse_configs((TrainConfig, ModelConfig), args)
    else:
        cfg, _ = parse_configs((TrainConfig, ModelConfig), args)
        assert cfg.gradient_accumulation_steps == accumulation


def test_cli_reports_an_indivisible_global_batch_in_one_line(monkeypatch, capsys):
    from distill.cli import main

    monkeypatch.setenv("WORLD_SIZE", "3")
    rc = main(["train", "--config", str(REPO / "recipes/qwen2vl-2b/train_full.yaml")])
    err = capsys.readouterr().err.strip()
    assert rc != 0 and "global_batch_size 128 is not a multiple" in err and "Traceback" not in err

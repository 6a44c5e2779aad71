"""`distill train`: supervised finetuning of the student reasoner on an export, with TRL's SFTTrainer.

    python -m distill.testing.tiny runs/demo/tiny-qwen2vl
    python -m distill.testing.traces runs/demo/kept.jsonl
    distill export --input runs/demo/kept.jsonl --output runs/demo/export --image_root data/demo --max_pixels 12544
    distill train --config recipes/demo/train.yaml
    accelerate launch --config_file recipes/accelerate/zero3.yaml -m distill.cli train \
        --config recipes/qwen2vl-7b/train_full_zero3.yaml

Config: `TrainConfig` (TRL's `SFTConfig` + ours) and TRL's `ModelConfig` (model path, dtype, LoRA/QLoRA fields) in one
YAML; CLI flags override; unknown keys fail. Steps: pre-flight (drop rows over `max_length`, never truncate), load and
freeze the model (vision tower by default), optional LoRA, label-mask audit on collated batches (abort unless only
assistant tokens are supervised), train (resume with `--resume_from_checkpoint last`), save (adapter + optional
merged model), and write `config.yaml` and `summary.json` (the stage contract, `distill.stage`), `lineage.json` and
the model card `README.md`.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

import torch
from trl import ModelConfig

from distill.resume import resume_checkpoint
from distill.stage import Paths, Stage
from distill.train.config import TrainConfig

log = logging.getLogger(__name__)


class NoRowsLeft(ValueError):
    """Every row of the export is longer than max_length: nothing to train on."""


def _vision_dummy(processor):
    from PIL import Image

    # The smallest image the processor accepts (56x56 -> 4 visual tokens for Qwen2-VL): the guard's cost is ~nil.
    out = processor.image_processor(images=[Image.new("RGB", (56, 56))], return_tensors="pt")
    return {k: v for k, v in out.items() if torch.is_tensor(v)}


def base_reference(config: TrainConfig, model_args: ModelConfig) -> str:
    """How the student names its base (card, adapter config): the recipe's `base_model`, else model_name_or_path,
    made absolute when it is a local directory (so an adapter loads from any working directory)."""
    name = config.base_model or model_args.model_name_or_path
    return str(Path(name).resolve()) if os.path.isdir(name) else name


def _point_adapter_at_base(output_dir: str, base: str) -> None:
    """PEFT writes the base as loaded (often a relative path); name it as `base_reference` says."""
    import json

    path = Path(output_dir) / "adapter_config.json"
    if path.is_file():
        cfg = json.loads(path.read_text())
        cfg["base_model_name_or_path"] = base
        path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def publish(config: TrainConfig) -> str:
    """Upload output_dir (not checkpoints, optimizer state or local configs) to `config.hub_repo`; returns the URL."""
    from distill.hub import push_folder, upload_plan

    # local records (resolved config and summary hold machine paths; the published lineage.json does not)
    skip = ("checkpoint-", "runs/", "config.yaml", "summary.json", "training_args.bin", "stage.log")
    files = [f for f in upload_plan(config.output_dir, ["*"]) if not f.startswith(skip)]
    private = True if config.hub_private_repo is None else bool(config.hub_private_repo)
    return push_folder(config.output_dir, config.hub_repo, "model", files, private=private)


def _merge_lora(config: TrainConfig, model_args: ModelConfig, processor) -> str:
    """Reload base + saved adapter on CPU, merge, save to <output_dir>/merged (works after ZeRO-3 too)."""
    from peft import PeftModel
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    from distill.train.model import load_model

    unset_hf_deepspeed_config()  # training is over: load the base whole, not as ZeRO-3 partitions
    base = load_model(model_args, bf16=False)
    merged = PeftModel.from_pretrained(base, config.output_dir).merge_and_unload()
    path = str(Path(config.output_dir) / "merged")
    merged.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def build(config: TrainConfig, model_args: ModelConfig, callbacks=None):
    """(trainer, processor, preflight report, dataset). Pre-flight, model, freezing, PEFT and the trainer."""
    from distill.processing import load_processor
    from distill.train.data import load_export, preflight
    from distill.train.model import freeze, load_model, peft_config
    from distill.train.trainer import DistillSFTTrainer

    processor = load_processor(model_args.model_name_or_path, config.min_pixels, config.max_pixels)
    dataset, lengths, pf = preflight(
        load_export(config.dataset_path), processor, config.max_length, num_proc=config.dataset_num_proc
    )
    if len(dataset) == 0:
        raise NoRowsLeft(f"pre-flight left no rows (all {pf['rows_in']} exceed max_length={config.max_length})")
    model = load_model(model_args, config.bf16)
    pf["parameters"] = freeze(model, config.freeze_vision_tower, config.freeze_projector, config.vision_modules,
                              config.projector_modules)  # fmt: skip
    trainer = DistillSFTTrainer(
        model=model,
        args=config,
        train_dataset=dataset,
        processing_class=processor,
        peft_config=peft_config(model_args, config.freeze_vision_tower, config.vision_modules),
        callbacks=callbacks,
        lengths=lengths,
        vision_dummy=_vision_dummy(processor) if config.text_only_batch_guard else None,
    )
    return trainer, processor, pf, dataset


def train(config: TrainConfig, model_args: ModelConfig, callbacks=None) -> dict | None:
    """Train; returns the summary on the main process (None on the other ranks). Raises LabelMaskError before step 1,
    StageError when the launch's world size differs from the one the global batch was derived from."""
    from distill.configs import config_dict
    from distill.io import umask_mode
    from distill.lineage import build_lineage, write_lineage
    from distill.stage import StageError
    from distill.stage import summary as stage_summary
    from distill.train.audit import audit
    from distill.train.batch import describe

    t0 = time.time()
    # the world size accelerate actually set up: the one the global batch was derived from must match it
    batch = describe(config.per_device_train_batch_size, config.gradient_accumulation_steps, config.world_size)
    global_batch = config.per_device_train_batch_size * config.gradient_accumulation_steps * config.world_size
    if config.global_batch_size is not None and global_batch != config.global_batch_size:
        raise StageError(f"{batch}, not global_batch_size {config.global_batch_size}: WORLD_SIZE at launch differs "
                         "from the processes training")  # fmt: skip
    log.info("%s", batch)
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    resolved = {**config_dict(config, model_args), "base_model": base_reference(config, model_args)}
    trainer, processor, pf, dataset = build(config, model_args, callbacks)
    # rows spread over the whole dataset, so every subset / task (and text-only rows) tends to be audited
    k, n = min(config.audit_rows, len(dataset)), len(dataset)
    rows = [dataset[i] for i in sorted({round(j * (n - 1) / max(k - 1, 1)) for j in range(k)})]
    report = audit(trainer.data_collator, processor, rows, trainer.chat_template, config.per_device_train_batch_size)
    lineage_args = dict(config=resolved, dataset_path=config.dataset_path, preflight=pf, audit=report)
    trainer.model_card_fn = lambda tr: write_lineage(config.output_dir, build_lineage(**lineage_args, result=None))

    t_train = time.time()
    train_out = trainer.train(
        resume_from_checkpoint=resume_checkpoint(config.resume_from_checkpoint, config.output_dir)
    )
    train_seconds = time.time() - t_train
    trainer.save_model(config.output_dir)
    result = {
        "train_loss": train_out.training_loss,
        "global_step": trainer.state.global_step,
        "losses": [h["loss"] for h in trainer.state.log_history if "loss" in h],
        "pad_fraction": round(trainer.pad_fraction(), 4),
        "real_tokens": trainer.padding["real"],
        "tokens_per_second": round(trainer.padding["real"] / train_seconds, 1) if train_seconds else None,
        "batch_kinds": trainer.batch_kinds,
        "text_only_batches_guarded": trainer.padding["guarded_batches"],
        "train_seconds": round(train_seconds, 2),
        "global_batch_size": global_batch,
        "global_batch": batch,
    }
    if not trainer.is_world_process_zero():
        return None  # the main process alone writes the processor, lineage, card and summary
    processor.save_pretrained(config.output_dir)  # stock class names, also from the torchvision-less fallback
    if model_args.use_peft:
        _point_adapter_at_base(config.output_dir, base_reference(config, model_args))
    if model_args.use_peft and config.merge_lora_on_save:
        result["merged_model"] = _merge_lora(config, model_args, processor)
    write_lineage(config.output_dir, build_lineage(**lineage_args, result=result), result.get("merged_model"))
    umask_mode(out.rglob("*.safetensors"))  # safetensors writes weights 0600: a serving container could not read them
    log.info("trained %d steps, final loss %.4f, pad fraction %.3f -> %s", result["global_step"],
             result["losses"][-1] if result["losses"] else float("nan"), result["pad_fraction"], out)  # fmt: skip
    dropped = {"over_max_length": pf["dropped_over_max_length"]} if pf["dropped_over_max_length"] else {}
    return stage_summary("train", pf["rows_in"], pf["rows_kept"], time.time() - t0, dropped=dropped,
                         tokens={"trained": result["real_tokens"]}, rows_trained=pf["rows_kept"],
                         preflight=pf, label_audit=report, **result)  # fmt: skip


def run(config: TrainConfig, model_args: ModelConfig, callbacks=None) -> dict | None:
    """`train`, with what the data can get wrong (no row fits max_length, labels that supervise the prompt) as
    DataError. Extra trainer callbacks: `dataclasses.replace(STAGE, run=partial(run, callbacks=[...])).main(...)`."""
    from distill.stage import DataError
    from distill.train.audit import LabelMaskError

    try:
        return train(config, model_args, callbacks)
    except (LabelMaskError, NoRowsLeft) as e:
        raise DataError(str(e)) from None


def _push(summary: dict, config: TrainConfig, model_args: ModelConfig) -> None:
    """--hub_repo: last, once every file is final; a failure is one line and the local outputs stay valid."""
    from distill.stage import StageError

    if not config.hub_repo:
        return
    try:
        url = publish(config)
    except Exception as e:  # network, auth, offline mode
        raise StageError(f"push to {config.hub_repo} failed: {type(e).__name__}: {e}") from None
    log.info("pushed %s -> %s", config.output_dir, url)


def _model_given(config: TrainConfig, model_args: ModelConfig) -> None:
    from distill.configs import ConfigError

    if not model_args.model_name_or_path:
        raise ConfigError("model_name_or_path is required")


STAGE = Stage(
    "train",
    (TrainConfig, ModelConfig),
    run,
    output="output_dir",
    writes="the model (or LoRA adapter), processor, lineage.json and the model card README.md in --output_dir",
    paths=lambda c, m: Paths(reads=[c.dataset_path], write_dirs=[c.output_dir]),
    check=_model_given,
    publish=_push,
)
main = STAGE.main


if __name__ == "__main__":
    from distill.cli import main as cli_main

    sys.exit(cli_main(["train", *sys.argv[1:]]))

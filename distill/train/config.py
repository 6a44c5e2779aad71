"""`distill train`'s configuration: TRL's `SFTConfig` (every TrainingArguments / SFTConfig key), the image budget part
(`PixelBudget`) and the student's own keys, checked on construction; and how a one-process run gets DeepSpeed's
environment without a launcher (`single_process_deepspeed_env`, also used by `distill embed`).

    from distill.train.config import TrainConfig
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import torch
from trl import SFTConfig

from distill.images import PixelBudget

log = logging.getLogger(__name__)


@dataclass
class TrainConfig(SFTConfig, PixelBudget):
    """TRL's SFTConfig (every TrainingArguments/SFTConfig key), the image budget (`PixelBudget`: the export's, so the
    processor sizes images as the teacher saw them) and the student-specific keys below."""

    dataset_path: str = field(default="", metadata={"help": "Export dir from `distill export` (or its dataset/)."})
    freeze_vision_tower: bool = field(default=True, metadata={"help": "Freeze the vision encoder (TTE recipe)."})
    freeze_projector: bool = field(default=False, metadata={"help": "Also freeze the vision-language projector."})
    vision_modules: list[str] = field(
        default_factory=lambda: ["visual", "vision_tower", "vision_model"],
        metadata={"help": "Module names (dotted-name components) that make up the vision tower."},
    )
    projector_modules: list[str] = field(
        default_factory=lambda: ["merger", "multi_modal_projector", "mm_projector"],
        metadata={"help": "Module names of the projector (matched before vision_modules)."},
    )
    text_only_batch_guard: bool = field(
        default=True,
        metadata={
            "help": "Run a zero-weight dummy image through the vision tower on image-free batches (ZeRO-3 hang)."
        },
    )
    audit_rows: int = field(
        default=16, metadata={"help": "Rows collated and audited for the label mask before step 1."}
    )
    merge_lora_on_save: bool = field(
        default=False, metadata={"help": "With LoRA, also save the merged full model to <output_dir>/merged."}
    )
    base_model: str | None = field(
        default=None,
        metadata={"help": "The base's name in the model card and a LoRA adapter's config: a hub id (Qwen/Qwen2-VL-2B-"
                  "Instruct) or an absolute path; None: model_name_or_path (made absolute if it is a local dir)."},
    )  # fmt: skip
    dataset_hub_id: str | None = field(
        default=None, metadata={"help": "Hub dataset id for the card's `datasets` (None: the export's push target)."}
    )
    license: str | None = field(default=None, metadata={"help": "Model card license (e.g. apache-2.0)."})
    push_to_hub: str | None = field(
        default=None,
        metadata={"help": "Hub model repo id to upload output_dir to once every file (weights, processor, card, "
                  "lineage, merged/) is final; private unless hub_private_repo is false. The Trainer never pushes."},
    )  # fmt: skip
    # TRL/transformers keys whose defaults differ for our recipe
    assistant_only_loss: bool = field(default=True, metadata={"help": "Loss on assistant (trace) tokens only."})
    activation_checkpointing: bool | None = field(
        default=True, metadata={"help": "Recompute activations in backward (memory for compute)."}
    )
    train_sampling_strategy: str = field(
        default="group_by_length",
        metadata={"help": "random | sequential | group_by_length (pre-flight lengths) | batch_rebalance."},
    )
    bf16: bool | None = field(default=None, metadata={"help": "bf16 mixed precision; None: on where the GPU has it."})
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "Checkpoint dir, or 'last' for the newest in output_dir (none: fresh start)."}
    )
    global_batch_size: int | None = field(
        default=None,
        metadata={
            "help": "Target global batch (TTE: 128): gradient_accumulation_steps = it / (per-device batch x processes "
            "at launch); fails when they do not divide. None: gradient_accumulation_steps as given."
        },
    )

    def __post_init__(self):
        # We upload ourselves at the very end (`publish`); TRL/transformers would push at every save, before the
        # final card and lineage exist. TRL-style `push_to_hub: true` + `hub_model_id: X` means the same as X.
        if self.push_to_hub not in (None, False, "", "false", "False"):
            repo = self.hub_model_id if self.push_to_hub in (True, "true", "True") else self.push_to_hub
            if not repo:
                raise ValueError("push_to_hub: true needs hub_model_id (or pass --push_to_hub REPO)")
            self.hub_model_id = repo
        self.hub_repo = (
            self.hub_model_id
            if self.push_to_hub not in (None, False, "", "false", "False")
            else getattr(self, "hub_repo", None)
        )
        self.push_to_hub = False
        if self.deepspeed and "RANK" not in os.environ and "LOCAL_RANK" not in os.environ:
            single_process_deepspeed_env()
        if self.bf16 is None and not self.fp16:
            self.bf16 = bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
        if self.global_batch_size is not None:  # before TrainingArguments resolves DeepSpeed's "auto" from it
            from distill.train.batch import accumulation_steps, launch_world_size

            self.gradient_accumulation_steps = accumulation_steps(
                self.global_batch_size, self.per_device_train_batch_size, launch_world_size(),
                self.gradient_accumulation_steps,
            )  # fmt: skip
        super().__post_init__()
        if not self.dataset_path:
            raise ValueError("dataset_path is required (an export dir from `distill export`)")
        if self.audit_rows < 1:
            raise ValueError(f"audit_rows must be >= 1, got {self.audit_rows}")
        self.check_pixels()
        if self.packing or self.padding_free:
            raise ValueError("packing / padding_free are not supported for vision datasets (TRL); use group_by_length")


def single_process_deepspeed_env() -> None:
    """Let `distill train --deepspeed X.json` run without a launcher: one rank on a free loopback port.

    On a CPU-only machine DeepSpeed would also JIT-compile its shared-memory comm op (minutes, and useless for one
    process), so it is marked unavailable.
    """
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for k, v in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1"),
                 ("MASTER_PORT", str(port))):  # fmt: skip
        os.environ.setdefault(k, v)
    if not torch.cuda.is_available():
        skip_deepspeed_shm_comm()


def skip_deepspeed_shm_comm() -> None:
    """Mark DeepSpeed's CPU shared-memory comm op unavailable, so `deepspeed.comm` falls back to gloo.

    A private API on purpose, kept to this function: DeepSpeed has no public switch (`DS_BUILD_SHM_COMM` only acts
    when DeepSpeed itself is built), and `deepspeed.comm.torch.build_shm_op` reads this dict. If a DeepSpeed release
    drops it, the op is JIT-compiled again (minutes of CPU, then the same training): a warning, not a failure."""
    import deepspeed.ops

    try:
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    except (AttributeError, TypeError) as e:
        log.warning("could not mark DeepSpeed's shm comm op unavailable (%s): it may be compiled now", e)

"""`DistillSFTTrainer`: TRL's SFTTrainer plus what our recipe needs and TRL does not do for vision datasets.

- Length-grouped batches from the pre-flight token counts (the Trainer would look for an `input_ids`/`length` column,
  which a vision dataset does not have: TRL tokenizes it on the fly in the collator).
- The text-only-batch guard: a batch without images skips the vision tower; under ZeRO-3 that rank then skips the
  tower's parameter all-gathers while the other ranks wait in them, and training hangs. With the guard, such a batch
  also runs one tiny dummy image through the tower and adds 0 x its output to the loss: same loss, same gradients
  (zero for the tower), every rank takes part in every gather.
- The padding fraction of the batches (`pad_fraction` in the logs; running totals in `padding`).
- Our model card (lineage) instead of TRL's, also in checkpoints.
- Video rows and interleaved images: TRL's collator knows neither; `DistillVisionCollator` (distill/train/collator.py)
  structures those rows with the student's chat format first, then collates as TRL does.
- Correct resume of a full (non-DeepSpeed, non-PEFT) finetune: transformers 5.24's Trainer reloads a checkpoint with
  a raw `load_state_dict`, but `save_pretrained` wrote it in the original checkpoint key format (Qwen2-VL: `visual.*`,
  not `model.visual.*`), so every renamed weight silently kept its pre-resume value (only a warning is logged).
"""

from __future__ import annotations

import logging

import torch
from trl import SFTTrainer

log = logging.getLogger(__name__)


def _tensors(obj):
    if torch.is_tensor(obj):
        yield obj
    elif isinstance(obj, dict) or hasattr(obj, "values"):
        for v in obj.values():
            yield from _tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors(v)


class DistillSFTTrainer(SFTTrainer):
    def __init__(self, *args, lengths=None, vision_dummy=None, **kwargs):
        self._lengths = lengths
        self._vision_dummy = vision_dummy  # processor outputs for one blank image; None disables the guard
        # fn(trainer) writing our model card; set after construction (the lineage needs the trainer's collator)
        self.model_card_fn = None
        self.padding = {"real": 0, "total": 0, "window_real": 0, "window_total": 0, "guarded_batches": 0}
        self.batch_kinds = {"image": 0, "mixed": 0, "text_only": 0}  # batches by how many rows hold images
        super().__init__(*args, **kwargs)
        from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

        from distill.train.collator import DistillVisionCollator

        if type(self.data_collator) is DataCollatorForVisionLanguageModeling:  # videos and interleaved images
            self.data_collator = DistillVisionCollator.like(self.data_collator)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        from transformers import PreTrainedModel

        model = model if model is not None else self.model
        plain = isinstance(model, PreTrainedModel) and not (self.is_deepspeed_enabled or self.is_fsdp_enabled)
        if not plain:  # DeepSpeed loads its own state files; PEFT loads adapters with PEFT's names
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        # from_pretrained applies the model's key mapping; then every tensor must land (strict)
        loaded = type(model).from_pretrained(resume_from_checkpoint, dtype=model.dtype)
        model.load_state_dict(loaded.state_dict(), strict=True)
        log.info("resumed model weights from %s", resume_from_checkpoint)

    def _get_train_sampler(self, train_dataset=None):
        if self.args.train_sampling_strategy == "group_by_length" and self._lengths is not None:
            from transformers.trainer_pt_utils import LengthGroupedSampler

            return LengthGroupedSampler(
                self.args.train_batch_size * self.args.gradient_accumulation_steps, lengths=self._lengths
            )
        return super()._get_train_sampler(train_dataset)

    def _vision_features_sum(self, model) -> torch.Tensor:
        base = self.accelerator.unwrap_model(model)
        base = base.get_base_model() if hasattr(base, "get_base_model") else base
        dtype = next(p.dtype for p in base.parameters() if p.is_floating_point())
        inputs = {k: v.to(self.args.device) for k, v in self._vision_dummy.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
        out = base.get_image_features(**inputs)
        return sum(t.float().sum() for t in _tensors(out) if t.is_floating_point())

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if model.training and "attention_mask" in inputs:
            real, total = int(inputs["attention_mask"].sum()), inputs["attention_mask"].numel()
            for k, v in (("real", real), ("total", total), ("window_real", real), ("window_total", total)):
                self.padding[k] += v
            image_id = getattr(self.processing_class, "image_token_id", None)
            if image_id is not None:
                n_img = int((inputs["input_ids"] == image_id).any(dim=1).sum())
                kind = "text_only" if n_img == 0 else "image" if n_img == len(inputs["input_ids"]) else "mixed"
                self.batch_kinds[kind] += 1
        result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if model.training and self._vision_dummy is not None and "pixel_values" not in inputs:
            self.padding["guarded_batches"] += 1
            zero = 0.0 * self._vision_features_sum(model)
            result = (result[0] + zero, result[1]) if return_outputs else result + zero
        return result

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self.padding["window_total"] and "loss" in logs:
            logs["pad_fraction"] = round(1 - self.padding["window_real"] / self.padding["window_total"], 4)
            self.padding["window_real"] = self.padding["window_total"] = 0
        super().log(logs, start_time)

    def pad_fraction(self) -> float:
        return 1 - self.padding["real"] / self.padding["total"] if self.padding["total"] else 0.0

    def create_model_card(self, *args, **kwargs):
        if self.model_card_fn is not None and self.is_world_process_zero():
            self.model_card_fn(self)

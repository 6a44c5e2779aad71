"""Load the student, freeze its vision tower / projector, and build the PEFT (LoRA / QLoRA) config.

Module names differ by family, so freezing matches dotted parameter-name components against two lists from the
recipe: `vision_modules` (Qwen2-VL: `visual`; LLaVA-style: `vision_tower`) and `projector_modules` (Qwen2-VL: `merger`,
which sits inside `visual`; LLaVA-style: `multi_modal_projector`). The projector is matched first, so
`freeze_vision_tower` alone leaves a nested projector trainable.
"""

from __future__ import annotations

import logging
import re

import torch

log = logging.getLogger(__name__)


def _has_component(name: str, components: list[str]) -> bool:
    parts = name.split(".")
    return any(c in parts for c in components)


def param_group(name: str, vision_modules: list[str], projector_modules: list[str]) -> str:
    """'projector', 'vision' or 'language' for a parameter name."""
    if _has_component(name, projector_modules):
        return "projector"
    if _has_component(name, vision_modules):
        return "vision"
    return "language"


def freeze(model, freeze_vision_tower: bool, freeze_projector: bool, vision_modules, projector_modules) -> dict:
    """Set requires_grad by group; returns {group: [trainable params, total params]} (also logged)."""
    counts: dict[str, list[int]] = {}
    for name, p in model.named_parameters():
        group = param_group(name, vision_modules, projector_modules)
        if (group == "vision" and freeze_vision_tower) or (group == "projector" and freeze_projector):
            p.requires_grad_(False)
        c = counts.setdefault(group, [0, 0])
        c[0] += p.numel() if p.requires_grad else 0
        c[1] += p.numel()
    if freeze_vision_tower and "vision" not in counts:
        raise ValueError(f"freeze_vision_tower: no parameter matches vision_modules={vision_modules}")
    log.info("parameters (trainable / total) by group: %s", counts)
    return counts


def model_dtype(model_args, bf16: bool):
    """torch dtype to load weights in: ModelConfig.dtype unless 'auto'/None, which means bf16 if training in bf16."""
    if model_args.dtype in (None, "auto"):
        return torch.bfloat16 if bf16 else torch.float32
    return getattr(torch, model_args.dtype)


def load_model(model_args, bf16: bool):
    """The student as an `AutoModelForImageTextToText`, quantized for QLoRA when `load_in_4bit`/`load_in_8bit`."""
    from accelerate import PartialState
    from transformers import AutoModelForImageTextToText
    from trl.trainer.utils import get_quantization_config

    kwargs = {"dtype": model_dtype(model_args, bf16), "revision": model_args.model_revision}
    if model_args.attn_implementation:
        kwargs["attn_implementation"] = model_args.attn_implementation
    quant = get_quantization_config(model_args)  # None unless load_in_4bit / load_in_8bit (bitsandbytes, CUDA only)
    if quant is not None:
        # k-bit weights are placed at load time, one full copy per process on its own GPU
        kwargs.update(quantization_config=quant, device_map={"": PartialState().local_process_index})
    return AutoModelForImageTextToText.from_pretrained(model_args.model_name_or_path, **kwargs)


def peft_config(model_args, exclude_vision: bool, vision_modules: list[str]):
    """A `peft.LoraConfig` from TRL's ModelConfig LoRA fields, or None when `use_peft` is off.

    One-element `lora_target_modules` is passed as a string, so 'all-linear' and regexes work. With a frozen vision
    tower, its modules are excluded from LoRA (PEFT's 'all-linear' would otherwise adapt them too).
    """
    if not model_args.use_peft:
        return None
    from peft import LoraConfig

    targets = model_args.lora_target_modules or "all-linear"  # ModelConfig already unwraps a one-element list
    if not isinstance(targets, str) and len(targets) == 1:
        targets = targets[0]
    names = "|".join(map(re.escape, vision_modules))
    exclude = rf".*\.({names})(\..*)?" if exclude_vision else None
    return LoraConfig(
        r=model_args.lora_r,
        lora_alpha=model_args.lora_alpha,
        lora_dropout=model_args.lora_dropout,
        target_modules=targets if isinstance(targets, str) else list(targets),
        exclude_modules=exclude,
        modules_to_save=model_args.lora_modules_to_save,
        task_type=model_args.lora_task_type,
        use_rslora=model_args.use_rslora,
        use_dora=model_args.use_dora,
    )

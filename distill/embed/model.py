"""The embedder `distill embed` trains: a sentence-transformers model, and the inputs it reads.

- A sentence-transformers model directory (`modules.json`: MiniLM, an earlier `embed` output) loads as it is, its
  own pooling kept.
- A plain checkpoint (Qwen2-VL family, LLaVA, a text LM) becomes `Transformer` -> `Pooling(lasttoken)` ->
  `Normalize`: TTE's and VLM2Vec's embedder (the last real token's hidden state, L2-normalised).
- LoRA through PEFT (`add_lora`), vision tower excluded, as in `distill train`; the output is the merged model.

Why `kit_processor()`: `Transformer` loads its processor with `AutoProcessor`, and the stock Qwen2-VL processor needs
torchvision, which does not import beside the CPU torch build (docs/environment.md); the library takes no processor
object. Inside this context a processor that `AutoProcessor` cannot build for that reason is loaded by
`distill.processing.load_processor` (the same images and tokens, saved under the stock class names), so the module,
its checkpoints and its output load here and, with stock tools, wherever torchvision imports.

Inputs (`st_input`): a text model reads the item's text; a VLM reads a chat message (images first, then the text),
so text-only and image items of one model go through the same chat template.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
from functools import lru_cache
from pathlib import Path

log = logging.getLogger(__name__)
VISION_MODULES = ["visual", "vision_tower", "vision_model"]


@contextlib.contextmanager
def kit_processor():
    """While active, sentence-transformers' `Transformer` falls back to `distill.processing.load_processor` where
    the stock `AutoProcessor` cannot load for lack of torchvision (see the module docstring)."""
    from unittest import mock

    import sentence_transformers.base.modules.transformer as st_transformer
    from transformers import AutoProcessor

    class _Processor:
        @staticmethod
        def from_pretrained(path, *args, **kwargs):
            try:
                return AutoProcessor.from_pretrained(path, *args, **kwargs)
            except ImportError as e:  # torchvision missing (transformers names it)
                if "torchvision" not in str(e).lower():
                    raise
                from distill.processing import load_processor

                log.info("%s: stock processor needs torchvision; using distill.processing.load_processor", path)
                return load_processor(path, kwargs.get("min_pixels"), kwargs.get("max_pixels"))

    with mock.patch.object(st_transformer, "AutoProcessor", _Processor):
        yield


def is_sentence_transformer(path: str) -> bool:
    return (Path(path) / "modules.json").is_file()


def load_embedder(path: str, device: str | None = None):
    """A saved sentence-transformers model (an `embed` output) loaded here (see `kit_processor`)."""
    from sentence_transformers import SentenceTransformer

    with kit_processor():
        return SentenceTransformer(path, device=device)


def build_model(model_path: str, model_args, config):
    """The SentenceTransformer to train: see the module docstring. `model_args` is TRL's ModelConfig."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling

    device = "cuda" if torch.cuda.is_available() else "cpu"
    with kit_processor():
        if is_sentence_transformer(model_path):
            model = SentenceTransformer(model_path, device=device)
        else:
            model_kwargs = {}
            if model_args.dtype not in (None, "auto"):
                model_kwargs["dtype"] = getattr(torch, model_args.dtype)
            if model_args.attn_implementation:
                model_kwargs["attn_implementation"] = model_args.attn_implementation
            # the image budget goes to image processors only: a local text checkpoint (no preprocessor_config.json)
            # would hand min_pixels to its tokenizer
            text_only = Path(model_path).is_dir() and not (Path(model_path) / "preprocessor_config.json").is_file()
            budget = {} if text_only else {"min_pixels": config.min_pixels, "max_pixels": config.max_pixels}
            # unpad_inputs=False: Qwen2-VL cannot take flattened (unpadded) inputs (sentence-transformers' note)
            module = Transformer(model_path, model_kwargs=model_kwargs, processor_kwargs=budget, unpad_inputs=False)
            pooling = Pooling(module.get_embedding_dimension(), pooling_mode=config.pooling)
            model = SentenceTransformer(modules=[module, pooling, Normalize()], device=device)
    if config.max_seq_length:
        model.max_seq_length = config.max_seq_length
    if model_args.use_peft:
        add_lora(model, model_args)
    return model


def add_lora(model, model_args) -> None:
    """Wrap the backbone in a `peft.PeftModel` with the recipe's LoRA (TRL ModelConfig fields).

    Why not the library's `model.add_adapter`: it goes through transformers' PEFT integration, which needs
    peft >= 0.22, and the lock pins 0.21.2 (the newest in the package index here); `get_peft_model` works with
    both. The adapter is saved in every checkpoint (`EmbedTrainer` reloads it on resume) and merged into the output.
    """
    from peft import get_peft_model

    from distill.train.model import peft_config

    names = "|".join(map(re.escape, VISION_MODULES))
    # task_type None: a plain PeftModel whose forward passes every input (pixel_values, grids) to the backbone;
    # the vision tower is excluded also at the top level (Qwen2VLModel.visual has no dotted prefix)
    lora = dataclasses.replace(peft_config(model_args, True, VISION_MODULES), task_type=None,
                               exclude_modules=rf"(.*\.)?({names})(\..*)?")  # fmt: skip
    model[0].model = get_peft_model(model[0].model, lora)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info("LoRA r=%d alpha=%d: %d trainable parameters", lora.r, lora.lora_alpha, trainable)


def peft_backbone(model):
    """The `PeftModel` backbone of a model `add_lora` wrapped, else None."""
    from peft import PeftModel

    backbone = getattr(model[0], "model", None)
    return backbone if isinstance(backbone, PeftModel) else None


def save_merged(model, output_dir: str) -> str:
    """Save a LoRA-trained model for stock `SentenceTransformer(output_dir)`: the adapter to `output_dir/adapter`,
    then the merged weights as a plain model (no peft needed to load it); returns the adapter folder."""
    backbone = peft_backbone(model)
    adapter = str(Path(output_dir) / "adapter")
    backbone.save_pretrained(adapter)
    model[0].model = backbone.merge_and_unload()
    model.save(output_dir)
    return adapter


def uses_images(model) -> bool:
    """Whether the model reads images (its first module supports the image modality)."""
    return "image" in (getattr(model[0], "modality_config", None) or {})


class InputMaker:
    """Item (text, visuals) -> what `model.encode` / the trainer's collator takes: the text for a text model, a chat
    message with the images first for a VLM. Images are opened (`distill.images`, decoded once per path)."""

    def __init__(self, vlm: bool, image_root: str = "."):
        self.vlm, self.image_root = vlm, image_root
        self._open = lru_cache(maxsize=4096)(self._load)

    def _load(self, rel: str):
        from distill.embed_text import VIDEO
        from distill.images import load_image

        if rel.startswith(VIDEO):  # frames as images, as the VLM embedder of embedding_gain sees a video
            from distill.images import resize_to_budget  # noqa: I001
            from distill.video import FRAME_MAX_PIXELS, FRAME_MIN_PIXELS, open_frame, sample_frames

            refs = sample_frames(self.image_root, rel[len(VIDEO) :])
            return tuple(resize_to_budget(open_frame(self.image_root, r), FRAME_MIN_PIXELS, FRAME_MAX_PIXELS)
                         for r in refs)  # fmt: skip
        return (load_image(self.image_root, rel),)  # a path or an embedded page (distill.images)

    def __call__(self, item):
        text, visuals = _as_item(item)
        if not self.vlm:
            return text
        images = [img for v in visuals for img in self._open(v)]
        content = [{"type": "image", "image": img} for img in images] + [{"type": "text", "text": text}]
        return [{"role": "user", "content": content}]


def _as_item(value) -> tuple[str, tuple[str, ...]]:
    """An item from a dataset cell: a string (text model) or {"text", "images"} (VLM)."""
    if isinstance(value, str):
        return value, ()
    return value.get("text") or "", tuple(value.get("images") or ())

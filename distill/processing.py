"""Load a Qwen2-VL-family processor on any machine: the stock `AutoProcessor` where it loads (wherever torchvision
imports: GPU machines, and here requirements-torchvision.lock), else the PIL image processor plus
`distill.video_processing`'s numpy copy of the video processor.

Why the fallback: transformers 5.x's default Qwen2-VL image processor and every video processor need torchvision,
which does not import beside the CPU torch build that requirements.lock pins (see docs/environment.md). Image-only work
needs neither. tests/test_stock_processor.py checks, where torchvision imports, that stock is used and that the
fallback gives the stock grids and pixels.

The fallback is a loading detail only: it saves itself under the stock class names (`Qwen2VLProcessor` /
`Qwen2_5_VLProcessor`, `Qwen2VLImageProcessor`, `Qwen2VLVideoProcessor`), so a saved student loads with stock
`AutoProcessor` wherever torchvision imports, and fails loudly (ImportError naming torchvision) where it does not,
instead of silently degrading to a bare tokenizer that ignores `images=`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from transformers.models.qwen2_vl.processing_qwen2_vl import Qwen2VLProcessor
from transformers.processing_utils import ProcessorMixin

from distill.video_processing import PilQwen2VLVideoProcessor

log = logging.getLogger(__name__)


# model_type -> the stock processor class the fallback stands in for (and saves itself as)
STOCK_CLASSES = {"qwen2_vl": "Qwen2VLProcessor", "qwen2_5_vl": "Qwen2_5_VLProcessor"}
_OWN_NAMES = ("ImageOnlyQwen2VLProcessor",)


class ImageOnlyQwen2VLProcessor(Qwen2VLProcessor):
    """`Qwen2VLProcessor` with an image processor and a tokenizer only (no video processor, so no torchvision).

    Works for Qwen2-VL and Qwen2.5-VL checkpoints alike: both use the same image placeholder expansion.
    `save_pretrained` writes the stock configs: processor class `stock_class`, and the video processor config
    `video_config` (the base checkpoint's, or one derived from the image processor's settings).
    """

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, stock_class="Qwen2VLProcessor",
                 video_config=None, **kwargs):  # fmt: skip
        self.stock_class = stock_class
        self.video_config = video_config
        self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
        self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
        self.image_token_id = getattr(tokenizer, "image_token_id", None) or tokenizer.convert_tokens_to_ids(
            self.image_token
        )
        self.video_token_id = getattr(tokenizer, "video_token_id", None) or tokenizer.convert_tokens_to_ids(
            self.video_token
        )
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    def to_dict(self) -> dict:
        out = super().to_dict()
        out.pop("stock_class", None)
        out.pop("video_config", None)
        out["processor_class"] = self.stock_class
        if isinstance(out.get("image_processor"), dict):  # the PIL backend is picked at load time, not named
            out["image_processor"]["image_processor_type"] = "Qwen2VLImageProcessor"
        out["video_processor"] = self.video_config or _derived_video_config(out.get("image_processor") or {})
        return out

    def save_pretrained(self, save_directory, push_to_hub: bool = False, **kwargs):
        files = super().save_pretrained(save_directory, push_to_hub=False, **kwargs)
        # the tokenizer records the processor class too: set the stock name in the saved file (its documented
        # `processor_class` key) rather than through the tokenizer's private `_set_processor_class`
        from distill.io import write_text_atomic

        path = Path(save_directory) / "tokenizer_config.json"
        if path.is_file():
            saved = json.loads(path.read_text(encoding="utf-8"))
            saved["processor_class"] = self.stock_class
            write_text_atomic(path, json.dumps(saved, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
        return files


def _derived_video_config(image_config: dict) -> dict:
    """A `Qwen2VLVideoProcessor` config with the image processor's patching, normalisation and pixel budget."""
    keep = ("do_convert_rgb", "do_normalize", "do_rescale", "do_resize", "image_mean", "image_std", "merge_size",
            "patch_size", "resample", "rescale_factor", "size", "temporal_patch_size")  # fmt: skip
    return {**{k: image_config[k] for k in keep if k in image_config}, "video_processor_type": "Qwen2VLVideoProcessor"}


def _stock_names(path: Path) -> tuple[str, dict | None]:
    """(stock processor class, the checkpoint's own video processor config or None) of a saved checkpoint."""
    saved: dict = {}
    for name in ("processor_config.json", "preprocessor_config.json"):
        if (path / name).is_file():
            saved = json.loads((path / name).read_text())
            break
    video = saved.get("video_processor")
    if video is None and (path / "video_preprocessor_config.json").is_file():
        video = json.loads((path / "video_preprocessor_config.json").read_text())
    cls = saved.get("processor_class")
    if not cls or cls in _OWN_NAMES:
        model_type = (
            json.loads((path / "config.json").read_text()).get("model_type")
            if (path / "config.json").is_file()
            else None
        )
        cls = STOCK_CLASSES.get(model_type, "Qwen2VLProcessor")
    return cls, video


def _read_chat_template(path: Path, tokenizer) -> str | None:
    for name in ("chat_template.jinja", "chat_template.json"):
        f = path / name
        if f.exists():
            if name.endswith(".json"):
                import json

                return json.loads(f.read_text())["chat_template"]
            return f.read_text()
    return getattr(tokenizer, "chat_template", None)


def load_processor(path: str | Path, min_pixels: int | None = None, max_pixels: int | None = None):
    """The processor saved at `path`, with optional pixel budget overrides (`min_pixels`/`max_pixels`).

    Tries `AutoProcessor`; if that cannot load (no torchvision), builds an `ImageOnlyQwen2VLProcessor` from the
    saved tokenizer and the PIL Qwen2-VL image processor.
    """
    from transformers import AutoProcessor, AutoTokenizer
    from transformers.image_utils import SizeDict
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    path = Path(path)
    overrides = {k: v for k, v in (("min_pixels", min_pixels), ("max_pixels", max_pixels)) if v is not None}
    try:
        processor = AutoProcessor.from_pretrained(str(path), **overrides)
        if getattr(processor, "image_processor", None) is not None:
            video = getattr(processor, "video_processor", None)
            if video is not None and overrides:  # frames get the same budget as images (export sized them already)
                video.size = {"shortest_edge": overrides.get("min_pixels", video.size["shortest_edge"]),
                              "longest_edge": overrides.get("max_pixels", video.size["longest_edge"])}  # fmt: skip
            return processor
        log.warning("%s: AutoProcessor gave a %s without an image processor (saved by an older distill under its own "
                    "class name); using the PIL image processor", path, type(processor).__name__)  # fmt: skip
    except (ImportError, ValueError, OSError, TypeError, AttributeError) as e:
        log.info("AutoProcessor unavailable for %s (%s); using the PIL image processor", path, e)
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    image_processor = Qwen2VLImageProcessorPil.from_pretrained(str(path))
    if overrides:  # the budget goes into `size` (what transformers 5 reads), never as min/max_pixels attributes: those
        # are passed to every processor call, which warns (deprecated, removed in v5.23) on each image
        size = image_processor.size
        size = dataclasses.asdict(size) if dataclasses.is_dataclass(size) else dict(size or {})
        size |= {"shortest_edge" if k == "min_pixels" else "longest_edge": v for k, v in overrides.items()}
        image_processor.size = SizeDict(**{k: v for k, v in size.items() if v is not None})
    stock_class, video_config = _stock_names(path)
    processor = ImageOnlyQwen2VLProcessor(image_processor, tokenizer, chat_template=_read_chat_template(path, tokenizer),
                                          stock_class=stock_class, video_config=video_config)  # fmt: skip
    # videos through a numpy/PIL copy of Qwen2-VL's video processor (same patches and token count as the stock one);
    # it is never saved: `to_dict` writes the stock video processor config instead
    processor.video_processor = PilQwen2VLVideoProcessor.like(image_processor)
    return processor

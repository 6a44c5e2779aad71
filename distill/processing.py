"""Load a Qwen2-VL-family processor on any machine: the stock `AutoProcessor` where it loads (GPU machines with a real
torchvision), else the PIL image processor plus `distill.video_processing`'s numpy copy of the video processor.

Why the fallback: transformers 5.x's default Qwen2-VL image processor and every video processor need torchvision,
which does not import beside the CPU torch build (see docs/environment.md). Image-only work needs neither.
"""

from __future__ import annotations

import logging
from pathlib import Path

from transformers.models.qwen2_vl.processing_qwen2_vl import Qwen2VLProcessor
from transformers.processing_utils import ProcessorMixin

from distill.video_processing import PilQwen2VLVideoProcessor

log = logging.getLogger(__name__)


class ImageOnlyQwen2VLProcessor(Qwen2VLProcessor):
    """`Qwen2VLProcessor` with an image processor and a tokenizer only (no video processor, so no torchvision).

    Works for Qwen2-VL and Qwen2.5-VL checkpoints alike: both use the same image placeholder expansion.
    """

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
        self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
        self.image_token_id = getattr(tokenizer, "image_token_id", None) or tokenizer.convert_tokens_to_ids(
            self.image_token
        )
        self.video_token_id = getattr(tokenizer, "video_token_id", None) or tokenizer.convert_tokens_to_ids(
            self.video_token
        )
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)


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
    except (ImportError, ValueError, OSError, TypeError, AttributeError) as e:
        log.info("AutoProcessor unavailable for %s (%s); using the PIL image processor", path, e)
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    image_processor = Qwen2VLImageProcessorPil.from_pretrained(str(path))
    for key, value in overrides.items():
        setattr(image_processor, key, value)
        if hasattr(image_processor, "size") and isinstance(image_processor.size, dict):
            image_processor.size["shortest_edge" if key == "min_pixels" else "longest_edge"] = value
    processor = ImageOnlyQwen2VLProcessor(
        image_processor, tokenizer, chat_template=_read_chat_template(path, tokenizer)
    )
    # videos through a numpy/PIL copy of Qwen2-VL's video processor (same patches and token count as the stock one)
    processor.video_processor = PilQwen2VLVideoProcessor.like(image_processor)
    return processor

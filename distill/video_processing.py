"""A Qwen2-VL video processor in numpy + PIL, for machines where transformers' video processors cannot load.

    from distill.video_processing import PilQwen2VLVideoProcessor
    out = PilQwen2VLVideoProcessor(min_pixels=3136, max_pixels=50176)([[frame0, frame1, ...]], return_tensors="pt")
    out["pixel_values_videos"], out["video_grid_thw"]     # [(T/2)*H/14*W/14, 3*2*14*14], [[T/2, H/14, W/14]]

Why: every transformers 5.x video processor needs torchvision, which does not import beside the CPU torch build
(docs/environment.md), so `distill.processing.load_processor` has no video path there and a video row could not be
pre-flighted or trained. This class computes what `Qwen2VLVideoProcessor` computes for a list of PIL frames (smart
resize per frame, rescale, CLIP-normalise, pad the frame count to the temporal patch size by repeating the last frame,
then the same patch layout: `tests/test_video.py` checks it against the image processor for a 2-frame still), so the
token accounting (`T/2 * H/28 * W/28` video tokens) and the pixels match the stock path used on GPU machines.
"""

from __future__ import annotations

import numpy as np

from distill.images import target_size

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class PilQwen2VLVideoProcessor:
    """Callable like a transformers video processor: `(videos, return_tensors=...) -> BatchFeature`."""

    model_input_names = ["pixel_values_videos", "video_grid_thw"]

    def __init__(self, min_pixels: int, max_pixels: int, patch_size: int = 14, temporal_patch_size: int = 2,
                 merge_size: int = 2, image_mean=OPENAI_CLIP_MEAN, image_std=OPENAI_CLIP_STD):  # fmt: skip
        self.min_pixels, self.max_pixels = min_pixels, max_pixels
        self.patch_size, self.temporal_patch_size, self.merge_size = patch_size, temporal_patch_size, merge_size
        self.image_mean = np.asarray(image_mean, dtype=np.float32)[:, None, None]
        self.image_std = np.asarray(image_std, dtype=np.float32)[:, None, None]

    @classmethod
    def like(cls, image_processor) -> PilQwen2VLVideoProcessor:
        """Same patch geometry, normalisation and pixel budget as a Qwen2-VL image processor."""
        size = getattr(image_processor, "size", None) or {}
        return cls(
            min_pixels=getattr(image_processor, "min_pixels", None) or size.get("shortest_edge", 56 * 56),
            max_pixels=getattr(image_processor, "max_pixels", None) or size.get("longest_edge", 28 * 28 * 1280),
            patch_size=image_processor.patch_size, temporal_patch_size=image_processor.temporal_patch_size,
            merge_size=image_processor.merge_size, image_mean=image_processor.image_mean,
            image_std=image_processor.image_std,
        )  # fmt: skip

    def _frames(self, video) -> np.ndarray:
        """[T, C, H, W] float32, resized and normalised; every frame gets the first frame's size, as a video has."""
        from PIL import Image

        frames = [f if isinstance(f, Image.Image) else Image.fromarray(np.asarray(f)) for f in video]
        if not frames:
            raise ValueError("a video needs at least one frame")
        factor = self.patch_size * self.merge_size
        h, w = target_size(frames[0].height, frames[0].width, self.min_pixels, self.max_pixels, factor)
        out = []
        for f in frames:
            f = f.convert("RGB")
            if f.size != (w, h):
                f = f.resize((w, h), Image.Resampling.BICUBIC)
            arr = np.asarray(f, dtype=np.float32).transpose(2, 0, 1) / 255.0
            out.append((arr - self.image_mean) / self.image_std)
        return np.stack(out)

    def _patchify(self, video: np.ndarray) -> tuple[np.ndarray, list[int]]:
        t, c, h, w = video.shape
        tp, p, m = self.temporal_patch_size, self.patch_size, self.merge_size
        if pad := -t % tp:  # repeat the last frame, as the stock processor does
            video = np.concatenate([video, np.repeat(video[-1:], pad, axis=0)])
            t += pad
        gt, gh, gw = t // tp, h // p, w // p
        patches = video.reshape(gt, tp, c, gh // m, m, p, gw // m, m, p).transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
        return patches.reshape(gt * gh * gw, c * tp * p * p), [gt, gh, gw]

    def num_video_tokens(self, num_frames: int, height: int, width: int) -> int:
        """Tokens one video of this size costs in the language model (after the 2x2 merge)."""
        h, w = target_size(height, width, self.min_pixels, self.max_pixels, self.patch_size * self.merge_size)
        return (
            -(-num_frames // self.temporal_patch_size)
            * (h // self.patch_size)
            * (w // self.patch_size)
            // (self.merge_size**2)
        )

    def __call__(self, videos, return_tensors=None, **kwargs):
        from transformers.feature_extraction_utils import BatchFeature

        videos = list(_videos(videos))
        patches, grids = [], []
        for v in videos:
            flat, grid = self._patchify(self._frames(v))
            patches.append(flat)
            grids.append(grid)
        data = {"pixel_values_videos": np.concatenate(patches), "video_grid_thw": np.asarray(grids, dtype=np.int64)}
        return BatchFeature(data=data, tensor_type=return_tensors)


def _is_frame(x) -> bool:
    from PIL import Image

    return isinstance(x, Image.Image) or (isinstance(x, np.ndarray) and x.ndim == 3)


def _videos(x):
    """Flatten any nesting (batch -> conversation -> video) down to videos, each a list of frames."""
    if isinstance(x, np.ndarray) and x.ndim == 4:
        yield list(x)
    elif isinstance(x, (list, tuple)) and x and all(_is_frame(f) for f in x):
        yield list(x)
    elif isinstance(x, (list, tuple)):
        for item in x:
            yield from _videos(item)
    else:
        raise ValueError(f"not a video (a list of frames): {type(x).__name__}")

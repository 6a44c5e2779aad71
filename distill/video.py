"""Videos as ordered frame lists: a frame folder or a video file, sampled uniformly (MMEB: 8 frames).

    from distill.video import sample_frames, open_frame
    refs = sample_frames("data/demo", "videos/spin_00", num_frames=8)   # ['frame:videos/spin_00/000.png', ...]
    img = open_frame("data/demo", refs[0])                               # PIL RGB, checked like any image

A *frame ref* names one frame: `frame:<folder>/<file>` for a frame of an extracted-frames folder (MMEB-V2 ships its
video tasks that way), `frame:<video file>#<index>` for a frame decoded from a video file with PyAV. The `frame:`
prefix tells the image cache, the teacher request and the export to use the per-frame pixel budget instead of the
image budget. Frames are picked the way MMEB's evaluation does: `num_frames` indices spread uniformly over the whole
video (first and last included); a shorter video gives all its frames. Every failure is a `VideoError` (an
`ImageError`, so callers that already catch bad images report it by line) naming the path and the reason.
"""

from __future__ import annotations

import re
from pathlib import Path

from distill.images import ImageError, image_size, load_image, open_image, resolve_image

FRAME = "frame:"
FRAME_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".gif")
NUM_FRAMES = 8  # MMEB-V2 evaluates video tasks on 8 uniformly sampled frames
# Per-frame budget: 8 frames at <= 256 visual tokens each (448x448) keep a video prompt near 2k image tokens for the
# teacher and ~1k video tokens for the student (Qwen2-VL merges frame pairs into one temporal patch): an 8-frame row
# fits the recipes' max_length (4096) with room for the prompt and the trace. Generate and export share the budget.
FRAME_MIN_PIXELS = 56 * 56
FRAME_MAX_PIXELS = 28 * 28 * 256


class VideoError(ImageError):
    """A video or frame that cannot be used; str() is '<path>: <reason>'."""


def is_frame(ref: str) -> bool:
    return ref.startswith(FRAME)


def uniform_indices(total: int, num_frames: int) -> list[int]:
    """`num_frames` indices spread evenly over `range(total)`, first and last included; all of them if fewer."""
    if total <= num_frames:
        return list(range(total))
    if num_frames == 1:
        return [total // 2]
    return [round(i * (total - 1) / (num_frames - 1)) for i in range(num_frames)]


def _natural(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _decode(path: Path, indices: list[int] | None):
    """Frames of a video file (all when `indices` is None) as PIL images; VideoError when unreadable."""
    import av

    wanted = None if indices is None else set(indices)
    frames = []
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            for i, frame in enumerate(container.decode(stream)):
                if wanted is None or i in wanted:
                    frames.append(frame.to_image().convert("RGB"))
                if wanted is not None and len(frames) == len(wanted):
                    break
    except (av.FFmpegError, IndexError, OSError, ValueError) as e:
        raise VideoError(path, f"unreadable video ({type(e).__name__}: {e})") from None
    return frames


def _count_frames(path: Path) -> int:
    """Decoded frame count (stream headers are often missing or wrong, so decode without converting)."""
    import av

    try:
        with av.open(str(path)) as container:
            return sum(1 for _ in container.decode(container.streams.video[0]))
    except (av.FFmpegError, IndexError, OSError, ValueError) as e:
        raise VideoError(path, f"unreadable video ({type(e).__name__}: {e})") from None


def sample_frames(image_root: str | Path, rel: str, num_frames: int = NUM_FRAMES) -> list[str]:
    """Frame refs for a frame folder or a video file under `image_root`; raises VideoError."""
    try:
        path = resolve_image(image_root, rel)
    except ImageError as e:
        raise VideoError(rel, e.reason) from None
    if path.is_dir():
        names = sorted((p.name for p in path.iterdir() if p.suffix.lower() in FRAME_SUFFIXES), key=_natural)
        if not names:
            raise VideoError(rel, "frame folder holds no frames (.jpg/.png/.webp)")
        return [f"{FRAME}{rel.rstrip('/')}/{names[i]}" for i in uniform_indices(len(names), num_frames)]
    if not path.exists():
        raise VideoError(rel, "video not found (neither a frame folder nor a video file)")
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise VideoError(rel, f"not a frame folder or a video file ({', '.join(VIDEO_SUFFIXES)})")
    total = _count_frames(path)
    if total == 0:
        raise VideoError(rel, "video has no decodable frames")
    return [f"{FRAME}{rel}#{i}" for i in uniform_indices(total, num_frames)]


def frame_file(image_root: str | Path, ref: str) -> tuple[Path, int | None]:
    """(file on disk, frame index in a video file or None for an image file) of a frame ref."""
    rel = ref[len(FRAME) :] if is_frame(ref) else ref
    rel, _, index = rel.rpartition("#") if "#" in rel else (rel, "", "")
    return resolve_image(image_root, rel), (int(index) if index else None)


def open_frame(image_root: str | Path, ref: str):
    """The frame (or plain image) a ref names, as a checked RGB PIL image; raises ImageError/VideoError."""
    if not is_frame(ref):  # an image path or an embedded image: distill.images opens every kind
        return load_image(image_root, ref)
    path, index = frame_file(image_root, ref)
    if index is None:
        return open_image(path)
    frames = _decode(path, [index])
    if not frames:
        raise VideoError(path, f"frame {index} not found")
    return frames[0]


def open_frames(image_root: str | Path, refs: list[str]) -> list:
    """The frames `refs` name, in order; each video file is decoded once for all of its refs (not once per frame)."""
    wanted: dict[Path, set[int]] = {}
    for ref in refs:
        path, index = frame_file(image_root, ref)
        if index is not None:
            wanted.setdefault(path, set()).add(index)
    decoded = {}
    for path, indices in wanted.items():
        order = sorted(indices)
        frames = _decode(path, order)
        if len(frames) != len(order):
            raise VideoError(path, f"{len(frames)} of {len(order)} sampled frames decodable")
        decoded.update({(path, i): f for i, f in zip(order, frames, strict=True)})
    out = []
    for ref in refs:
        path, index = frame_file(image_root, ref)
        out.append(open_image(path) if index is None else decoded[(path, index)].copy())
    return out


def frame_size(image_root: str | Path, ref: str) -> tuple[int, int]:
    """(height, width) of a frame without decoding pixels where the format allows it."""
    if not is_frame(ref):
        return image_size(image_root, ref)
    path, index = frame_file(image_root, ref)
    if index is None:
        from PIL import Image

        try:
            with Image.open(path) as im:
                return im.height, im.width
        except (OSError, ValueError) as e:
            raise ImageError(path, f"unreadable image ({type(e).__name__}: {e})") from None
    import av

    try:
        with av.open(str(path)) as container:
            s = container.streams.video[0]
            return s.codec_context.height, s.codec_context.width
    except (av.FFmpegError, IndexError, OSError) as e:
        raise VideoError(path, f"unreadable video ({type(e).__name__}: {e})") from None

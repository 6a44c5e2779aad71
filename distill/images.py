"""Open, check and resize images: one module for the teacher and the student, so the teacher sees what the student sees.

- `resolve_image(root, rel)`: a relative path under `image_root`; absolute paths and `..`/symlink escapes are refused.
- `open_image(path)`: size checks before decoding (zero-byte, oversized file, decompression bomb), `verify()`,
  EXIF transpose, RGB. Every failure is an `ImageError` whose message names the file and the reason.
- `load_image(root, ref)`: what every stage uses to open an image a row names: a path under `image_root`, or an
  embedded `parquet:<file>#<row>` image (a page of a published visual-document corpus), decoded on the fly with the
  same guards (`distill.parquet_images`); `image_bytes`, `check_ref`, `image_size` and `ref_file` likewise.
- `resize_to_budget(img, min_pixels, max_pixels)`: Qwen2-VL's `smart_resize` (sides rounded to multiples of 28, area
  kept within the budget), taken from transformers so we match the student's processor exactly.
- `PixelBudget`: the `min_pixels` / `max_pixels` part every stage config that sees images composes (generate, score's
  judge and vlm embedders, export, train, reason, eval): documented and checked once; `distill run` sets it once for
  the whole pipeline.
"""

from __future__ import annotations

import base64
import io
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from distill.parquet_images import PREFIX  # an embedded image: parquet:<file under image_root>#<row>

# Defaults: Pillow's own bomb threshold (~89 MP) and a file-size cap far above any MMEB image.
MAX_IMAGE_PIXELS = 89_478_485
MAX_IMAGE_BYTES = 50 * 1024 * 1024
# Qwen2-VL's patch (14) x spatial merge (2): both sides of a resized image are multiples of this.
QWEN_FACTOR = 28
# 56x56: Qwen2-VL's smallest image (4 visual tokens). 28*28*1280: at most 1280 visual tokens per image, Qwen2-VL's
# default and the budget VLM2Vec trains with: teacher, judge, export and student keep one budget.
DEFAULT_MIN_PIXELS = 56 * 56
DEFAULT_MAX_PIXELS = 28 * 28 * 1280


@dataclass(kw_only=True)
class PixelBudget:
    """The image pixel budget (Qwen2-VL smart resize): one part, so the teacher sees what the student is trained on."""

    min_pixels: int = field(default=DEFAULT_MIN_PIXELS, metadata={"help": "Images are resized (Qwen2-VL smart "
                            "resize, sides multiples of 28) to at least this many pixels; set once per pipeline."})  # fmt: skip
    max_pixels: int = field(default=DEFAULT_MAX_PIXELS, metadata={"help": "... and at most this many (1003520 = "
                            "1280 x 28x28, Qwen2-VL's default); set once per pipeline."})  # fmt: skip

    def check_pixels(self) -> None:
        if not 0 < self.min_pixels <= self.max_pixels:
            raise ValueError(f"need 0 < min_pixels <= max_pixels, got {self.min_pixels}, {self.max_pixels}")


class ImageError(ValueError):
    """An image that cannot be used; str() is '<path>: <reason>'."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def resolve_image(image_root: str | Path, rel_path: str) -> Path:
    """Absolute path of `rel_path` under `image_root`; refuses absolute paths and anything resolving outside the root."""
    if not rel_path:
        raise ImageError(rel_path, "empty image path")
    if os.path.isabs(rel_path):
        raise ImageError(rel_path, f"absolute image path not allowed (paths are relative to image_root {image_root})")
    root = Path(image_root).resolve()
    full = (root / rel_path).resolve()
    if not full.is_relative_to(root):
        raise ImageError(rel_path, f"path escapes image_root {root}")
    return full


def open_image(path: str | Path, max_pixels: int = MAX_IMAGE_PIXELS, max_bytes: int = MAX_IMAGE_BYTES) -> Image.Image:
    """Open, verify, EXIF-transpose and convert an image to RGB, or raise ImageError with the reason."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ImageError(path, "image file not found") from None
    except OSError as e:
        raise ImageError(path, f"cannot stat image: {e}") from None
    if size == 0:
        raise ImageError(path, "zero-byte image file")
    if size > max_bytes:
        raise ImageError(path, f"image file is {size / 2**20:.1f} MiB, over the {max_bytes / 2**20:.0f} MiB limit")
    return _guarded_decode(lambda: Image.open(path), path, max_pixels)


def _guarded_decode(opener, where, max_pixels: int) -> Image.Image:
    """The one guarded decode for files and bytes: the pixel count from the header first (a small file that claims
    12000x12000 pixels costs a header read, not 1.3 GB), verify, then load, EXIF-transpose and convert to RGB.
    `opener()` opens the image afresh (verify() leaves it unusable). ImageError (a ValueError) names the reason."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with opener() as probe:
                w, h = probe.size
                if w * h > max_pixels:
                    raise ImageError(where, f"{w}x{h} = {w * h} pixels exceeds {max_pixels} (decompression bomb guard)")
                probe.verify()
            with opener() as im:
                im.load()
                return ImageOps.exif_transpose(im).convert("RGB")
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(where, f"decompression bomb: {e}") from None
    except UnidentifiedImageError:  # its text names the file object ("<_io.BytesIO object at 0x...>"): say it plainly
        raise ImageError(where, "corrupt or unreadable image (not in an image format PIL can read)") from None
    except Exception as e:  # PIL raises many types for corrupt data (OSError, SyntaxError, struct.error, ...)
        raise ImageError(where, f"corrupt or unreadable image ({type(e).__name__}: {e})") from None


def is_embedded(ref: str) -> bool:
    """True for an image stored inside a parquet file (`parquet:<file>#<row>`, `distill.parquet_images`)."""
    return ref.startswith(PREFIX)


def ref_file(image_root: str | Path, ref: str) -> Path:
    """The file under `image_root` that holds the image `ref` names: the image file, or the parquet file."""
    if not is_embedded(ref):
        return resolve_image(image_root, ref)
    from distill.parquet_images import parse_ref

    try:
        rel, _ = parse_ref(ref)
    except ValueError as e:
        raise ImageError(ref, str(e)) from None
    return resolve_image(image_root, rel)


def image_bytes(image_root: str | Path, ref: str, max_bytes: int = MAX_IMAGE_BYTES) -> bytes:
    """The encoded bytes of the image `ref` names (a file under `image_root`, or an embedded image); ImageError."""
    if not is_embedded(ref):
        path = resolve_image(image_root, ref)
        try:
            size = path.stat().st_size
        except OSError:
            raise ImageError(ref, "image file not found") from None
        if size > max_bytes:
            raise ImageError(ref, f"image file is {size / 2**20:.1f} MiB, over the {max_bytes / 2**20:.0f} MiB limit")
        return path.read_bytes()
    from distill.parquet_images import parse_ref, row_bytes

    path = ref_file(image_root, ref)
    try:
        data = row_bytes(path, parse_ref(ref)[1])
    except (OSError, ValueError) as e:  # pyarrow's errors are OSError / ValueError subclasses (ArrowInvalid, ...)
        raise ImageError(ref, f"cannot read the embedded image ({type(e).__name__}: {e})") from None
    if len(data) > max_bytes:
        raise ImageError(
            ref, f"embedded image is {len(data) / 2**20:.1f} MiB, over the {max_bytes / 2**20:.0f} MiB limit"
        )
    return data


def load_image(
    image_root: str | Path, ref: str, max_pixels: int = MAX_IMAGE_PIXELS, max_bytes: int = MAX_IMAGE_BYTES
) -> Image.Image:
    """The one way stages open an image a row references: a path under `image_root` (`open_image`) or an embedded
    `parquet:<file>#<row>` image, decoded on the fly with the same guards. RGB; ImageError names the ref and why."""
    if not is_embedded(ref):
        return open_image(resolve_image(image_root, ref), max_pixels, max_bytes)
    data = image_bytes(image_root, ref, max_bytes)
    return _guarded_decode(lambda: Image.open(io.BytesIO(data)), ref, max_pixels)


def check_ref(image_root: str | Path, ref: str, max_pixels: int = MAX_IMAGE_PIXELS,
              max_bytes: int = MAX_IMAGE_BYTES) -> None:  # fmt: skip
    """Raise ImageError if `load_image` would (validate, reason and eval check inputs this way)."""
    load_image(image_root, ref, max_pixels, max_bytes).close()


def image_size(image_root: str | Path, ref: str) -> tuple[int, int]:
    """(height, width) from the image header, without decoding pixels; ImageError when unreadable."""
    try:
        source = io.BytesIO(image_bytes(image_root, ref)) if is_embedded(ref) else resolve_image(image_root, ref)
        with Image.open(source) as im:
            return im.height, im.width
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        if isinstance(e, ImageError):
            raise
        raise ImageError(ref, f"unreadable image ({type(e).__name__}: {e})") from None


def target_size(
    height: int, width: int, min_pixels: int, max_pixels: int, factor: int = QWEN_FACTOR
) -> tuple[int, int]:
    """(height, width) after Qwen2-VL's smart resize."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    return smart_resize(height, width, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)


def resize_to_budget(img: Image.Image, min_pixels: int, max_pixels: int, factor: int = QWEN_FACTOR) -> Image.Image:
    """Resize to the size the Qwen2-VL processor would use for this pixel budget (bicubic, as the processor does)."""
    h, w = target_size(img.height, img.width, min_pixels, max_pixels, factor)
    if (h, w) == (img.height, img.width):
        return img
    return img.resize((w, h), Image.Resampling.BICUBIC)


def encode_image(img: Image.Image, fmt: str = "PNG") -> bytes:
    """Encode to PNG (lossless, default) or JPEG bytes."""
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def data_url(data: bytes, fmt: str = "PNG") -> str:
    """A base64 data URL for the OpenAI `image_url` content part."""
    return f"data:image/{fmt.lower()};base64,{base64.b64encode(data).decode('ascii')}"


def decode_data_url(url: str, max_pixels: int = MAX_IMAGE_PIXELS, max_bytes: int = MAX_IMAGE_BYTES) -> Image.Image:
    """Inverse of `data_url` (used by `distill serve`), with `open_image`'s guards: the encoded size is checked before
    base64 decoding and the pixel count from the header before any pixel is decoded, so a small PNG that claims
    12000x12000 pixels costs a header read, not 1.3 GB. ImageError (a ValueError) names the reason."""
    where = "image data URL"
    if not url.startswith("data:image/") or ";base64," not in url:
        raise ImageError(where, "only base64 'data:image/...' URLs are accepted")
    payload = url.split(";base64,", 1)[1]
    if len(payload) // 4 * 3 > max_bytes:
        raise ImageError(where, f"{len(payload) // 4 * 3 / 2**20:.1f} MiB of image data, over the "
                         f"{max_bytes / 2**20:.0f} MiB limit")  # fmt: skip
    try:
        raw = base64.b64decode(payload, validate=True)
    except ValueError as e:  # binascii.Error is a ValueError
        raise ImageError(where, f"invalid base64 ({e})") from None
    return _guarded_decode(lambda: Image.open(io.BytesIO(raw)), where, max_pixels)

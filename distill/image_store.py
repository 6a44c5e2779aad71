"""The per-run image cache every teacher request draws from: keys (`digest`: file sha256 + pixel budget) and data
URLs (`data_url`: resized PNG, base64), each computed once per distinct image; and a video's frames either as images
(one `image_url` part per frame, the default) or as one native `video_url` part (`video_url`: the frames as JPEG in one
`data:video/jpeg;base64,<frame>,<frame>,...` URL, the form vLLM's OpenAI server reads as a video for Qwen2-VL).

    store = ImageStore("data/demo", 3136, 1003520, video_parts="native")
    refs = store.video_frames({"images": [], "video": "videos/clip_00"})   # sampled frame refs, in order
    store.video_url(refs)                                                  # 'data:video/jpeg;base64,...,...'
"""

from __future__ import annotations

import base64
import hashlib
import threading
from collections import OrderedDict
from pathlib import Path

from distill.images import data_url, encode_image, image_bytes, is_embedded, resize_to_budget, target_size
from distill.video import (
    FRAME_MAX_PIXELS,
    FRAME_MIN_PIXELS,
    NUM_FRAMES,
    frame_file,
    frame_size,
    is_frame,
    open_frame,
    open_frames,
    sample_frames,
)

IMAGE_REF = "image-sha256:"  # keyed messages name images by digest: keys never hold base64
VIDEO_REF = "video-sha256:"  # ... and a native video part by the digest of its frames' digests
VIDEO_PARTS = ("frames", "native")


class ImageStore:
    """Per-run image cache: `digest(rel)` (file sha256 + budget, for keys) and `data_url(rel)` (resized PNG, base64).

    Thread-safe: `data_url` runs in a thread pool so encoding never blocks the event loop that drives requests.
    """

    def __init__(self, image_root: str | Path, min_pixels: int, max_pixels: int, cache_mb: float = 512,
                 num_frames: int = NUM_FRAMES, frame_min_pixels: int = FRAME_MIN_PIXELS,
                 frame_max_pixels: int = FRAME_MAX_PIXELS, video_parts: str = "frames"):  # fmt: skip
        if video_parts not in VIDEO_PARTS:
            raise ValueError(f"video_parts must be one of {', '.join(VIDEO_PARTS)}, got {video_parts!r}")
        self.native_video = video_parts == "native"  # render sends a video as one video_url part
        self.root, self.min_pixels, self.max_pixels = Path(image_root), min_pixels, max_pixels
        # video frames (`frame:` refs, distill.video) get their own, smaller budget: 8 of them share one prompt
        self.num_frames, self.frame_pixels = num_frames, (frame_min_pixels, frame_max_pixels)
        self._frames: dict[str, list[str]] = {}
        self._videos: dict[str, list[str]] = {}  # native video part key -> its frame refs
        self._siblings: dict[str, list[str]] = {}  # a video file's frame ref -> all sampled refs of that video
        self._decoded: dict = {}  # frames decoded along with a sibling, waiting for their own encoding
        self._file_sha: dict[Path, str] = {}
        self._digests: dict[str, str] = {}
        self._urls: OrderedDict[str, str] = OrderedDict()
        self._bytes, self._limit = 0, int(cache_mb * 2**20)
        self._lock = threading.Lock()
        self._encoding: dict[str, threading.Lock] = {}  # path -> lock held while that image is being encoded
        self.encoded = 0  # how many encodings were done (a test checks each distinct image is encoded once)

    def budget(self, rel: str) -> tuple[int, int]:
        """(min_pixels, max_pixels) for an image path or a frame ref."""
        return self.frame_pixels if is_frame(rel) else (self.min_pixels, self.max_pixels)

    def video_frames(self, side: dict) -> list[str]:
        """The sampled frame refs of a side's video, in order; [] without a video (raises ImageError)."""
        video = side.get("video")
        if video and video not in self._frames:
            self._frames[video] = sample_frames(self.root, video, self.num_frames)
            for ref in self._frames[video]:
                if "#" in ref:  # frames of a video file: decoded together in one pass (`_open`)
                    self._siblings[ref] = self._frames[video]
        return list(self._frames[video]) if video else []

    def side_images(self, side: dict) -> list[str]:
        """A side's visual inputs in order: its video's sampled frame refs, then its images (raises ImageError)."""
        return [*self.video_frames(side), *side["images"]]

    def video_key(self, frames: list[str]) -> str:
        """Key of a native video part (its frames' digests, in order), remembered so `video_for` finds the frames."""
        key = hashlib.sha256("|".join(self.digest(f) for f in frames).encode() + b"|video/jpeg").hexdigest()
        self._videos[key] = list(frames)
        return key

    def video_for(self, ref: str) -> list[str]:
        """The frame refs of a keyed video part (`video-sha256:<key>`, rendered by this store)."""
        return self._videos[ref.removeprefix(VIDEO_REF)]

    def video_url(self, frames: list[str]) -> str:
        """The frames as one `data:video/jpeg;base64,<f1>,<f2>,...` URL (vLLM reads it as a video), each resized to
        the frame budget; call off the event loop. Not cached: a video part is sent once per request."""
        encoded = [base64.b64encode(encode_image(resize_to_budget(img, *self.frame_pixels), "JPEG")).decode("ascii")
                   for img in (self._open(f) for f in frames)]  # fmt: skip
        return "data:video/jpeg;base64," + ",".join(encoded)

    def digest(self, rel: str) -> str:
        if rel not in self._digests:
            lo, hi = self.budget(rel)
            if is_embedded(rel):  # a page inside a parquet file: its encoded bytes, as for an image file
                h = hashlib.sha256(image_bytes(self.root, rel))
                h.update(f"|{lo}|{hi}|png".encode())
                self._digests[rel] = h.hexdigest()
                return self._digests[rel]
            path, index = frame_file(self.root, rel)
            if index is None:  # an image file or a frame-folder frame: its bytes (keys of image rows unchanged)
                h = hashlib.sha256(path.read_bytes())
                h.update(f"|{lo}|{hi}|png{'|frame' if is_frame(rel) else ''}".encode())
            else:  # a frame of a video file: the file is hashed once for all its frames
                if path not in self._file_sha:
                    self._file_sha[path] = hashlib.sha256(path.read_bytes()).hexdigest()
                h = hashlib.sha256(f"{self._file_sha[path]}|frame {index}|{lo}|{hi}|png".encode())
            self._digests[rel] = h.hexdigest()
        return self._digests[rel]

    def data_url(self, rel: str) -> str:
        with self._lock:
            if rel in self._urls:
                self._urls.move_to_end(rel)
                return self._urls[rel]
            path_lock = self._encoding.setdefault(rel, threading.Lock())
        with path_lock:  # samples of one example arrive together: one thread encodes, the others wait for it
            with self._lock:
                if rel in self._urls:
                    return self._urls[rel]
            img = resize_to_budget(self._open(rel), *self.budget(rel))
            url = data_url(encode_image(img))
            with self._lock:
                self.encoded += 1
                self._urls[rel] = url
                self._bytes += len(url)
                while self._bytes > self._limit and len(self._urls) > 1:
                    self._bytes -= len(self._urls.popitem(last=False)[1])
                self._encoding.pop(rel, None)
        return url

    def _open(self, rel: str):
        """The image or frame; a video file's sampled frames are decoded in one pass and kept until encoded."""
        siblings = self._siblings.get(rel)
        if siblings is None:
            return open_frame(self.root, rel)
        with self._lock:
            img = self._decoded.pop(rel, None)
        if img is None:
            frames = open_frames(self.root, siblings)
            with self._lock:
                pending = {r: f for r, f in zip(siblings, frames, strict=True) if r != rel and r not in self._urls}
                self._decoded.update(pending)
            img = frames[siblings.index(rel)]
        return img

    def approx_tokens(self, rel: str) -> int:
        """Vision tokens Qwen2-VL would spend on this image after resizing (one token per 28x28 patch group)."""
        h, w = target_size(*frame_size(self.root, rel), *self.budget(rel))  # header only, no decode
        return (h // 28) * (w // 28)

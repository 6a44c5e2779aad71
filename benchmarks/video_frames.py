"""Video input cost per row: 8 frames from a frame folder vs from a video file, and the numpy video processor.

    python benchmarks/video_frames.py [--frames 64] [--size 640x360] [--repeats 5]

Builds one synthetic video both ways (a folder of JPEG frames, as MMEB-V2 ships them, and an mpeg4 .mp4), then times,
side by side in one run: sampling 8 frames + decoding + resizing them to the per-frame budget (what generate and
export do per video), and `PilQwen2VLVideoProcessor` on the 8 resized frames (what pre-flight and the collator do per
row on CPU machines). Prints medians and the file/folder ratio.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageDraw


def _frames(n: int, w: int, h: int) -> list[Image.Image]:
    out = []
    for i in range(n):
        img = Image.new("RGB", (w, h), (255, 255, 255))
        x = int(i / max(n - 1, 1) * (w - 60))
        ImageDraw.Draw(img).ellipse((x, h // 2 - 30, x + 60, h // 2 + 30), fill=(200, 40, 40))
        out.append(img)
    return out


def _median_s(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    import av

    from distill.chat_format import load_videos
    from distill.video import FRAME_MAX_PIXELS, FRAME_MIN_PIXELS
    from distill.video_processing import PilQwen2VLVideoProcessor

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--size", default="640x360")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    w, h = map(int, args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        frames = _frames(args.frames, w, h)
        (root / "folder").mkdir()
        for i, f in enumerate(frames):
            f.save(root / "folder" / f"{i:05d}.jpg", quality=90)
        with av.open(str(root / "video.mp4"), "w") as out:
            stream = out.add_stream("mpeg4", rate=8)
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            for f in frames:
                out.mux(stream.encode(av.VideoFrame.from_image(f)))
            out.mux(stream.encode())
        budget = (FRAME_MIN_PIXELS, FRAME_MAX_PIXELS)
        folder = _median_s(lambda: load_videos(["folder"], str(root), 8, *budget), args.repeats)
        video = _median_s(lambda: load_videos(["video.mp4"], str(root), 8, *budget), args.repeats)
        sampled = load_videos(["folder"], str(root), 8, *budget)[0]
        proc = PilQwen2VLVideoProcessor(*budget)
        process = _median_s(lambda: proc([sampled], return_tensors="pt"), args.repeats)
        grid = proc([sampled])["video_grid_thw"][0].tolist()
    print(f"{args.frames} frames of {w}x{h}, 8 sampled, resized to {sampled[0].width}x{sampled[0].height} "
          f"(video_grid_thw {grid}, {grid[0] * grid[1] * grid[2] // 4} video tokens)")  # fmt: skip
    print(f"sample+decode+resize, frame folder (JPEG): {folder * 1e3:8.1f} ms/video")
    print(
        f"sample+decode+resize, video file (mp4):    {video * 1e3:8.1f} ms/video   ({video / folder:.2f}x the folder)"
    )
    print(f"numpy video processor (8 frames -> patches): {process * 1e3:6.1f} ms/video")


if __name__ == "__main__":
    main()

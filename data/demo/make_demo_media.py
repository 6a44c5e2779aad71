"""Demo video and visual-document data: tiny synthetic videos (frame folders and .mp4 files) and a page corpus.

    python data/demo/make_demo.py      # calls write_video_demo() and write_visdoc_demo() after the image subsets

data/demo/video/<subset>.jsonl, one file per MMEB-V2 video task kind (names in distill.data.mmeb_video.VIDEO_KINDS):
    DemoVideoCLS     classification  which way the shape moves (label among four directions)
    DemoVideoQA      qa              the moving shape's colour, multiple choice
    DemoVideoRet     retrieval       caption -> video, the other videos as candidates
    DemoVideoMoment  moment          a two-part video; the query names one part, the clips are the candidates
Videos live in data/demo/videos/: frame folders (`<name>/000.png` ...) and, for every other video, an .mp4 (mpeg4)
so both readers are exercised. data/demo/visdoc/DemoDocs/ is a BEIR-style corpus (queries, corpus, qrels; pages in
pages/): synthetic report pages with a title and a bar chart, and text queries about them.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
SIDE = 56  # Qwen2-VL's smallest frame (2x2 patches of 28): tiny videos, few video tokens
FRAMES = 12  # more than the 8 MMEB samples, so sampling is exercised
COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (230, 200, 30)}
DIRECTIONS = {"moving right": (1, 0), "moving left": (-1, 0), "moving down": (0, 1), "moving up": (0, -1)}


def _frame(colour: str, shape: str, t: float, direction: tuple[int, int]) -> Image.Image:
    img = Image.new("RGB", (SIDE, SIDE), (255, 255, 255))
    d = ImageDraw.Draw(img)
    r, travel = 8, SIDE - 24
    cx = SIDE // 2 + int((t - 0.5) * travel * direction[0])
    cy = SIDE // 2 + int((t - 0.5) * travel * direction[1])
    box = (cx - r, cy - r, cx + r, cy + r)
    (d.ellipse if shape == "circle" else d.rectangle)(box, fill=COLOURS[colour])
    return img


def _write_video(frames: list[Image.Image], name: str, as_file: bool) -> str:
    """Frames as a folder of PNGs or as an mpeg4 .mp4; returns the path relative to data/demo."""
    if as_file:
        import av

        rel = f"videos/{name}.mp4"
        with av.open(str(HERE / rel), "w") as out:
            stream = out.add_stream("mpeg4", rate=4)
            stream.width, stream.height, stream.pix_fmt = SIDE, SIDE, "yuv420p"
            for f in frames:
                out.mux(stream.encode(av.VideoFrame.from_image(f)))
            out.mux(stream.encode())
        return rel
    folder = HERE / "videos" / name
    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(frames):
        f.save(folder / f"{i:03d}.png", optimize=True)
    return f"videos/{name}"


def _moving(colour: str, shape: str, direction: str) -> list[Image.Image]:
    return [_frame(colour, shape, i / (FRAMES - 1), DIRECTIONS[direction]) for i in range(FRAMES)]


def write_video_demo(rng: random.Random) -> dict[str, list[dict]]:
    (HERE / "videos").mkdir(exist_ok=True)
    (HERE / "video").mkdir(exist_ok=True)
    labels, colours = list(DIRECTIONS), list(COLOURS)
    subsets: dict[str, list[dict]] = {"DemoVideoCLS": [], "DemoVideoQA": [], "DemoVideoRet": [], "DemoVideoMoment": []}
    videos = []
    for i in range(4):
        colour, shape, direction = colours[i], rng.choice(["circle", "square"]), labels[i]
        rel = _write_video(_moving(colour, shape, direction), f"clip_{i:02d}", as_file=i % 2 == 1)
        videos.append((rel, colour, shape, direction))
        others = [label for label in labels if label != direction]
        subsets["DemoVideoCLS"].append({"video_path": rel, "pos_text": direction, "tgt_text": [direction, *others]})
    for rel, colour, shape, _ in videos[:3]:
        options = [colour, *[c for c in colours if c != colour][:2]]
        rng.shuffle(options)
        subsets["DemoVideoQA"].append({"video_path": rel, "question": f"What colour is the moving {shape}?",
                                       "options": options, "answer": colour})  # fmt: skip
    for k, (rel, colour, shape, direction) in enumerate(videos[:3]):
        cands = [rel] + [v[0] for j, v in enumerate(videos) if j != k]
        subsets["DemoVideoRet"].append({"caption": f"A {colour} {shape} {direction} on a white background.",
                                        "tgt_video_path": cands})  # fmt: skip
    for k in range(2):  # a red circle moving right, then a blue square moving down (or the other way round)
        parts = [("red", "circle", "moving right"), ("blue", "square", "moving down")][:: 1 if k == 0 else -1]
        clips = [_write_video(_moving(*p), f"moment_{k}_part{j}", as_file=False) for j, p in enumerate(parts)]
        whole = _write_video(_moving(*parts[0]) + _moving(*parts[1]), f"moment_{k}", as_file=k == 1)
        target = 1 - k  # the query names the blue square in video 0, the red circle in video 1
        colour, shape, direction = parts[target]
        subsets["DemoVideoMoment"].append({"video_path": whole, "query": f"the {colour} {shape} {direction}",
                                           "pos_video_path": clips[target], "neg_video_path": [clips[1 - target]]})  # fmt: skip
    for name, rows in subsets.items():
        with open(HERE / "video" / f"{name}.jsonl", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    return subsets


TOPICS = [("Energy report", "solar", 4), ("Energy report", "wind", 2), ("Health survey", "clinics", 3),
          ("Health survey", "vaccines", 5), ("Budget summary", "schools", 1), ("Budget summary", "roads", 3)]  # fmt: skip


def _page(title: str, subject: str, bars: int, colour: tuple[int, int, int]) -> Image.Image:
    img = Image.new("RGB", (112, 140), (250, 250, 245))
    d = ImageDraw.Draw(img)
    d.text((6, 4), title, fill=(0, 0, 0))
    d.text((6, 18), f"Topic: {subject}", fill=(40, 40, 40))
    for b in range(bars):  # a bar chart: one bar per year
        d.rectangle((10 + b * 18, 120 - 15 * (b + 1), 22 + b * 18, 120), fill=colour)
    d.line((6, 121, 106, 121), fill=(0, 0, 0))
    return img


def write_visdoc_demo() -> None:
    root = HERE / "visdoc" / "DemoDocs"
    (root / "pages").mkdir(parents=True, exist_ok=True)
    corpus, queries, qrels = [], [], []
    for i, (title, subject, bars) in enumerate(TOPICS):
        _page(title, subject, bars, list(COLOURS.values())[i % 4]).save(root / "pages" / f"page_{i}.png", optimize=True)
        corpus.append({"corpus-id": f"p{i}", "image": f"visdoc/DemoDocs/pages/page_{i}.png"})
    for i, (title, subject, _bars) in enumerate(TOPICS[:4]):
        queries.append({"query-id": f"q{i}", "query": f"How many years of {subject} figures does the {title.lower()} "
                                                     "chart show?"})  # fmt: skip
        qrels.append({"query-id": f"q{i}", "corpus-id": f"p{i}", "score": 2})
        sibling = i + 1 if i % 2 == 0 else i - 1  # the other page of the same report: partly relevant
        qrels.append({"query-id": f"q{i}", "corpus-id": f"p{sibling}", "score": 1})
    for name, rows in (("queries", queries), ("corpus", corpus), ("qrels", qrels)):
        with open(root / f"{name}.jsonl", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)

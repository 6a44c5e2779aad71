"""Generate the bundled demo data: MMEB-train-format rows over synthetic shape images with checkable gold answers.

    python data/demo/make_demo.py            # rewrites data/demo/train/*.jsonl and data/demo/images/ (deterministic)

Five subsets, one per task type the demo pipeline covers (names registered in distill.data.mmeb.SUBSET_TASKS):
    ShapesVQA     vqa             count / colour / position questions, gold answer in pos_text
    ShapesCLS     classification  one large shape, label = its shape name
    ShapesT2I     retrieval       caption -> image (with a hard negative image)
    ShapesI2T     retrieval       image -> caption
    ShapesGround  grounding       "isolate the <colour> <shape>" -> the cropped object

Held out for `distill eval` (data/demo/eval/, MMEB eval format: qry_inst, qry_text, qry_img_path, tgt_text candidates
with the positive first, tgt_img_path), fresh scenes never in train, the same five subsets, EVAL_PER_SUBSET each:
    ShapesVQA     candidates: every answer of the question's kind (counts 1-4, the colours, the shapes)
    ShapesCLS     candidates: the three shape names
    ShapesI2T     candidates: the captions of all held-out I2T scenes (the own one first)
    ShapesT2I     candidates: the images of all held-out T2I scenes (a text embedder cannot tell them apart)
    ShapesGround  candidates: crops of every object in the scene (the target first)
Plus data/demo/video/ (tiny synthetic videos, one subset per MMEB-V2 video task kind) and data/demo/visdoc/DemoDocs/
(a BEIR-style page corpus): see make_demo_media.py.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
SIZE = 112  # small: the whole demo stays a few hundred KB and 112 = 4 x 28 fits Qwen2-VL's patch grid
COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (230, 200, 30)}
SHAPES = ("circle", "square", "triangle")
NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four"}
PER_SUBSET = 12


def draw_shape(d: ImageDraw.ImageDraw, shape: str, colour: str, box: tuple[int, int, int, int]) -> None:
    x0, y0, x1, y1 = box
    fill = COLOURS[colour]
    if shape == "circle":
        d.ellipse(box, fill=fill)
    elif shape == "square":
        d.rectangle(box, fill=fill)
    else:
        d.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], fill=fill)


def render(objects: list[tuple[str, str, tuple[int, int, int, int]]]) -> Image.Image:
    img = Image.new("RGB", (SIZE, SIZE), (255, 255, 255))
    d = ImageDraw.Draw(img)
    for shape, colour, box in objects:
        draw_shape(d, shape, colour, box)
    return img


def grid_boxes(n: int, rng: random.Random, cell: int = SIZE // 2) -> list[tuple[int, int, int, int]]:
    """n non-overlapping boxes, one per quadrant, in left-to-right, top-to-bottom quadrant order."""
    quadrants = rng.sample([(0, 0), (1, 0), (0, 1), (1, 1)], n)
    quadrants.sort(key=lambda q: (q[0], q[1]))
    pad = 8
    return [(qx * cell + pad, qy * cell + pad, (qx + 1) * cell - pad, (qy + 1) * cell - pad) for qx, qy in quadrants]


def caption(objects) -> str:
    parts = [f"a {c} {s}" for s, c, _ in objects]
    return ("An image of " + ", ".join(parts[:-1]) + (" and " if len(parts) > 1 else "") + parts[-1] +
            " on a white background.")  # fmt: skip


def save(img: Image.Image, name: str) -> str:
    rel = f"images/{name}.png"
    img.save(HERE / rel, optimize=True)
    return rel


def random_scene(rng: random.Random, n: int | None = None):
    n = n or rng.randint(1, 4)
    return [(rng.choice(SHAPES), rng.choice(list(COLOURS)), box) for box in grid_boxes(n, rng)]


def quadrant(box: tuple[int, int, int, int]) -> str:
    return ("top" if box[1] < SIZE // 2 else "bottom") + "-" + ("left" if box[0] < SIZE // 2 else "right")


def vqa_rows(rng: random.Random) -> list[dict]:
    """Counting, colour-of-a-unique-shape and shape-in-a-quadrant questions: each has exactly one right answer."""
    rows = []
    for i in range(PER_SUBSET):
        objects = random_scene(rng)
        unique = [o for o in objects if sum(p[0] == o[0] for p in objects) == 1]
        if i % 3 == 1 and unique:
            s, c, _ = rng.choice(unique)
            q, a = f"What color is the {s}?", c
        elif i % 3 == 2:
            s, _, box = rng.choice(objects)
            q, a = f"What shape is in the {quadrant(box)} part of the image?", s
        else:
            q, a = "How many shapes are in the image?", str(len(objects))
        rel = save(render(objects), f"vqa_{i:02d}")
        rows.append({"qry": f"<|image_1|> Represent the given image with the following question: {q}",
                     "qry_image_path": rel, "pos_text": a, "pos_image_path": ""})  # fmt: skip
    return rows


def cls_rows(rng: random.Random) -> list[dict]:
    rows = []
    for i in range(PER_SUBSET):
        shape, colour = SHAPES[i % 3], rng.choice(list(COLOURS))
        rel = save(render([(shape, colour, (16, 16, SIZE - 16, SIZE - 16))]), f"cls_{i:02d}")
        rows.append({"qry": "<|image_1|> Represent the given image for classification", "qry_image_path": rel,
                     "pos_text": shape, "pos_image_path": ""})  # fmt: skip
    return rows


def t2i_rows(rng: random.Random) -> list[dict]:
    rows = []
    for i in range(PER_SUBSET):
        objects = random_scene(rng)
        other = random_scene(rng, n=len(objects))
        pos, neg = save(render(objects), f"t2i_{i:02d}"), save(render(other), f"t2i_{i:02d}_neg")
        rows.append({"qry": f"Find me an everyday image that matches the given caption: {caption(objects)}",
                     "qry_image_path": "", "pos_text": "<|image_1|> Represent the given image.", "pos_image_path": pos,
                     "neg_text": "<|image_1|> Represent the given image.", "neg_image_path": neg})  # fmt: skip
    return rows


def i2t_rows(rng: random.Random) -> list[dict]:
    rows = []
    for i in range(PER_SUBSET):
        objects = random_scene(rng)
        rel = save(render(objects), f"i2t_{i:02d}")
        rows.append({"qry": "<|image_1|> Find an image caption describing the given everyday image.",
                     "qry_image_path": rel, "pos_text": caption(objects), "pos_image_path": ""})  # fmt: skip
    return rows


def ground_rows(rng: random.Random) -> list[dict]:
    rows = []
    for i in range(PER_SUBSET):
        objects = random_scene(rng, n=rng.randint(2, 4))
        unique = [o for o in objects if sum(p[:2] == o[:2] for p in objects) == 1]
        target = rng.choice(unique or objects)
        img = render(objects)
        rel = save(img, f"ground_{i:02d}")
        crop = save(img.crop(target[2]), f"ground_{i:02d}_crop")
        rows.append({"qry": "<|image_1|> Select the portion of the image that isolates the object labeled as "
                            f"'{target[1]} {target[0]}'",
                     "qry_image_path": rel, "pos_text": "<|image_1|> Represent the given cropped image of the object",
                     "pos_image_path": crop})  # fmt: skip
    return rows


EVAL_PER_SUBSET = 8
IMAGE_TGT = "<|image_1|> Represent the given image."


def _eval_row(inst: str, text: str, img: str, cands: list[str], cand_imgs: list[str] | None = None) -> dict:
    return {"qry_inst": inst, "qry_text": text, "qry_img_path": img, "tgt_inst": "", "tgt_text": cands,
            "tgt_img_path": cand_imgs or [""] * len(cands)}  # fmt: skip


def _first(positive, options) -> list:
    return [positive] + [o for o in options if o != positive]


def eval_subsets(rng: random.Random) -> dict[str, list[dict]]:
    """The held-out eval rows per subset (MMEB eval format), images saved as images/eval_*.png."""
    out: dict[str, list[dict]] = {k: [] for k in ("ShapesVQA", "ShapesCLS", "ShapesI2T", "ShapesT2I", "ShapesGround")}
    n = EVAL_PER_SUBSET
    for i in range(n):
        objects = random_scene(rng)
        unique = [o for o in objects if sum(p[0] == o[0] for p in objects) == 1]
        if i % 3 == 1 and unique:
            s, c, _ = rng.choice(unique)
            q, a, options = f"What color is the {s}?", c, list(COLOURS)
        elif i % 3 == 2:
            s, _, box = rng.choice(objects)
            q, a, options = f"What shape is in the {quadrant(box)} part of the image?", s, list(SHAPES)
        else:
            q, a, options = "How many shapes are in the image?", str(len(objects)), ["1", "2", "3", "4"]
        rel = save(render(objects), f"eval_vqa_{i:02d}")
        inst = "<|image_1|> Represent the given image with the following question:"
        out["ShapesVQA"].append(_eval_row(inst, q, rel, _first(a, options)))
    for i in range(n):
        shape, colour = SHAPES[i % 3], rng.choice(list(COLOURS))
        rel = save(render([(shape, colour, (16, 16, SIZE - 16, SIZE - 16))]), f"eval_cls_{i:02d}")
        out["ShapesCLS"].append(_eval_row("<|image_1|> Represent the given image for classification", "", rel,
                                          _first(shape, SHAPES)))  # fmt: skip
    scenes = [random_scene(rng) for _ in range(n)]
    caps = [caption(o) for o in scenes]
    i2t = [save(render(o), f"eval_i2t_{i:02d}") for i, o in enumerate(scenes)]
    for i in range(n):
        out["ShapesI2T"].append(_eval_row("<|image_1|> Find an image caption describing the given everyday image.",
                                          "", i2t[i], _first(caps[i], caps)))  # fmt: skip
    scenes = [random_scene(rng) for _ in range(n)]
    t2i = [save(render(o), f"eval_t2i_{i:02d}") for i, o in enumerate(scenes)]
    for i in range(n):
        out["ShapesT2I"].append(_eval_row("Find me an everyday image that matches the given caption:",
                                          caption(scenes[i]), "", [IMAGE_TGT] * n, _first(t2i[i], t2i)))  # fmt: skip
    for i in range(n):
        objects = random_scene(rng, n=rng.randint(2, 4))
        unique = [o for o in objects if sum(p[:2] == o[:2] for p in objects) == 1]
        target = rng.choice(unique or objects)
        img = render(objects)
        rel = save(img, f"eval_ground_{i:02d}")
        crops = [save(img.crop(o[2]), f"eval_ground_{i:02d}_crop{k}") for k, o in enumerate(objects)]
        pos = crops[objects.index(target)]
        inst = "<|image_1|> Select the portion of the image that isolates the object labeled as"
        out["ShapesGround"].append(_eval_row(inst, f"'{target[1]} {target[0]}'", rel,
                                             ["<|image_1|> Represent the given cropped image of the object"]
                                             * len(crops), _first(pos, crops)))  # fmt: skip
    return out


def main() -> None:
    rng = random.Random(0)
    (HERE / "images").mkdir(exist_ok=True)
    (HERE / "train").mkdir(exist_ok=True)
    subsets = {"ShapesVQA": vqa_rows, "ShapesCLS": cls_rows, "ShapesT2I": t2i_rows, "ShapesI2T": i2t_rows,
               "ShapesGround": ground_rows}  # fmt: skip
    for name, make in subsets.items():
        rows = make(rng)
        with open(HERE / "train" / f"{name}.jsonl", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
        print(f"{name}: {len(rows)} rows")
    # Held-out eval rows from their own seed, so the train files above stay byte-identical.
    (HERE / "eval").mkdir(exist_ok=True)
    for name, rows in eval_subsets(random.Random(1)).items():
        with open(HERE / "eval" / f"{name}.jsonl", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
        print(f"eval/{name}: {len(rows)} rows")
    # video and visual-document demo data (make_demo_media.py), from their own seed so the rows above never change
    from make_demo_media import write_video_demo, write_visdoc_demo

    for name, rows in write_video_demo(random.Random(2)).items():
        print(f"{name}: {len(rows)} video rows")
    write_visdoc_demo()
    print("DemoDocs: visual-document corpus (queries, corpus, qrels)")


if __name__ == "__main__":
    main()

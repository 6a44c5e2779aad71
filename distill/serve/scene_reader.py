"""Read a flat-colour shape scene from its pixels: which shapes, of which colour, where, how big.

    from distill.serve.scene_reader import read_scene
    shapes = read_scene(Image.open("data/demo/images/vqa_00.png"))   # [Shape(colour='red', shape='circle', ...), ...]

Made for scenes like the demo's (solid shapes on a plain light background; a crop of one shape may have no background
at all) and for nothing else: it is the demo's image teacher (`distill.serve.scene_teacher`), so the demo's image
traces say what the image shows. Everything comes from the pixels; no file name or metadata is read.

How: pixels far from white (Euclidean RGB distance > INK_DISTANCE, so resampling halos count as the shape they fringe)
form a mask; its 4-connected components (scipy.ndimage.label) smaller than MIN_AREA_FRACTION of the image are noise.
Each component's colour is the hue of its median pixel (colour words by hue band, grey levels by value); its shape is
read from how much of its bounding box it fills: a square fills all of it, a disc pi/4 = 0.785, a triangle 1/2 (the
thresholds sit halfway between). Its position is where its box centre falls in a 3 x 3 grid of the image.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np
from PIL import Image

INK_DISTANCE = 60.0  # RGB distance from white above which a pixel belongs to a shape (white = 0, pure red = 305)
MIN_AREA_FRACTION = 0.003  # components under 0.3% of the image are resampling specks, not shapes
SQUARE_FILL = 0.9  # fill of the bounding box: square ~1.0, circle ~0.785, triangle ~0.5
CIRCLE_FILL = 0.64
# Hue bands in degrees (upper bound exclusive) -> colour word, for saturated pixels.
HUES = ((15, "red"), (40, "orange"), (70, "yellow"), (170, "green"), (200, "cyan"), (260, "blue"), (290, "purple"),
        (345, "pink"), (360, "red"))  # fmt: skip
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


@dataclass(frozen=True)
class Shape:
    """One shape read from the pixels. `box` is (x0, y0, x1, y1) in pixels, x1/y1 exclusive."""

    colour: str
    shape: str
    position: str  # "top-left", "top", "top-right", "left", "centre", "right", "bottom-left", "bottom", "bottom-right"
    box: tuple[int, int, int, int]
    area: int  # pixels
    fill: float  # area / box area
    size: float  # box width / image width

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"

    @property
    def centre(self) -> tuple[float, float]:
        return (self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2


def colour_name(rgb) -> str:
    """A colour word for an RGB triple (0-255): grey levels by value when unsaturated, else the hue band."""
    h, s, v = colorsys.rgb_to_hsv(*(float(c) / 255 for c in rgb))
    if s < 0.25 or v < 0.2:
        return "black" if v < 0.2 else "white" if v > 0.85 else "grey"
    degrees = h * 360
    return next(name for bound, name in HUES if degrees < bound)


def shape_name(fill: float, aspect: float) -> str:
    """The shape for a component filling `fill` of its bounding box whose width / height is `aspect`."""
    if fill >= SQUARE_FILL:
        return "square" if 0.8 <= aspect <= 1.25 else "rectangle"
    if fill >= CIRCLE_FILL:
        return "circle" if 0.8 <= aspect <= 1.25 else "ellipse"
    return "triangle"


def position_name(cx: float, cy: float, width: int, height: int) -> str:
    """Where a point falls in a 3 x 3 grid of the image ("top-left" ... "centre" ... "bottom-right")."""
    col = "left" if cx < width / 3 else "right" if cx > 2 * width / 3 else ""
    row = "top" if cy < height / 3 else "bottom" if cy > 2 * height / 3 else ""
    return "-".join(p for p in (row, col) if p) or "centre"


def read_scene(image: Image.Image) -> list[Shape]:
    """The shapes in `image`, in reading order: the top half left to right, then the bottom half."""
    from scipy import ndimage

    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    height, width = rgb.shape[:2]
    ink = np.linalg.norm(255.0 - rgb, axis=2) > INK_DISTANCE
    labels, count = ndimage.label(ink)  # 4-connectivity: shapes that only touch at a corner stay apart
    if not count:
        return []
    min_area = max(4, MIN_AREA_FRACTION * height * width)
    shapes = []
    for index, slices in enumerate(ndimage.find_objects(labels), start=1):
        part = labels[slices] == index
        area = int(part.sum())
        if area < min_area:
            continue
        ys, xs = slices
        box = (xs.start, ys.start, xs.stop, ys.stop)
        w, h = box[2] - box[0], box[3] - box[1]
        fill = area / (w * h)
        colour = colour_name(np.median(rgb[slices][part], axis=0))
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        shapes.append(Shape(colour, shape_name(fill, w / h), position_name(cx, cy, width, height), box, area,
                            round(fill, 3), round(w / width, 3)))  # fmt: skip
    return sorted(shapes, key=lambda s: (s.centre[1] >= height / 2, s.centre[0], s.centre[1]))


def has_background(image: Image.Image, shapes: list[Shape]) -> bool:
    """Whether a plain background shows around the shapes (a tight crop of one square has none)."""
    total = image.width * image.height
    return sum(s.area for s in shapes) < 0.9 * total


def count_word(n: int) -> str:
    return NUMBER_WORDS[n] if 0 <= n < len(NUMBER_WORDS) else str(n)


def listing(shapes: list[Shape], where: bool = True) -> str:
    """ "a red circle in the top-left, a blue square in the top-right and a green triangle" (English list)."""
    return english([f"a {s.name}" + (f" {_at(s.position)}" if where else "") for s in shapes])


def english(parts: list[str]) -> str:
    """["a", "b", "c"] -> "a, b and c"."""
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1] if parts else ""


def _at(position: str) -> str:
    return "in the centre" if position == "centre" else f"in the {position}"


def relation(a: Shape, b: Shape) -> str:
    """Where `b` lies as seen from `a`: "to its right", "below it", "below and to its left"."""
    dx, dy = b.centre[0] - a.centre[0], b.centre[1] - a.centre[1]
    horizontal = "to its right" if dx > 0 else "to its left"
    vertical = "below it" if dy > 0 else "above it"
    if abs(dx) > 2 * abs(dy):
        return horizontal
    if abs(dy) > 2 * abs(dx):
        return vertical
    return f"{vertical.removesuffix(' it')} and {horizontal}"

"""Correct traces an untrained English embedder reads poorly, for `distill embed` tests and benchmarks.

Each trace names the row's positive (the gold answer, label or caption) in German word by word ("4" -> "vier",
"red square" -> "rot Quadrat"): right content, in words all-MiniLM-L6-v2 was not trained to match to the English
candidates. A frozen embedder gains a little from them; one trained on such traces learns to read them, so the
held-out Hit@1 it reaches with them measures what `distill embed` adds. Built from the rows themselves (the positive is
the target), never from the images.

    rows = [coded_trace_row(example) for example in examples]
"""

from __future__ import annotations

import re

from distill.testing.traces import trace_row

GERMAN = {"1": "eins", "2": "zwei", "3": "drei", "4": "vier", "red": "rot", "green": "grün", "blue": "blau",
          "yellow": "gelb", "circle": "Kreis", "square": "Quadrat", "triangle": "Dreieck", "white": "weiß",
          "and": "und", "a": "ein", "background": "Hintergrund", "left": "links", "right": "rechts", "top": "oben",
          "bottom": "unten"}  # fmt: skip
_SKIP = {"an", "image", "of", "on", "the"}


def coded(text: str) -> str:
    """`text` word by word in German where the demo vocabulary has a word, filler words dropped."""
    return " ".join(GERMAN.get(w.lower(), w) for w in re.findall(r"\w+", text) if w.lower() not in _SKIP)


def coded_trace(example: dict) -> str:
    return f"<think>Ich sehe das Bild an.</think>\n{coded(example['positive']['text'])}"


def coded_trace_row(example: dict, sample_index: int = 0) -> dict:
    """A query-side trace row for `example` whose final part names its positive in German."""
    return trace_row(example, sample_index, coded_trace(example))

"""`distill score`'s configuration: the scorers by output name (each checked against its factory's signature), the
input and output, and the image budget part (`PixelBudget`) the judge and the vlm embedders see.

    from distill.score_config import ScoreConfig
    ScoreConfig(input="traces.jsonl", output="scored.jsonl", scorers={"format": None})
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from distill.images import PixelBudget


@dataclass
class ScoreConfig(PixelBudget):
    """score's flags, plus the image budget (`PixelBudget`) the judge and the vlm embedders see."""

    input: str = field(metadata={"help": "Trace rows (.jsonl) written by `distill generate`."})
    output: str = field(metadata={"help": "Scored rows (.jsonl): the input rows plus `scores`, same order."})
    scorers: dict | str | None = field(
        default=None,
        metadata={"help": "Output name -> scorer parameters (YAML mapping, or JSON on the command line); "
                  "`scorer: NAME` picks the registry scorer when the output name differs."},
    )  # fmt: skip
    image_root: str = field(default=".", metadata={"help": "Directory the rows' image paths are relative to."})
    strict: bool = field(default=False, metadata={"help": "Exit 1 on the first unreadable input line."})
    progress: bool = field(default=True, metadata={"help": "Show a tqdm progress bar (rows/s) on stderr."})

    def __post_init__(self):
        self.check_pixels()
        if isinstance(self.scorers, str):
            self.scorers = json.loads(self.scorers)
        if not self.scorers or not isinstance(self.scorers, dict):
            raise ValueError("score: `scorers` must name at least one scorer (a mapping name -> parameters)")
        from distill.scoring.registry import check_params

        for name, params in self.scorers.items():
            if params is not None and not isinstance(params, dict):
                raise ValueError(f"score: parameters of scorer {name!r} must be a mapping or null")
            params = dict(params or {})
            check_params(params.pop("scorer", name), params)
        if Path(self.input).resolve() == Path(self.output).resolve():
            raise ValueError("score: --output must differ from --input (stages never rewrite their input)")

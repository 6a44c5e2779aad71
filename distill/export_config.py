"""`distill export`'s configuration: every flag with its help (one typed dataclass composing the image budget part,
checked on construction).

    from distill.export_config import ExportConfig
    ExportConfig(input="runs/demo/filter/kept.jsonl", output="runs/demo/export/dataset", image_root="data/demo")
"""

from __future__ import annotations

from dataclasses import dataclass, field

from distill.images import PixelBudget
from distill.video import FRAME_MAX_PIXELS, FRAME_MIN_PIXELS, NUM_FRAMES


@dataclass
class ExportConfig(PixelBudget):
    """export's flags, plus the image budget (`PixelBudget`): the teacher's, which the student is trained with."""

    input: str = field(metadata={"help": "Kept trace rows (.jsonl) written by `distill filter`."})
    output: str = field(metadata={"help": "Output directory (README.md, data/, train.jsonl, manifest.json, ...)."})
    image_root: str = field(default=".", metadata={"help": "Directory the rows' image paths are relative to."})
    system_prompt: str | None = field(
        default=None, metadata={"help": "System message for every row; None: none (the chat template's default)."}
    )
    filter_summary: str | None = field(
        default=None,
        metadata={"help": "The filter's summary (`kept.summary.json`) for the manifest's keep rates; None: none "
                  "(`distill run` wires it like any path; nothing is guessed from beside the input)."},
    )  # fmt: skip
    strict: bool = field(default=False, metadata={"help": "Stop at the first row that cannot be exported."})
    require_think: bool = field(
        default=True,
        metadata={"help": "Drop rows with an empty think part; false keeps them as '<think></think>' + final (demo)."},
    )
    num_frames: int = field(default=NUM_FRAMES, metadata={"help": "Frames sampled per video (as generate sent)."})
    frame_min_pixels: int = field(default=FRAME_MIN_PIXELS, metadata={"help": "Smallest video frame area (px)."})
    frame_max_pixels: int = field(
        default=FRAME_MAX_PIXELS, metadata={"help": "Largest video frame area (px); match generate's frame budget."}
    )

    format: str = field(
        default="sft", metadata={"help": "sft: training rows; traces: the trace rows themselves (one config a file)."}
    )
    extra_inputs: list[str] = field(
        default_factory=list, metadata={"help": "--format traces: more trace files (rejected.jsonl, traces.jsonl)."}
    )
    embed_images: bool = field(default=True, metadata={"help": "--format traces: embed the query images."})
    push_to_hub: str | None = field(
        default=None, metadata={"help": "Hub dataset repo id to upload README.md + data to, once all is written."}
    )
    hub_private_repo: bool = field(
        default=True, metadata={"help": "Create the Hub repo private (if it does not exist)."}
    )
    license: str | None = field(default=None, metadata={"help": "Dataset card license (e.g. apache-2.0, cc-by-4.0)."})
    pretty_name: str | None = field(default=None, metadata={"help": "Dataset card title."})

    def __post_init__(self):
        if not self.input or not self.output:
            raise ValueError("--input and --output are required")
        self.check_pixels()
        if self.format not in ("sft", "traces"):
            raise ValueError(f"--format must be sft or traces, got {self.format!r}")
        if self.extra_inputs and self.format != "traces":
            raise ValueError("--extra_inputs is for --format traces")

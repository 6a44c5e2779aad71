"""`distill run`'s configuration: the pipeline recipe (`RunConfig`), its `serve:` section and the values set once for
every stage (`SHARED_FIELDS`), checked on construction.

    from distill.run_config import RunConfig
    RunConfig(name="demo", stages=["generate", "score"])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from distill.configs import ConfigError, typed
from distill.pipeline_stages import STAGES


@dataclass
class ServeSection:
    """The pipeline's `serve:` section: the local teacher `run` starts for the stages that need one."""

    models: list[str] = field(metadata={"help": "`distill serve --model` values: NAME=PATH or a bundled name."})
    args: list[str | int | float] = field(default_factory=list, metadata={"help": "Extra `distill serve` flags."})

    def __post_init__(self):
        if not self.models:
            raise ConfigError("serve: models: name at least one model")
        self.args = [str(a) for a in self.args]


# Values set once in the pipeline recipe and wired into every stage whose config has the field, like paths are.
SHARED_FIELDS = ("image_root", "min_pixels", "max_pixels")


@dataclass
class RunConfig:
    name: str = field(default="demo", metadata={"help": "Run name; outputs go to <runs_root>/<name>/<stage>/."})
    runs_root: str = field(default="runs", metadata={"help": "Directory holding run directories."})
    stages: list[str] | None = field(
        default=None,
        metadata={"help": "Stages to run, in pipeline order (a subset runs only those; earlier outputs must exist); "
                  "None: generate..train, plus each optional stage (generate_eval, generate_target, embed_base, embed, "
                  "reason_base, reason, eval) whose section the recipe has."},
    )  # fmt: skip
    force: list[str] = field(default_factory=list, metadata={"help": "Stages to rerun even when up to date."})
    tiny_vlm: str | None = field(
        default=None, metadata={"help": "Demo only: build the kit's tiny random VLM at this path if it is missing."}
    )
    serve: dict | None = field(
        default=None,
        metadata={"help": "Start a local teacher: {models: [name=PATH | smollm2 ...], args: [extra serve flags]} "
                  "(a `ServeSection`)."},
    )  # fmt: skip
    image_root: str | None = field(
        default=None, metadata={"help": "Set once for every stage that reads images; None: each stage's own."}
    )
    min_pixels: int | None = field(
        default=None,
        metadata={"help": "Pixel budget (`PixelBudget`) of teacher, judge and embedders, export, student and eval, set "
                  "once for every stage; None: each stage's own."},
    )  # fmt: skip
    max_pixels: int | None = field(default=None, metadata={"help": "... its upper bound (px); None: each stage's."})
    generate: dict | None = field(default=None, metadata={"help": "{recipe: generate.yaml, <overrides>}"})
    score: dict | None = field(default=None, metadata={"help": "{recipe: score.yaml, <overrides>}"})
    filter: dict | None = field(default=None, metadata={"help": "{recipe: filter.yaml, <overrides>}"})
    export: dict | None = field(default=None, metadata={"help": "{recipe: export.yaml (optional), <overrides>}"})
    train: dict | None = field(default=None, metadata={"help": "{recipe: train.yaml, <overrides>}"})
    generate_eval: dict | None = field(
        default=None, metadata={"help": "The teacher on held-out rows (for eval): {recipe: generate.yaml, input: ...}"}
    )
    generate_target: dict | None = field(
        default=None,
        metadata={"help": "The teacher on the held-out rows' retrieval targets and pages (side target, each distinct "
                  "target once; eval's target_traces): {recipe: generate.yaml, input: ...}"},
    )  # fmt: skip
    embed_base: dict | None = field(
        default=None,
        metadata={"help": "The baseline embedder, trained without traces: {recipe: embed.yaml, <overrides>} "
                  "(output_dir and trace_condition none wired); eval ranks with it as `base`."},
    )  # fmt: skip
    embed: dict | None = field(
        default=None,
        metadata={"help": "The embedder trained with the teacher's kept traces (filter/kept.jsonl, wired as "
                  "`teacher`): {recipe: embed.yaml, <overrides>}; eval ranks with it as `tte`."},
    )  # fmt: skip
    reason_base: dict | None = field(
        default=None, metadata={"help": "The untrained student on held-out rows: {input: ..., model: base checkpoint}"}
    )
    reason: dict | None = field(
        default=None, metadata={"help": "The trained student (train/model, wired) on held-out rows: {input: ...}"}
    )
    eval: dict | None = field(
        default=None, metadata={"help": "{recipe: eval.yaml, <overrides>}: teacher vs untrained vs trained student"}
    )
    train_launcher: list[str] | None = field(
        default=None,
        metadata={
            "help": "Command prefix for multi-GPU training, e.g. [accelerate, launch, --config_file, "
            "recipes/accelerate/zero2_offload.yaml]; None: one `python -m distill train` process."
        },
    )

    def __post_init__(self):
        if self.serve is not None:
            self.serve = typed(ServeSection, self.serve, "serve")
        known = [s.name for s in STAGES]
        if self.stages is None:
            self.stages = [s.name for s in STAGES if not s.optional or getattr(self, s.name) is not None]
        for name in [*self.stages, *self.force]:
            if name not in known:
                raise ValueError(f"unknown stage {name!r} (stages: {', '.join(known)})")
        self.stages = [s for s in known if s in self.stages]  # pipeline order, whatever order was given

    @property
    def declared(self) -> list[str]:
        """The stages this pipeline has: the selected ones and every optional one whose section the recipe has (a
        `--stages` subset still reads what the others wrote, e.g. eval the embedders trained by an earlier run)."""
        return [s.name for s in STAGES if s.name in self.stages or getattr(self, s.name) is not None]

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_root) / self.name

"""How `distill run` wires the stages: each stage's verb, the config fields that carry its input and output paths
inside a run directory, what it reads (for the skip fingerprint), and how its rows are counted for the run summary.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StageSpec:
    name: str
    verb: str
    wire: Callable[[Path], dict]  # run_dir -> {config field: path}: the run layout
    inputs: Callable[[dict], list[str]]  # resolved stage config -> the paths it reads
    rows_in: Callable[[dict], str | Path | None]  # wired paths -> the JSONL whose lines count as rows in
    rows_out: Callable[[dict], str | Path | None]
    report: str | None = None  # the stage's own report, relative to its stage dir
    teacher_field: str | None = None  # config field that takes a local teacher's base URL
    needs_teacher: Callable[[dict], bool] = lambda cfg: False


def _p(run_dir: Path, *parts: str) -> str:
    return str(run_dir.joinpath(*parts))


STAGES: list[StageSpec] = [
    StageSpec(
        "generate",
        "generate",
        wire=lambda d: {"output": _p(d, "generate", "traces.jsonl")},
        inputs=lambda c: [c["input"]],
        rows_in=lambda w: None,
        rows_out=lambda w: w["output"],
        report="traces.summary.json",
        teacher_field="base_url",
        needs_teacher=lambda c: not c.get("dry_run", False),
    ),
    StageSpec(
        "score",
        "score",
        wire=lambda d: {"input": _p(d, "generate", "traces.jsonl"), "output": _p(d, "score", "scored.jsonl")},
        inputs=lambda c: [c["input"]],
        rows_in=lambda w: w["input"],
        rows_out=lambda w: w["output"],
        report="scored.jsonl.summary.json",
    ),
    StageSpec(
        "filter",
        "filter",
        wire=lambda d: {
            "input": _p(d, "score", "scored.jsonl"),
            "kept": _p(d, "filter", "kept.jsonl"),
            "rejected": _p(d, "filter", "rejected.jsonl"),
        },
        inputs=lambda c: [c["input"]],
        rows_in=lambda w: w["input"],
        rows_out=lambda w: w["kept"],
        report="report.md",
    ),
    StageSpec(
        "export",
        "export",
        wire=lambda d: {"input": _p(d, "filter", "kept.jsonl"), "output": _p(d, "export", "data")},
        inputs=lambda c: [c["input"], str(Path(c["input"]).parent / "summary.json")],
        rows_in=lambda w: w["input"],
        rows_out=lambda w: Path(w["output"]) / "train.jsonl",
        report="data/summary.json",
    ),
    StageSpec(
        "train",
        "train",
        wire=lambda d: {"dataset_path": _p(d, "export", "data"), "output_dir": _p(d, "train", "model")},
        # The export's rows and manifest define its dataset: hashing them is enough, and far cheaper than hashing
        # the dataset dir with its encoded images.
        inputs=lambda c: (
            [str(Path(c["dataset_path"]) / f) for f in ("train.jsonl", "manifest.json")] + [c["model_name_or_path"]]
        ),
        rows_in=lambda w: Path(w["dataset_path"]) / "train.jsonl",
        rows_out=lambda w: None,
        report="model/README.md",
    ),
]


def _count_lines(path: str | Path | None) -> int | None:
    if path is None or not Path(path).exists():
        return None
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


def stage_summary(spec: StageSpec, run_dir: Path) -> dict:
    """Rows in / out of a finished stage (JSONL line counts); for generate, examples in and tokens from its summary."""
    wired = spec.wire(run_dir)
    summary = {"rows_in": _count_lines(spec.rows_in(wired)), "rows_out": _count_lines(spec.rows_out(wired))}
    if spec.name == "generate":
        import orjson

        gen = orjson.loads((run_dir / spec.name / spec.report).read_bytes())
        summary["rows_in"] = gen["examples"]
        summary["tokens"] = gen["prompt_tokens"] + gen["completion_tokens"]
    return summary

"""How `distill run` wires the stages: each pipeline stage's verb and the config fields that carry its input and
output paths inside a run directory (the run's layout). What a stage reads and which field names its main output
(beside which it writes its summary, `distill.stage.contract_paths`) come from the verb's own `Stage` declaration:
`run` reads that summary and knows no other file names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import orjson

from distill.cli import load_stage
from distill.stage import contract_paths


@dataclass(frozen=True)
class StageSpec:
    name: str
    verb: str
    wire: Callable[[Path], dict]  # run_dir -> {config field: path}: the run layout
    # (run_dir, the stages the pipeline declares) -> fields wired only when the stages that write them are declared
    wire_declared: Callable[[Path, list[str]], dict] = lambda run_dir, declared: {}
    report: str | None = None  # the stage's own human report, relative to its stage dir (None: its summary)
    # (stage config, a local teacher's base URL) -> the config using that teacher; None: the stage sends no request
    use_teacher: Callable[[dict, str], dict] | None = None
    needs_teacher: Callable[[dict], bool] = lambda cfg: False
    optional: bool = False  # runs only when the pipeline recipe has its section (or lists it in `stages`)
    # the files that stand for its inputs in the skip fingerprint, when hashing what it declares it reads costs too
    # much; None: what the verb's `Stage.paths` reads inside the run directory
    fingerprint_inputs: Callable[[dict], list[str]] | None = None


def _p(run_dir: Path, *parts: str) -> str:
    return str(run_dir.joinpath(*parts))


GENERATE = StageSpec(
    "generate",
    "generate",
    wire=lambda d: {"output": _p(d, "generate", "traces.jsonl")},
    use_teacher=lambda c, url: {**{k: v for k, v in c.items() if k != "base_url"}, "base_urls": [url]},
    needs_teacher=lambda c: not c.get("dry_run", False),
)

STAGES: list[StageSpec] = [
    GENERATE,
    # The teacher on held-out rows, for eval (optional): next to generate, so the local teacher stops before training.
    replace(
        GENERATE, name="generate_eval", optional=True, wire=lambda d: {"output": _p(d, "generate_eval", "traces.jsonl")}
    ),  # fmt: skip
    # The teacher on the retrieval targets and pages of the held-out rows (optional): each distinct target once; eval
    # then ranks every condition again with each candidate conditioned by its trace (`target_traces`, wired by run).
    replace(
        GENERATE,
        name="generate_target",
        optional=True,
        wire=lambda d: {"output": _p(d, "generate_target", "traces.jsonl"), "side": "target"},
    ),  # fmt: skip
    StageSpec(
        "score",
        "score",
        wire=lambda d: {"input": _p(d, "generate", "traces.jsonl"), "output": _p(d, "score", "scored.jsonl")},
        use_teacher=lambda c, url: {**c, "scorers": _judges_use(c.get("scorers"), url)},
        needs_teacher=lambda c: bool(_judges(c.get("scorers"))),
    ),
    StageSpec(
        "filter",
        "filter",
        wire=lambda d: {
            "input": _p(d, "score", "scored.jsonl"),
            "kept": _p(d, "filter", "kept.jsonl"),
            "rejected": _p(d, "filter", "rejected.jsonl"),
        },
        report="report.md",
    ),
    StageSpec(
        "export",
        "export",
        # The filter's summary is wired like any path (keep rates for the manifest and model card), never guessed.
        wire=lambda d: {
            "input": _p(d, "filter", "kept.jsonl"),
            "output": _p(d, "export", "dataset"),
            "filter_summary": _p(d, "filter", "kept.summary.json"),
        },
    ),
    StageSpec(
        "train",
        "train",
        wire=lambda d: {"dataset_path": _p(d, "export", "dataset"), "output_dir": _p(d, "train", "model")},
        # The export's rows and manifest define its dataset: hashing them is enough, and far cheaper than hashing
        # the dataset dir with its encoded images.
        fingerprint_inputs=lambda c: (
            [str(Path(c["dataset_path"]) / f) for f in ("train.jsonl", "manifest.json")] + [c["model_name_or_path"]]
        ),
        report="model/README.md",
    ),
    # The other half of TTE (optional): the embedder trained on the same examples without traces (the baseline) and
    # with the teacher's kept traces (TTE_t's and TTE_s's embedder); one recipe, the trace condition is wired.
    StageSpec(
        "embed_base",
        "embed",
        wire=lambda d: {"output_dir": _p(d, "embed_base", "model"), "trace_condition": "none"},
        optional=True,
    ),
    StageSpec(
        "embed",
        "embed",
        wire=lambda d: {
            "output_dir": _p(d, "embed", "model"),
            "traces": [f"teacher={_p(d, 'filter', 'kept.jsonl')}"],
            "trace_condition": "teacher",
        },  # fmt: skip
        optional=True,
    ),
    # Closing the loop (optional): the untrained and the trained student on the held-out rows, and the report that
    # puts them beside the teacher's traces.
    StageSpec(
        "reason_base",
        "reason",
        wire=lambda d: {"output": _p(d, "reason_base", "traces.jsonl")},
        optional=True,
    ),
    StageSpec(
        "reason",
        "reason",
        wire=lambda d: {"output": _p(d, "reason", "traces.jsonl"), "model": _p(d, "train", "model")},
        optional=True,
    ),
    StageSpec(
        "eval",
        "eval",
        # the report's columns: teacher, untrained student, trained student (in this order)
        wire=lambda d: {
            "output_dir": _p(d, "eval"),
            "traces": [f"{name}={_p(d, stage, 'traces.jsonl')}" for name, stage in EVAL_SETS],
        },
        wire_declared=lambda d, declared: _eval_extras(d, declared),
        report="report.md",
        optional=True,
    ),
]


def _judges(scorers) -> list[str]:
    """The llm_judge scorers of a score config (by output name)."""
    scorers = scorers if isinstance(scorers, dict) else {}
    return [n for n, p in scorers.items() if (p or {}).get("scorer", n) == "llm_judge"]


def _judges_use(scorers: dict, url: str) -> dict:
    """`scorers` with every llm_judge's client sent to the local teacher (its model name is the recipe's)."""
    out = dict(scorers)
    for name in _judges(scorers):
        client = {k: v for k, v in (out[name].get("client") or {}).items() if k != "base_url"}
        out[name] = {**out[name], "client": {**client, "base_urls": [url]}}
    return out


# eval's trace sets: (name in the report, the stage that wrote them)
EVAL_SETS = (("teacher", "generate_eval"), ("student_untrained", "reason_base"), ("student_trained", "reason"))
TARGET_TRACES = "generate_target"  # the stage whose traces eval takes as `target_traces` when the run has it
# eval's trained embedders, beside its frozen `embedder_model`: (name in the report, the stage that trained it); the
# names are eval's defaults for the TTE headline (`baseline_embedder`, `tte_embedder`)
EVAL_EMBEDDERS = (("base", "embed_base"), ("tte", "embed"))


def _eval_extras(run_dir: Path, declared: list[str]) -> dict:
    """eval's inputs from optional stages: the target-side traces, the trained embedders (when declared)."""
    out: dict = {}
    if TARGET_TRACES in declared:  # the target-side traces condition eval's candidates
        out["target_traces"] = _p(run_dir, TARGET_TRACES, "traces.jsonl")
    if any(stage in declared for _, stage in EVAL_EMBEDDERS):
        out["embedders"] = [f"{name}={_p(run_dir, stage, 'model')}" for name, stage in EVAL_EMBEDDERS
                            if stage in declared]  # fmt: skip
    return out


def stage_summary(spec: StageSpec, config: dict) -> dict:
    """The finished stage's summary (`distill.stage.summary` schema), read from beside its main output (the field
    its `Stage` declares)."""
    path = contract_paths(config[load_stage(spec.verb).output])[1]
    if not path.exists():  # a verb that writes no summary (eval: its report is eval.json + report.md)
        return {"rows_in": None, "rows_out": None, "dropped": {}, "seconds": None, "tokens": None, "summary": None}
    s = orjson.loads(path.read_bytes())
    tokens = s.get("tokens") or {}
    return {"rows_in": s.get("rows_in"), "rows_out": s.get("rows_out"), "dropped": s.get("dropped", {}),
            "seconds": s.get("seconds"), "tokens": sum(v for v in tokens.values() if isinstance(v, int)) or None,
            "summary": str(path)}  # fmt: skip

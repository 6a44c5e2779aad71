"""`distill validate`: check a dataset (MMEB-train, MMEB eval or our rows) and every image it references.

    distill validate --input data/demo/train --image_root data/demo --report runs/validate.json

Reports bad JSON lines, missing or malformed fields, missing / zero-byte / corrupt / oversized images, image paths
that escape `image_root`, and duplicate ids, each with its 1-based line (row index for parquet / saved datasets).
Reports what it found per task kind (MMEB-V2's: image_qa, video_ret, visdoc, ...): rows, rows ok, and per dataset the
candidates a query is ranked against (every page of a corpus, a video dataset's whole label set or video pool).
Writes `{"rows": N, "ok": K, "kinds": {kind: {rows, ok, datasets: {name: {rows, ok, pool}}}}, "problems": [{"line",
"id", "reason"}]}` when `--report` is given, and beside it the
stage contract's `<stem>.config.yaml` and `<stem>.summary.json` (rows in, rows ok, problems counted by class).
Exit status: 0 when every row is fine, 1 otherwise; `--strict` stops at the first problem.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from distill.data import mmeb_v2
from distill.data.mmeb import load_examples
from distill.data.mmeb_video import GLOBAL_POOL, label_list, natural_name
from distill.images import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS, ImageError, check_ref
from distill.io import BadRow, write_json_atomic
from distill.records import image_paths, video_paths
from distill.stage import Paths, Stage, reason_class
from distill.stage import summary as stage_summary
from distill.video import NUM_FRAMES, VideoError, open_frame, sample_frames

log = logging.getLogger(__name__)


@dataclass
class ValidateConfig:
    input: str = field(
        metadata={"help": "Dataset: .jsonl, .parquet, a saved HF dataset dir, or a dir of per-subset files."}
    )
    image_root: str = field(
        default=".", metadata={"help": "Directory image paths are relative to; nothing outside it is read."}
    )
    subset: str | None = field(
        default=None, metadata={"help": "MMEB subset name (sets the task type); default: the file stem."}
    )
    report: str | None = field(
        default=None, metadata={"help": "Write the JSON report here (rows, ok, problems by line)."}
    )
    strict: bool = field(default=False, metadata={"help": "Stop at the first problem."})
    max_image_pixels: int = field(
        default=MAX_IMAGE_PIXELS, metadata={"help": "Images with more pixels are refused (bomb guard)."}
    )
    max_image_bytes: int = field(
        default=MAX_IMAGE_BYTES, metadata={"help": "Image files larger than this many bytes are refused."}
    )
    num_frames: int = field(default=NUM_FRAMES, metadata={"help": "Frames sampled per video (each one is checked)."})


def _short(reason: str) -> str:
    """BadRow class for the summary: the reason without file names and numbers."""
    for key in ("invalid JSON", "missing field", "not found", "zero-byte", "corrupt", "escapes", "absolute",
                "decompression", "MiB", "duplicate id", "unknown task", "needs a gold", "malformed",
                "unreadable video", "no frames", "unknown query id", "unknown corpus id", "no relevant page"):  # fmt: skip
        if key in reason:
            return key
    return reason.split(":")[0][:40]


def _kind(example: dict) -> str:
    """The MMEB-V2 task kind of a row's dataset (image_qa, video_ret, visdoc, ...), else its task type."""
    found = mmeb_v2.task(example["dataset"])
    return found.kind if found else example["task"]


class Found:
    """What `validate` found per task kind and dataset: rows, rows ok, and the candidates each query is ranked
    against (MMEB-V2's pools: every page of a corpus, a video dataset's whole label set or video pool)."""

    def __init__(self, input_path: str):
        self.stats: dict[tuple[str, str], dict] = {}
        self.input = Path(input_path)

    def extra_labels(self, dataset: str) -> set[str]:
        """A labels.txt of the dataset's own folder (the input, or a folder in it named after the dataset)."""
        folders = [self.input] + ([d for d in self.input.iterdir() if d.is_dir() and mmeb_v2.hub_subset(d.name)
                                   == natural_name(dataset)] if self.input.is_dir() else [])  # fmt: skip
        return {label for f in folders for label in label_list(f)}

    def add(self, ex: dict, ok: bool) -> None:
        s = self.stats.setdefault((_kind(ex), ex["dataset"]), {"rows": 0, "ok": 0, "pages": 0, "keys": set(), "n": 0})
        s["rows"] += 1
        s["ok"] += ok
        if "corpus_id" in ex:
            s["pages"] += 1
        elif natural_name(ex["dataset"]) in GLOBAL_POOL:  # pool: the dataset's distinct labels / videos
            s["keys"].add(ex["positive"].get("video") or ex["positive"]["text"])
        s["n"] = max(s["n"], 1 + len(ex["negatives"]))

    def report(self) -> dict:
        kinds: dict[str, dict] = {}
        for (kind, ds), s in sorted(self.stats.items()):
            extra = self.extra_labels(ds) if kind == "video_cls" and s["keys"] else set()
            pool = s["pages"] or (len(s["keys"] | extra) if s["keys"] else s["n"])
            k = kinds.setdefault(kind, {"rows": 0, "ok": 0, "datasets": {}})
            k["rows"], k["ok"] = k["rows"] + s["rows"], k["ok"] + s["ok"]
            k["datasets"][ds] = {"rows": s["rows"], "ok": s["ok"], "pool": pool}
        return kinds


def validate(config: ValidateConfig) -> dict:
    """Run every check; returns the report dict."""
    found = Found(config.input)
    problems: list[BadRow] = []
    rows = ok = 0
    seen_ids: dict[str, int] = {}
    image_verdict: dict[str, str | None] = {}  # each distinct image is opened once

    def image_problem(rel: str) -> str | None:
        if rel not in image_verdict:
            try:
                check_ref(config.image_root, rel, config.max_image_pixels, config.max_image_bytes)
                image_verdict[rel] = None
            except ImageError as e:
                image_verdict[rel] = f"image {rel!r}: {e.reason}"
        return image_verdict[rel]

    def video_problem(rel: str) -> str | None:
        if rel not in image_verdict:
            try:  # the frames generate and export will use: sampled, then each opened and checked
                for ref in sample_frames(config.image_root, rel, config.num_frames):
                    if "#" not in ref:  # a video file's frames were all decoded while counting them
                        open_frame(config.image_root, ref).close()
                image_verdict[rel] = None
            except (VideoError, ImageError) as e:
                image_verdict[rel] = f"video {rel!r}: {e}" if isinstance(e, VideoError) else f"video {rel!r}: frame {e}"
        return image_verdict[rel]

    for line, item in load_examples(config.input, config.subset, image_root=config.image_root):
        rows += 1
        if isinstance(item, BadRow):
            row_problems = [item]
        else:
            # the schema (distill.records.example_problems) was checked by load_examples, as in every stage
            reasons = [p for rel in image_paths(item) if (p := image_problem(rel))]
            reasons += [p for rel in video_paths(item) if (p := video_problem(rel))]
            if item["id"] in seen_ids:
                reasons.append(f"duplicate id (first seen on line {seen_ids[item['id']]})")
            else:
                seen_ids[item["id"]] = line
            row_problems = [BadRow(line, r, item.get("id")) for r in reasons]
            found.add(item, not row_problems)
        if row_problems:
            problems += row_problems
            for p in row_problems:
                log.warning("%s:%d: %s", config.input, p.line, p.reason)
            if config.strict:
                break
        else:
            ok += 1
    return {"rows": rows, "ok": ok, "kinds": found.report(), "problems": [p.as_dict() for p in problems]}


def run(config: ValidateConfig) -> dict:
    """Validate, print the problems by class, write the report; the summary (rows in, rows ok, problems by class)."""
    start = time.monotonic()
    report = validate(config)
    by_reason = Counter(_short(p["reason"]) for p in report["problems"])
    print(f"{config.input}: {report['rows']} rows, {report['ok']} ok, {report['rows'] - report['ok']} with problems")
    for reason, n in by_reason.most_common():
        print(f"  {n:6d}  {reason}")
    for kind, k in report["kinds"].items():  # what was found, per task kind (MMEB-V2's pools in brackets)
        sets = ", ".join(f"{ds} {d['rows']} rows [{d['pool']} candidates]" for ds, d in k["datasets"].items())
        print(f"  {kind}: {k['rows']} rows, {k['ok']} ok; {sets}")
    if config.report:
        write_json_atomic(config.report, report)
        print(f"report: {config.report}")
    dropped = Counter(reason_class(p["reason"]) for p in report["problems"])
    return stage_summary("validate", report["rows"], report["ok"], time.monotonic() - start, dropped=dropped,
                         problems=report["problems"], input=config.input, report=config.report)  # fmt: skip


def _verdict(s: dict) -> str | None:
    bad = s["rows_in"] - s["rows_out"]
    return f"{bad} of {s['rows_in']} rows have problems (listed above)" if bad else None


STAGE = Stage(
    "validate",
    (ValidateConfig,),
    run,
    output="report",  # optional: without --report nothing is written
    writes="the report {rows, ok, problems} at --report",
    paths=lambda c: Paths(reads=[c.input, c.image_root], writes=[c.report]),
    verdict=_verdict,
)
main = STAGE.main


if __name__ == "__main__":
    from distill.cli import main as cli_main

    sys.exit(cli_main(["validate", *sys.argv[1:]]))

"""`distill validate`: check a dataset (MMEB-train, MMEB eval or our rows) and every image it references.

    distill validate --input data/demo/train --image_root data/demo --report runs/validate.json

Reports bad JSON lines, missing or malformed fields, missing / zero-byte / corrupt / oversized images, image paths
that escape `image_root`, and duplicate ids, each with its 1-based line (row index for parquet / saved datasets).
Writes `{"rows": N, "ok": K, "problems": [{"line", "id", "reason"}]}` when `--report` is given, and beside it the
stage contract's `<stem>.config.yaml` and `<stem>.summary.json` (rows in, rows ok, problems counted by class).
Exit status: 0 when every row is fine, 1 otherwise; `--strict` stops at the first problem.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

from distill.configs import save_resolved_config
from distill.data.mmeb import Problem, load_examples
from distill.images import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS, ImageError, check_image, resolve_image
from distill.io import write_json_atomic
from distill.records import image_paths, video_paths
from distill.stage import contract_paths, reason_class
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
    """Problem class for the summary: the reason without file names and numbers."""
    for key in ("invalid JSON", "missing field", "not found", "zero-byte", "corrupt", "escapes", "absolute",
                "decompression", "MiB", "duplicate id", "unknown task", "needs a gold", "malformed",
                "unreadable video", "no frames", "unknown query id", "unknown corpus id", "no relevant page"):  # fmt: skip
        if key in reason:
            return key
    return reason.split(":")[0][:40]


def validate(config: ValidateConfig) -> dict:
    """Run every check; returns the report dict."""
    problems: list[Problem] = []
    rows = ok = 0
    seen_ids: dict[str, int] = {}
    image_verdict: dict[str, str | None] = {}  # each distinct image is opened once

    def image_problem(rel: str) -> str | None:
        if rel not in image_verdict:
            try:
                path = resolve_image(config.image_root, rel)
                check_image(path, config.max_image_pixels, config.max_image_bytes)
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

    for line, item in load_examples(config.input, config.subset):
        rows += 1
        if isinstance(item, Problem):
            row_problems = [item]
        else:
            # the schema (distill.records.example_problems) was checked by load_examples, as in every stage
            reasons = [p for rel in image_paths(item) if (p := image_problem(rel))]
            reasons += [p for rel in video_paths(item) if (p := video_problem(rel))]
            if item["id"] in seen_ids:
                reasons.append(f"duplicate id (first seen on line {seen_ids[item['id']]})")
            else:
                seen_ids[item["id"]] = line
            row_problems = [Problem(line, r, item.get("id")) for r in reasons]
        if row_problems:
            problems += row_problems
            for p in row_problems:
                log.warning("%s:%d: %s", config.input, p.line, p.reason)
            if config.strict:
                break
        else:
            ok += 1
    return {"rows": rows, "ok": ok, "problems": [p.as_dict() for p in problems]}


def main(config: ValidateConfig) -> int:
    start = time.monotonic()
    report = validate(config)
    by_reason = Counter(_short(p["reason"]) for p in report["problems"])
    print(f"{config.input}: {report['rows']} rows, {report['ok']} ok, {report['rows'] - report['ok']} with problems")
    for reason, n in by_reason.most_common():
        print(f"  {n:6d}  {reason}")
    if config.report:  # the stage contract beside the report: <stem>.config.yaml and <stem>.summary.json
        write_json_atomic(config.report, report)
        config_path, summary_path = contract_paths(config.report)
        save_resolved_config(config_path, config)
        dropped = Counter(reason_class(p["reason"]) for p in report["problems"])
        write_json_atomic(summary_path, stage_summary("validate", report["rows"], report["ok"], time.monotonic() - start,
                                                      dropped=dropped, problems=report["problems"], input=config.input,
                                                      report=config.report))  # fmt: skip
        print(f"report: {config.report}")
    return 0 if report["ok"] == report["rows"] else 1


if __name__ == "__main__":
    from distill.cli import main as cli_main

    sys.exit(cli_main(["validate", *sys.argv[1:]]))

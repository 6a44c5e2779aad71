"""`distill export`: kept trace rows -> a TRL vision-language conversational SFT dataset, in the Hub's layout.

    distill export --input runs/demo/kept.jsonl --output runs/demo/export --image_root data/demo
    distill export ... --push_to_hub me/demo-sft          # then upload README.md + data/ (private repo)
    distill export --format traces --input kept.jsonl --extra_inputs rejected.jsonl ...   (see distill.export_hub)

Each kept row (see `distill.records`: example + `trace`, `teacher`, `status`) becomes one training row, built from the
side the trace is about (`side`: the query, or for target-side traces the positive and its target instruction):
    images    [PIL image, ...]   that side's images, resized with `distill.images` to the teacher's pixel budget
    messages  [{"role": "user", "content": instruction + "\n" + text of that side},
               {"role": "assistant", "content": "<think>" + think + "</think>\n" + final}]
              built by `distill.chat_format.student_prompt`, the format `distill reason` asks the student with
    id, task, dataset, sample_index   (metadata; TRL drops unused columns)
String contents are TRL's conversational format: the collator puts the row's images before the first user text.

Outputs in `--output` (the folder is a Hub dataset: `load_dataset(output)`, `trl sft --dataset_name output`):
    README.md       dataset card: YAML (configs, features, splits, sizes, task categories, tags, license) and how it
                    was made (teacher, prompt templates, filter keep rates per check, rows per task and dataset)
    data/train-0000i-of-0000N.parquet   the rows, images embedded (`datasets.Image`); ~500 MB shards
    train.jsonl     the same rows with image paths relative to `--image_root` (originals, for inspection/other tools)
    manifest.json   input sha256, counts, teacher models, prompt ids/shas, modes, and the filter summary given as
                    `--filter_summary` (`distill run` wires it): `distill train` copies it into its lineage record
                    and model card
    quarantine.jsonl rows that could not be exported, each with `export_error`
    summary.json, config.yaml   the stage contract (`distill.stage`): the summary and the resolved config
Rows with status != ok, an empty think or final part, or an unreadable image are quarantined (the run goes on unless
`--strict`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from distill.chat_format import assistant_text, load_images, load_videos, student_prompt, user_text  # noqa: F401 (re-exported: older callers)
from distill.export_config import ExportConfig
from distill.export_hub import export_traces, sft_card
from distill.hub import push_folder, write_parquet_shards
from distill.images import ImageError
from distill.io import BadRow, atomic_temp, dumps, iter_jsonl, write_json_atomic, write_jsonl_atomic, write_text_atomic
from distill.records import trace_problems, trace_side
from distill.stage import DataError, Paths, Stage, StageError, reason_class
from distill.stage import summary as stage_summary

log = logging.getLogger(__name__)


def row_problem(row: dict, require_think: bool = True) -> str | None:
    """Why a kept row cannot become a training row, or None. The trace schema first (`distill.records`, the check
    every stage applies: `instruction: 7` or `trace: "str"` is reported here, never a crash later)."""
    if problems := trace_problems(row):
        return "; ".join(problems)
    if row.get("status", "ok") != "ok":
        return f"status is {row.get('status')!r}, not 'ok'"
    trace = row["trace"]
    if not isinstance(trace, dict):
        return "field 'trace' is not an object"
    if require_think and not str(trace.get("think") or "").strip():
        return "empty think part"
    if not str(trace.get("final") or "").strip():
        return "empty final part"
    return None


def to_training_row(row: dict, config: ExportConfig) -> tuple[dict, dict]:
    """(dataset row with PIL images, JSONL row with relative image paths); raises ImageError/ValueError."""
    # the one chat format, on the side the trace is about: a target-side trace gets the positive as its user turn
    side = trace_side(row)
    prompt = student_prompt(row, side=side, trace=row["trace"], system_prompt=config.system_prompt)
    images = load_images(prompt.images, config.image_root, config.min_pixels, config.max_pixels)
    # a video becomes its sampled frames (the frames the teacher saw), trained as one video by the student
    videos = load_videos(prompt.videos, config.image_root, config.num_frames, config.frame_min_pixels,
                         config.frame_max_pixels)  # fmt: skip
    messages = prompt.messages
    meta = {"id": row["id"], "task": row.get("task"), "dataset": row.get("dataset"),
            "sample_index": int(row.get("sample_index", 0))}  # fmt: skip
    return {**meta, "images": images, "videos": videos, "messages": messages}, {
        **meta, "side": side, "images": prompt.images, "videos": prompt.videos, "messages": messages}  # fmt: skip


def _features():
    from datasets import Features, Image, List, Value

    return Features(
        {"id": Value("string"), "task": Value("string"), "dataset": Value("string"), "sample_index": Value("int64"),
         "images": List(Image()), "videos": List(List(Image())), "messages": List({"role": Value("string"), "content": Value("string")})}
    )  # fmt: skip


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class _Tally:
    """The manifest's counts over exported rows, kept as they stream by (the rows themselves are not kept)."""

    def __init__(self):
        self.tasks, self.sides, self.datasets = Counter(), Counter(), Counter()
        self.models, self.modes, self.prompts = Counter(), Counter(), {}
        self.video_rows = 0

    def add(self, r: dict) -> None:
        self.tasks[r.get("task")] += 1
        self.sides[trace_side(r)] += 1
        self.datasets[r.get("dataset")] += 1
        t = r.get("teacher") or {}
        self.models[str(t.get("model"))] += 1
        self.modes[str(t.get("mode"))] += 1
        self.prompts.setdefault(str(t.get("prompt_id")), Counter())[str(t.get("prompt_sha"))] += 1

    def teacher(self) -> dict:
        return {"models": dict(self.models), "modes": dict(self.modes),
                "prompts": {k: dict(v) for k, v in self.prompts.items()}}  # fmt: skip


def _filter_summary(config: ExportConfig) -> tuple[str | None, dict | None]:
    if not config.filter_summary:
        return None, None
    with open(config.filter_summary) as f:  # its existence was checked before the export started (stage preflight)
        try:
            return config.filter_summary, json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"--filter_summary {config.filter_summary}: not valid JSON: {e}") from None


def export(config: ExportConfig) -> dict:
    """Run the export; returns the summary dict (`distill export` writes it to `<output>/summary.json`)."""
    t0 = time.time()
    out = Path(config.output)
    out.mkdir(parents=True, exist_ok=True)
    quarantine, problems, tally = [], [], _Tally()
    rows_in = rows_out = 0
    # train.jsonl is written as rows stream by, into a temp file renamed at the end (atomic like every output)
    jsonl_file, jsonl_tmp = atomic_temp(out / "train.jsonl")

    def train_rows():  # streamed into the dataset writer: decoded images never pile up in memory
        nonlocal rows_in, rows_out
        for line, row in tqdm(iter_jsonl(config.input), desc="export", unit="row"):
            rows_in += 1
            reason = row.reason if isinstance(row, BadRow) else row_problem(row, config.require_think)
            if reason is None:
                try:
                    train_row, jsonl_row = to_training_row(row, config)
                except (ImageError, ValueError, KeyError, TypeError) as e:
                    reason = f"image {e}" if isinstance(e, ImageError) else f"malformed row: {e}"
            if reason is not None:
                row_id = None if isinstance(row, BadRow) else row.get("id")
                log.warning("%s:%d: %s", config.input, line, reason)
                problems.append({"line": line, "id": row_id, "reason": reason})
                if not isinstance(row, BadRow):
                    quarantine.append({**row, "export_error": reason})
                if config.strict:
                    raise ValueError(f"{config.input}:{line}: {reason}")
                continue
            jsonl_file.write(dumps(jsonl_row))
            rows_out += 1
            tally.add(row)
            tally.video_rows += bool(jsonl_row.get("videos"))
            yield train_row

    try:
        shards = _write_dataset(train_rows, out, config, rows_in_of=lambda: (rows_in, rows_out, problems))
        jsonl_file.flush()
        os.fsync(jsonl_file.fileno())
        jsonl_file.close()
        os.replace(jsonl_tmp, out / "train.jsonl")
    finally:
        jsonl_file.close()
        Path(jsonl_tmp).unlink(missing_ok=True)
    write_jsonl_atomic(out / "quarantine.jsonl", quarantine)
    return _finish(config, out, t0, rows_in, rows_out, problems, tally, shards)


def _write_dataset(train_rows, out: Path, config: ExportConfig, rows_in_of):
    """The rows as parquet shards under `out/data/` (the Hub layout); returns the `ConfigShards` for the card."""
    from datasets import Dataset
    from datasets.exceptions import DatasetGenerationError

    with tempfile.TemporaryDirectory(dir=out, prefix=".cache-") as cache:  # a fresh cache: never a stale reuse
        try:
            dataset = Dataset.from_generator(train_rows, features=_features(), cache_dir=cache)
        except DatasetGenerationError as e:  # datasets wraps what the generator or its writer raised: give back
            # our own error, or the disk's (a full disk is then one line, exit 2, like everywhere else)
            raise (e.__cause__ if isinstance(e.__cause__, ValueError | OSError) else e) from None
        except ValueError:  # datasets refuses an empty split; say why there is nothing (below)
            if rows_in_of()[1]:
                raise
        rows_in, rows_out, problems = rows_in_of()
        if not rows_out:
            raise ValueError(f"{config.input}: no rows to export ({rows_in} rows in, {len(problems)} unusable): "
                             "nothing to train on; check the filter report")  # fmt: skip
        shards = write_parquet_shards(dataset, out)  # data/ replaced in one rename: never half-written
    shutil.rmtree(out / "dataset", ignore_errors=True)  # the save_to_disk layout of older versions
    return shards


def _finish(config: ExportConfig, out: Path, t0: float, rows_in: int, rows_out: int, problems: list, tally,
            shards) -> dict:  # fmt: skip
    filter_path, filter_summary = _filter_summary(config)
    drops = Counter(reason_class(p["reason"]) for p in problems)
    manifest = {
        "input": os.path.abspath(config.input),
        "input_sha256": _sha256(config.input),
        "image_root": os.path.abspath(config.image_root),
        "pixels": {"min": config.min_pixels, "max": config.max_pixels},
        "rows_in": rows_in,
        "rows_out": rows_out,
        "tasks": dict(tally.tasks),
        "sides": dict(tally.sides),
        "datasets": dict(tally.datasets),
        "video_rows": tally.video_rows,
        "teacher": tally.teacher(),
        "filter_summary_path": filter_path,
        "filter_summary": filter_summary,
        "format": "TRL conversational vision-language: images + messages (user, assistant)",
    }
    write_json_atomic(out / "manifest.json", manifest)
    card = sft_card(manifest, shards, config.license, config.pretty_name, config.push_to_hub or "path/to/this/folder")
    write_text_atomic(out / "README.md", str(card))
    return stage_summary("export", rows_in, rows_out, time.time() - t0, dropped=drops, problems=problems,
                         quarantined=len(problems), video_rows=tally.video_rows)  # fmt: skip


def run(config: ExportConfig) -> dict:
    try:
        summary = export_traces(config) if config.format == "traces" else export(config)
    except ValueError as e:  # nothing to export, or --strict on a bad row: the data failed, not the setup
        raise DataError(str(e)) from None
    print(f"{config.input}: {summary['rows_in']} rows in, {summary['rows_out']} exported, "
          f"{summary['quarantined']} quarantined -> {config.output}")  # fmt: skip
    if summary.get("video_rows"):
        log.warning("%d of %d rows carry a video: `distill train` trains them as videos; stock `trl sft` / SFTTrainer "
                    "drop the `videos` column and train those rows as text only (see the dataset card)",
                    summary["video_rows"], summary["rows_out"])  # fmt: skip
    for reason, n in Counter(summary["dropped"]).most_common():
        print(f"  {n:6d}  {reason}")
    return summary


def publish(summary: dict, config: ExportConfig) -> None:
    """--push_to_hub: every file is final by now; only the card and the data files go up."""
    if not config.push_to_hub:
        return
    patterns = ["README.md", *(f"{c}/*" for c in (summary.get("configs") or {"data": None}))]
    try:
        url = push_folder(config.output, config.push_to_hub, "dataset", patterns, private=config.hub_private_repo)
    except Exception as e:  # network, auth, offline mode: one line, the local export stays valid
        raise StageError(f"push to {config.push_to_hub} failed: {type(e).__name__}: {e}") from None
    print(f"pushed {config.output} -> {url}")


STAGE = Stage(
    "export",
    (ExportConfig,),
    run,
    output="output",
    writes="README.md, data/*.parquet, train.jsonl, manifest.json, quarantine.jsonl in the --output folder",
    paths=lambda c: Paths(
        reads=[c.image_root], read_files=[c.input, c.filter_summary, *c.extra_inputs], write_dirs=[c.output]
    ),  # fmt: skip
    publish=publish,
)
main = STAGE.main


if __name__ == "__main__":
    from distill.cli import main as cli_main

    sys.exit(cli_main(["export", *sys.argv[1:]]))

"""The training data: load an export, pre-flight it with the student's processor, and count padding per batch.

Pre-flight tokenizes every row exactly as the collator will (chat template + image token expansion) and drops rows
longer than `max_length`, counting them: TRL's collator would otherwise truncate them, and truncation can cut through
image placeholder tokens (then the forward fails with an image-feature / token mismatch) or cut the trace short.
The per-row token counts feed the length-grouped sampler, so no second pass is needed.
"""

from __future__ import annotations

import logging
from pathlib import Path

from distill.stage import StageError

log = logging.getLogger(__name__)


def load_export(path: str):
    """The `train` split of an export dir (the Hub layout: README.md + data/*.parquet, read with `load_dataset`, as
    `trl sft` does), or of a `save_to_disk` dir (`<path>/dataset` of older exports, or the dir itself). StageError (one
    line naming the file) for an empty, cut or unreadable data file and for an export without rows."""
    from datasets.exceptions import DatasetGenerationError

    p = Path(path)
    if not p.is_dir():
        raise ValueError(f"{path}: not an export directory (run `distill export` first)")
    check_parquet_files(p)
    try:
        ds = _load(p)
    except DatasetGenerationError as e:  # datasets wraps the reader's error; its own text names no file
        raise StageError(f"{path}: cannot read the export: {type(e.__cause__ or e).__name__}: "
                         f"{_first_line(e.__cause__ or e)}") from None  # fmt: skip
    missing = {"images", "messages"} - set(ds.column_names)
    if missing:
        raise ValueError(f"{path}: not a vision-language conversational dataset (missing columns {sorted(missing)})")
    if len(ds) == 0:
        raise StageError(f"{path}: the export has no rows: nothing to train on (see its summary.json)")
    return ds


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [""])[0]


def check_parquet_files(folder: Path) -> None:
    """StageError naming the file unless every parquet file under `folder` has a readable footer (read, not the data):
    an empty or cut file (an interrupted copy) otherwise surfaces as datasets' DatasetGenerationError traceback."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for f in sorted(folder.rglob("*.parquet")):
        if any(part.startswith(".") for part in f.relative_to(folder).parts):  # a killed export's temp files
            continue
        if f.stat().st_size == 0:
            raise StageError(f"{f}: empty file (0 bytes): an interrupted copy or export; run `distill export` again")
        try:
            with pq.ParquetFile(f) as pf:
                rows = pf.metadata.num_rows
        except (pa.ArrowException, OSError) as e:
            raise StageError(
                f"{f}: not a readable parquet file ({_first_line(e)}); run `distill export` again"
            ) from None
        if rows == 0:  # datasets' parquet reader fails on it ("BatchSize must be greater than 0")
            raise StageError(f"{f}: a parquet file without rows; remove it, or run `distill export` again")


def _load(p: Path):
    from datasets import DatasetDict, load_dataset, load_from_disk

    ds = None
    for cand in (p, p / "dataset"):  # the export dir itself, or the folder above it (`dataset/` inside)
        if (cand / "state.json").is_file() or (cand / "dataset_dict.json").is_file():  # save_to_disk (older exports)
            ds = load_from_disk(str(cand))
            break
        if (cand / "README.md").is_file() and any(cand.glob("data/*.parquet")):
            ds = load_dataset(str(cand), split="train")
            break
    if ds is None:  # any other folder datasets can read (parquet/jsonl files)
        ds = load_dataset(str(p), split="train")
    return ds["train"] if isinstance(ds, DatasetDict) else ds


def tokenize_row(processor, row: dict, chat_template: str | None = None, add_generation_prompt: bool = False) -> dict:
    """The row tokenized as TRL's vision collator does it (no padding, no truncation): input_ids etc. for one row.
    The tokenization `distill reason` asks the student with (`distill.chat_format.tokenize_messages`)."""
    from distill.chat_format import tokenize_messages

    return tokenize_messages(processor, row["messages"], row["images"], chat_template, add_generation_prompt,
                             videos=row.get("videos"))  # fmt: skip


def preflight(
    dataset, processor, max_length: int | None, chat_template: str | None = None, num_proc: int | None = None
):
    """(dataset without over-long rows, their token lengths, report). Never truncates."""
    from datasets import Dataset

    def length(row):
        return {"_length": len(tokenize_row(processor, row, chat_template)["input_ids"][0])}

    # Only the length column, in memory: a plain map would write a full copy of the dataset (images included) as a
    # cache file into the export's directory, another stage's output.
    lengths = dataset.map(length, num_proc=num_proc, remove_columns=dataset.column_names, keep_in_memory=True,
                          desc="pre-flight (tokenize with the student's processor)")["_length"]  # fmt: skip
    keep = [i for i, n in enumerate(lengths) if max_length is None or n <= max_length]
    kept_set = set(keep)
    dropped = [{"row": i, "id": dataset[i].get("id"), "tokens": n} for i, n in enumerate(lengths) if i not in kept_set]
    for d in dropped[:20]:
        log.warning("pre-flight: dropping row %d (id %s): %d tokens > max_length %d", d["row"], d["id"], d["tokens"],
                    max_length)  # fmt: skip
    kept: Dataset = dataset.select(keep, keep_in_memory=True) if len(keep) < len(dataset) else dataset
    kept_lengths = [lengths[i] for i in keep]
    has_videos = "videos" in dataset.column_names  # exports before video support have no such column
    visual = ["images", "videos"] if has_videos else ["images"]
    report = {"rows_in": len(dataset), "rows_kept": len(keep), "dropped_over_max_length": len(dropped),
              "dropped": dropped[:100], "max_length": max_length,
              "tokens": sum(kept_lengths), "max_tokens": max(kept_lengths, default=0),
              "text_only_rows": sum(1 for r in dataset.select_columns(visual) if not any(r.values())),
              "video_rows": sum(1 for r in dataset.select_columns(["videos"]) if r["videos"]) if has_videos else 0}  # fmt: skip
    log.info("pre-flight: %d rows, %d kept, %d dropped over max_length=%s, %d tokens", report["rows_in"],
             report["rows_kept"], report["dropped_over_max_length"], max_length, report["tokens"])  # fmt: skip
    return kept, kept_lengths, report

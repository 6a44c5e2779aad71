"""The Hub side of `distill export`: the SFT dataset card, and trace datasets (`--format traces`) in the same layout.

    distill export --input runs/demo/filter/kept.jsonl --output runs/demo/export/dataset --image_root data/demo
    distill export --format traces --input runs/demo/filter/kept.jsonl \
        --extra_inputs runs/demo/filter/rejected.jsonl runs/demo/generate/traces.jsonl \
        --output runs/demo/traces_dataset --image_root data/demo [--push_to_hub me/demo-traces]

Trace datasets: one config per input file, named by its stem (`kept`, `rejected`, `traces`), each a `train` split in
`<config>/train-*.parquet`; every field of the rows is kept as is (nested objects become parquet structs) plus
`images`, the query's images embedded as bytes (their relative path kept), so the published traces are
self-contained. `load_dataset(dir, "rejected")` picks one; the first is the default.
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from pathlib import Path

from distill.hub import ConfigShards, dataset_card, md_table, write_parquet_shards

log = logging.getLogger(__name__)

TAGS = ["distill", "think-then-embed", "reasoning", "synthetic", "distillation"]
USAGE = """```python
from datasets import load_dataset
ds = load_dataset("{ref}", split="train")
```
"""


def _pct(x) -> str:
    return f"{x:.1%}" if isinstance(x, (int, float)) else "-"


def _lineage_lines(manifest: dict) -> list[str]:
    """'How it was made' from an export manifest: teacher, prompts, filter keep rates, counts; no local paths."""
    t = manifest.get("teacher") or {}
    lines = ["## How it was made", "",
             f"Teacher traces (`distill generate`) scored (`distill score`), filtered (`distill filter`) and exported "
             f"(`distill export`): {manifest.get('rows_in')} kept traces in (`{Path(str(manifest.get('input'))).name}`,"
             f" sha256 `{manifest.get('input_sha256')}`), {manifest.get('rows_out')} rows out. Images resized to "
             f"{(manifest.get('pixels') or {}).get('min')}..{(manifest.get('pixels') or {}).get('max')} pixels.", "",
             "### Teacher", ""]  # fmt: skip
    lines += md_table(("model", "rows"), sorted((t.get("models") or {}).items()))
    lines += ["", f"Modes: {', '.join(f'{k} ({v})' for k, v in (t.get('modes') or {}).items())}", "",
              "### Prompt templates (id@version, sha256 of the rendered template)", ""]  # fmt: skip
    lines += md_table(("template", "sha256", "rows"),
                      [(pid, f"`{sha}`", n) for pid, shas in sorted((t.get("prompts") or {}).items())
                       for sha, n in shas.items()])  # fmt: skip
    f = manifest.get("filter_summary")
    lines += ["", "### Filter", ""]
    if f:
        lines += [f"{f.get('rows_in')} scored traces, {f.get('kept')} kept ({_pct(f.get('keep_rate'))}). "
                  "Share of all rows each check let through:", ""]  # fmt: skip
        lines += md_table(("check", "rejected", "keep rate"),
                          [(c, v.get("rejected"), _pct(v.get("keep_rate")))
                           for c, v in (f.get("keep_rate_by_check") or {}).items()])  # fmt: skip
    else:
        lines += ["No filter summary was found next to the export input."]
    for title, key, by in (("task", "tasks", "by_task"), ("dataset", "datasets", "by_dataset")):
        lines += ["", f"### Rows by {title}", ""]
        kept = (f or {}).get(by) or {}
        lines += md_table((title, "rows", "filter keep rate"),
                          [(k, n, _pct((kept.get(str(k)) or {}).get("keep_rate")))
                           for k, n in sorted((manifest.get(key) or {}).items(), key=str)])  # fmt: skip
    return lines


def sft_card(manifest: dict, shards: ConfigShards, license: str | None, pretty_name: str | None, ref: str):
    """The SFT export's dataset card (`huggingface_hub.DatasetCard`)."""
    title = pretty_name or "distill SFT export"
    body = [f"# {title}", "",
            "Supervised finetuning rows for a small multimodal reasoner, distilled from a teacher MLLM's "
            "embedding-centric reasoning traces (Think-Then-Embed, arXiv 2510.05014) with `distill`.", "",
            "Each row is in TRL's conversational vision-language format: `images` (the query images, embedded), "
            "`messages` (user: instruction + query text; assistant: `<think>…</think>` + the final part), plus `id`, "
            "`task`, `dataset`, `sample_index`.", "", *_trl_lines(manifest), "", "## Use", "", USAGE.format(ref=ref),
            *_lineage_lines(manifest)]  # fmt: skip
    return dataset_card([shards], "\n".join(body), TAGS + ["sft", "trl"], license, title)


def _trl_lines(manifest: dict) -> list[str]:
    """What stock TRL does with these rows: all of them as is, unless some carry a video (TRL reads no `videos`)."""
    n, total = manifest.get("video_rows") or 0, manifest.get("rows_out")
    if not n:
        return ["Stock `trl sft --dataset_name <this dataset>` and `SFTTrainer` train on it as is."]
    return [f"**Video rows ({n} of {total}).** Their `videos` column holds each video's sampled frames. Stock "
            "`trl sft` and `SFTTrainer` (TRL 1.16) do not read `videos`: they drop the column and train those rows "
            "as text only, without a warning. `distill train` trains them as videos (its collator passes the frames "
            "to the processor as one video). With stock TRL, train the other rows only: "
            "`ds.filter(lambda r: not r[\"videos\"])`; the image and text rows train as is."]  # fmt: skip


def _config_name(path: str) -> str:
    name = re.sub(r"[^\w]+", "_", Path(path).name.split(".")[0]).strip("_") or "traces"
    return name


def _embedded(row: dict, image_root: str) -> dict:
    from distill.images import image_bytes

    images = [
        {"bytes": image_bytes(image_root, rel), "path": rel} for rel in (row.get("query") or {}).get("images") or []
    ]
    return {**row, "images": images}


def _table(rows: list[dict]):
    """A `datasets.Dataset` of trace rows; nested fields whose types differ between rows are stored as JSON text."""
    import orjson
    import pyarrow as pa
    from datasets import Dataset, Image, List

    def build(rs):
        ds = Dataset.from_list(rs)
        return ds.cast_column("images", List(Image())) if "images" in ds.column_names else ds

    try:
        return build(rows), []
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as e:
        nested = sorted({k for r in rows for k, v in r.items() if k != "images" and isinstance(v, (dict, list))})
        log.warning("trace rows have fields with mixed types (%s): storing %s as JSON text", e, nested)
        enc = [{k: orjson.dumps(v).decode() if k in nested else v for k, v in r.items()} for r in rows]
        return build(enc), nested


def export_traces(config) -> dict:
    """Write trace JSONL files (config.input + config.extra_inputs) as a multi-config Hub dataset with a card."""
    from distill.io import BadRow, iter_jsonl, write_text_atomic
    from distill.stage import reason_class
    from distill.stage import summary as stage_summary

    t0 = time.time()
    out = Path(config.output)
    out.mkdir(parents=True, exist_ok=True)
    shards, per_input, problems = [], {}, []
    for path in [config.input, *config.extra_inputs]:
        name = _config_name(path)
        if name in per_input:
            raise ValueError(f"{path}: a second input named {name!r} (config names come from file names)")
        rows = []
        for line, row in iter_jsonl(path):
            if isinstance(row, BadRow):
                problems.append({"file": Path(path).name, "line": line, "reason": row.reason})
                if config.strict:
                    raise ValueError(f"{path}:{line}: {row.reason}")
                continue
            try:
                rows.append(_embedded(row, config.image_root) if config.embed_images else row)
            except (OSError, ValueError) as e:
                raise ValueError(f"{path}:{line}: image {e}") from None
        if not rows:
            raise ValueError(f"{path}: no rows")
        ds, as_json = _table(rows)
        shards.append(write_parquet_shards(ds, out, data_dir=name, config_name=name))
        per_input[name] = {"rows": len(rows), "statuses": dict(Counter(str(r.get("status")) for r in rows)),
                           "json_text_fields": as_json}  # fmt: skip
    title = config.pretty_name or "distill teacher traces"
    ref = config.push_to_hub or "path/to/this/folder"
    body = [
        f"# {title}",
        "",
        "Embedding-centric reasoning traces written by a teacher MLLM (Think-Then-Embed, arXiv 2510.05014) with "
        "`distill generate`, as scored and filtered by `distill score` / `distill filter`. One config per file:",
        "",
    ]
    body += md_table(
        ("config", "rows", "status"),
        [(k, v["rows"], ", ".join(f"{s} {n}" for s, n in v["statuses"].items())) for k, v in per_input.items()],
    )
    body += ["", "Fields: the example (`id`, `task`, `dataset`, `query`, `positive`, `negatives`, `answer`), "
             "`sample_index`, `trace {raw, think, final}`, `teacher {model, prompt_id, prompt_sha, mode, sampling}`, "
             "`usage`, `status`, `error`, and after scoring `scores`, after filtering `rejected_by`; `images` holds "
             "the query images.", "", "## Use", "",
             USAGE.format(ref=ref).replace('split="train"', f'"{shards[0].config_name}", split="train"')]  # fmt: skip
    card = dataset_card(shards, "\n".join(body), TAGS + ["traces"], config.license, title,
                        ("image-text-to-text", "text-generation"))  # fmt: skip
    write_text_atomic(out / "README.md", str(card))
    n = sum(v["rows"] for v in per_input.values())
    return stage_summary("export", n + len(problems), n, time.time() - t0, problems=problems,
                         dropped=Counter(reason_class(p["reason"]) for p in problems), quarantined=len(problems),
                         configs=per_input)  # fmt: skip

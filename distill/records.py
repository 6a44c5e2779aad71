"""The row schema every stage reads and writes (JSONL, one object per line). Stages only ever add fields.

example (what `validate` checks and `generate` reads)
    id           str, unique within a dataset (MMEB rows get a content-hash id: see `distill.data.mmeb`)
    task         one of TASKS
    dataset      source dataset / MMEB subset name, e.g. "OK-VQA"
    query        {"text": str, "images": [relative image path, ...], optional "video": relative path of a frame
                 folder or a video file (sampled to 8 frames, distill.video)}; the text may hold MMEB's <|image_N|>
                 markers where a multi-image query interleaves its images with the text
    instruction  str, the task instruction ("Represent the given image with the following question:")
    positive     {"text": str, "images": [...]}: the target the embedder must retrieve
    negatives    [{"text": str, "images": [...]}, ...]   (may be empty)
    answer       str | None: the gold answer/label for vqa and classification, else None
    target_instruction  str, optional: the target side's instruction (MMEB eval `tgt_inst`), absent or "" if none
    Image paths are relative to an `image_root` and may never escape it.

trace = example + (written by `generate`, and by `reason` for the student)
    sample_index int, 0..num_samples-1
    side         query | target: the side the trace is about (`trace_side` reads it; target = the positive)
    trace        {"raw": str, "think": str, "final": str}
    teacher      {"model", "prompt_id" (id@vN), "prompt_version", "prompt_sha" (sha256 of the template: the same for
                 every row of one template), "request_sha" (sha256 of this rendered request), "mode" (blind | hinted),
                 "sampling": {...}}; on `reason` rows the student: "role": "student", "backend", "model" (its name),
                 "checkpoint" / "base_model" / "fingerprint" (hf), "prompt_id": "student_chat_format:<side>"
    usage        {"prompt_tokens": int, "completion_tokens": int}
    status       ok | truncated | failed;  error: str when status != ok

scored = trace + {"scores": {scorer name: float | None | small dict}}          (written by `score`)
rejected = scored + {"rejected_by": [reason, ...]}                               (written by `filter`)

The checks below are the only ones: `validate` and `load_examples` (hence `generate`) apply `example_problems`,
`score` and `export` apply `trace_problems`, `filter` applies `scored_problems` (`ROW_CHECKS`), so a bad row is
reported by line the same way in every stage and never crashes one. docs/rows.md documents the same schema.
"""

from __future__ import annotations

TASKS = ("vqa", "classification", "retrieval", "grounding", "video", "visdoc")
TASKS_WITH_ANSWER = ("vqa", "classification")
TRACE_STATUSES = ("ok", "truncated", "failed")
# The side of an example a trace is about, and the example field that holds it. "query": the reasoner reads the query
# (TTE's query-side reasoning); "target": it describes the positive (index-side reasoning, e.g. a document page).
SIDES = ("query", "target")
SIDE_FIELDS = {"query": "query", "target": "positive"}
_LEGACY_TARGET_PROMPTS = ("ecr-retrieval-target@",)  # rows written before `side` was recorded


def trace_side(row: dict) -> str:
    """The side a trace row is about: its `side`; for rows written before sides were recorded, `target` when the
    teacher prompt was the retrieval-target template, else `query`. ValueError on an unknown side."""
    value = row.get("side")
    if value is None:
        prompt = str((row.get("teacher") or {}).get("prompt_id") or "")
        return "target" if prompt.startswith(_LEGACY_TARGET_PROMPTS) else "query"
    if value not in SIDES:
        raise ValueError(f"unknown side {value!r} (expected one of {', '.join(SIDES)})")
    return value


def side_subject(row: dict, side_name: str) -> dict:
    """The {text, images} the given side is about: the query, or the positive for the target side."""
    return row[SIDE_FIELDS[side_name]]


def side_instruction(row: dict, side_name: str) -> str:
    """The instruction of a side: the task instruction for the query, `target_instruction` (tgt_inst) for the
    target (empty when the data has none: MMEB-train gives no target instruction)."""
    key = "instruction" if side_name == "query" else "target_instruction"
    return (row.get(key) or "").strip()


def side(text: str = "", images: list[str] | None = None, video: str | None = None) -> dict:
    """One side of a pair (query, positive or a negative): text, relative image paths, optionally a video."""
    out = {"text": text or "", "images": list(images or [])}
    if video:
        out["video"] = video
    return out


def make_example(
    id: str,
    task: str,
    dataset: str,
    query: dict,
    instruction: str,
    positive: dict,
    negatives: list[dict] | None = None,
    answer: str | None = None,
    target_instruction: str | None = None,
) -> dict:
    """Build an example row in the documented key order (`target_instruction` only when there is one)."""
    row = {
        "id": id,
        "task": task,
        "dataset": dataset,
        "query": query,
        "instruction": instruction,
        "positive": positive,
        "negatives": list(negatives or []),
        "answer": answer,
    }
    if target_instruction:
        row["target_instruction"] = target_instruction
    return row


def _side_problem(name: str, value) -> str | None:
    if not isinstance(value, dict):
        return f"field '{name}' must be an object with 'text' and 'images'"
    if not isinstance(value.get("text", ""), str):
        return f"field '{name}.text' must be a string"
    images = value.get("images", [])
    if not isinstance(images, list) or not all(isinstance(p, str) and p for p in images):
        return f"field '{name}.images' must be a list of non-empty path strings"
    video = value.get("video")
    if video is not None and not (isinstance(video, str) and video):
        return f"field '{name}.video' must be a non-empty path string"
    if not value.get("text") and not images and not video:
        return f"field '{name}' has neither text nor images nor a video"
    return None


def example_problems(row: dict) -> list[str]:
    """Schema problems of an example row, as human-readable reasons (empty list = well formed)."""
    if not isinstance(row, dict):
        return ["row is not a JSON object"]
    problems = []
    for key in ("id", "task", "dataset", "query", "positive"):
        if key not in row or row[key] in (None, ""):
            problems.append(f"missing field '{key}'")
    if problems:
        return problems
    if not isinstance(row["id"], str):
        problems.append("field 'id' must be a string")
    for key in ("dataset", "instruction"):
        if key in row and not isinstance(row[key], str):
            problems.append(f"field {key!r} must be a string")
    if row.get("answer") is not None and not isinstance(row["answer"], str):
        problems.append("field 'answer' must be a string or null")
    if not isinstance(row["task"], str) or row["task"] not in TASKS:
        problems.append(f"unknown task {row['task']!r} (expected one of {', '.join(TASKS)})")
    for name in ("query", "positive"):
        if (p := _side_problem(name, row[name])) is not None:
            problems.append(p)
    negatives = row.get("negatives", [])
    if not isinstance(negatives, list):
        problems.append("field 'negatives' must be a list")
    else:
        problems += [p for i, n in enumerate(negatives) if (p := _side_problem(f"negatives[{i}]", n)) is not None]
    if row["task"] in TASKS_WITH_ANSWER and not row.get("answer"):
        problems.append(f"task {row['task']!r} needs a gold 'answer'")
    return problems


def video_paths(row: dict) -> list[str]:
    """Every relative video path (frame folder or video file) an example references, in order, de-duplicated."""
    sides = [row["query"], row["positive"], *row.get("negatives", [])]
    return list(dict.fromkeys(s["video"] for s in sides if s.get("video")))


def trace_problems(row: dict) -> list[str]:
    """Schema problems of a trace row (an example plus what `generate` adds), as reasons (empty = well formed)."""
    problems = example_problems(row)
    if problems:
        return problems
    index = row.get("sample_index", 0)
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        problems.append("field 'sample_index' must be a non-negative integer")
    trace = row.get("trace")
    if not isinstance(trace, dict):
        problems.append("field 'trace' must be an object with raw, think and final")
    else:
        problems += [f"field 'trace.{k}' must be a string" for k in ("raw", "think", "final")
                     if not isinstance(trace.get(k, ""), str)]  # fmt: skip
    if row.get("status", "ok") not in TRACE_STATUSES:
        problems.append(f"field 'status' must be one of {', '.join(TRACE_STATUSES)}, got {row.get('status')!r}")
    for key in ("teacher", "usage"):
        if row.get(key) is not None and not isinstance(row[key], dict):
            problems.append(f"field {key!r} must be an object")
    return problems


def scored_problems(row: dict) -> list[str]:
    """Schema problems of a scored row: a trace row with a `scores` object."""
    problems = trace_problems(row)
    if not problems and not isinstance(row.get("scores"), dict):
        problems.append("field 'scores' is missing or not an object (was the file written by `distill score`?)")
    return problems


ROW_CHECKS = {"example": example_problems, "trace": trace_problems, "scored": scored_problems}


def image_paths(row: dict) -> list[str]:
    """Every relative image path an example references (query, positive, negatives), in order, de-duplicated."""
    paths = list(row["query"]["images"]) + list(row["positive"]["images"])
    for neg in row.get("negatives", []):
        paths += neg["images"]
    return list(dict.fromkeys(paths))

"""MMEB readers: MMEB-train rows, MMEB eval rows and our own example rows, from .jsonl, .parquet or a saved HF dataset.

    from distill.data.mmeb import load_examples
    for line, item in load_examples("data/demo/train/ShapesVQA.jsonl"):  # subset taken from the file stem
        ...  # item is an example row (see distill.records) or a BadRow

MMEB-train rows: `qry` (text with an `<|image_1|>` placeholder), `qry_image_path`, `pos_text`, `pos_image_path`, optional
`neg_text`, `neg_image_path`. MMEB eval rows: `qry_inst`, `qry_text`, `qry_img_path`, `tgt_inst`, `tgt_text` (candidate
list, positive first), `tgt_img_path`. The subset name (MMEB dataset name) decides the task type via SUBSET_TASKS;
for vqa and classification the gold `answer` is the positive's text. Ids of MMEB rows are `<subset>-<content hash>`:
stable across reorderings and shards, and identical rows collide (reported as duplicates by `validate`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import orjson

from distill.io import BadRow, iter_table
from distill.records import example_problems, make_example, side

# MMEB dataset name -> task type. Train and eval spellings (ImageNet_1K / ImageNet-1K) both resolve: see `subset_task`.
SUBSET_TASKS: dict[str, str] = {
    # image classification
    **dict.fromkeys(
        ["ImageNet-1K", "N24News", "HatefulMemes", "VOC2007", "SUN397", "Place365", "ImageNet-A", "ImageNet-R",
         "ObjectNet", "Country211"], "classification"),
    # image VQA
    **dict.fromkeys(
        ["OK-VQA", "A-OKVQA", "DocVQA", "InfographicsVQA", "ChartQA", "Visual7W", "ScienceQA", "VizWiz", "GQA",
         "TextVQA"], "vqa"),
    # image retrieval
    **dict.fromkeys(
        ["VisDial", "CIRR", "VisualNews_t2i", "VisualNews_i2t", "MSCOCO_t2i", "MSCOCO_i2t", "NIGHTS", "WebQA",
         "FashionIQ", "Wiki-SS-NQ", "OVEN", "EDIS"], "retrieval"),
    # visual grounding
    **dict.fromkeys(["MSCOCO", "RefCOCO", "RefCOCO-Matching", "Visual7W-Pointing"], "grounding"),
    # video: classification, QA, retrieval, moment retrieval (MMEB-V2)
    **dict.fromkeys(
        ["K700", "SmthSmthV2", "HMDB51", "UCF101", "Breakfast", "MVBench", "Video-MME", "NExTQA", "EgoSchema",
         "ActivityNetQA", "DiDeMo", "MSR-VTT", "MSVD", "VATEX", "YouCook2", "QVHighlight", "Charades-STA",
         "MomentSeeker"], "video"),
    # visual documents (MMEB-V2)
    **dict.fromkeys(
        ["ViDoRe_arxivqa", "ViDoRe_docvqa", "ViDoRe_infovqa", "ViDoRe_tabfquad", "ViDoRe_tatdqa",
         "ViDoRe_shiftproject", "ViDoRe_syntheticDocQA_artificial_intelligence", "ViDoRe_syntheticDocQA_energy",
         "ViDoRe_syntheticDocQA_government_reports", "ViDoRe_syntheticDocQA_healthcare_industry",
         "ViDoRe_esg_reports_human_labeled_v2", "ViDoRe_biomedical_lectures_v2", "ViDoRe_economics_reports_v2",
         "ViDoRe_esg_reports_v2", "VisRAG_ArxivQA", "VisRAG_ChartQA", "VisRAG_MP-DocVQA", "VisRAG_SlideVQA",
         "VisRAG_InfoVQA", "VisRAG_PlotQA", "ViDoSeek-page", "ViDoSeek-doc", "MMLongBench-page", "MMLongBench-doc"],
        "visdoc"),
    # the bundled demo subsets (data/demo/make_demo.py): synthetic shapes, one per task type, and tiny videos
    **dict.fromkeys(["DemoVideoCLS", "DemoVideoQA", "DemoVideoRet", "DemoVideoMoment"], "video"),
    "ShapesVQA": "vqa", "ShapesCLS": "classification", "ShapesT2I": "retrieval", "ShapesI2T": "retrieval",
    "ShapesGround": "grounding",
}  # fmt: skip

IMAGE_PLACEHOLDER = re.compile(r"<\|image_(\d+)\|>")


def interleave(text: str, n_images: int) -> list[tuple[str, str | int]]:
    """The order of a side's images and text: [("image", index) | ("text", piece)], for teacher and student alike.

    Images the text places with `<|image_N|>` markers (1-based) appear there; all others come first, before the
    text (the Qwen-VL convention, and what TRL does). Without markers: every image, then the whole text unchanged.
    Markers naming no image, or an image already placed, are dropped.
    """
    placed: dict[int, tuple[int, int]] = {}
    for m in IMAGE_PLACEHOLDER.finditer(text):
        i = int(m.group(1)) - 1
        if 0 <= i < n_images and i not in placed:
            placed[i] = m.span()
    if not placed:
        text = IMAGE_PLACEHOLDER.sub("", text).strip() if IMAGE_PLACEHOLDER.search(text) else text
        return [*(("image", i) for i in range(n_images)), *([("text", text)] if text else [])]
    parts: list[tuple[str, str | int]] = [("image", i) for i in range(n_images) if i not in placed]
    pos = 0
    for i, (start, end) in sorted(placed.items(), key=lambda kv: kv[1]):
        if piece := IMAGE_PLACEHOLDER.sub("", text[pos:start]).strip():
            parts.append(("text", piece))
        parts.append(("image", i))
        pos = end
    if piece := IMAGE_PLACEHOLDER.sub("", text[pos:]).strip():
        parts.append(("text", piece))
    return parts


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


_NORMALISED = {_norm(k): v for k, v in SUBSET_TASKS.items()}


def subset_task(subset: str) -> str:
    """Task type of an MMEB subset name (case, '-' and '_' ignored); ValueError naming the known subsets otherwise."""
    task = _NORMALISED.get(_norm(subset))
    if task is None:  # VLM2Vec-V2's spelling or a Hub repo's name (Kinetics-700, arxivqa_test_subsampled_beir)
        from distill.data.mmeb_v2 import hub_subset

        task = _NORMALISED.get(_norm(hub_subset(subset) or ""))
    if task is None:
        raise ValueError(f"unknown MMEB subset {subset!r}; known: {', '.join(sorted(SUBSET_TASKS))}")
    return task


def _strip_placeholder(text: str | None) -> str:
    return IMAGE_PLACEHOLDER.sub("", text or "").strip()


def _split_instruction(qry: str) -> tuple[str, str]:
    """MMEB-train merges instruction and text: 'Represent the given image with the following question: What ...'.

    The instruction is everything up to and including the first ':' on the first line; without a ':' the whole string
    is the instruction (e.g. 'Represent the given image for classification').
    """
    first_line = qry.split("\n", 1)[0]
    if ":" in first_line:
        inst, rest = qry.split(":", 1)
        return inst.strip() + ":", rest.strip()
    return qry.strip(), ""


def _images(value) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, list):
        return [v for v in value if v]
    return [value]


def _row_id(subset: str, row: dict) -> str:
    return f"{subset}-{hashlib.sha1(orjson.dumps(row, option=orjson.OPT_SORT_KEYS)).hexdigest()[:12]}"


def from_train_row(row: dict, subset: str, task: str) -> dict:
    """An MMEB-train row as an example. KeyError names a missing required field."""
    for key in ("qry", "pos_text"):
        if key not in row or row[key] is None:
            raise KeyError(key)
    qry_images = _images(row.get("qry_image_path"))
    # a multi-image query keeps its <|image_N|> markers: they say where each image sits in the text (interleave)
    qry = row["qry"] if len(qry_images) > 1 else _strip_placeholder(row["qry"])
    instruction, text = _split_instruction(qry)
    positive = side(_strip_placeholder(row["pos_text"]), _images(row.get("pos_image_path")))
    negatives = []
    if row.get("neg_text") or row.get("neg_image_path"):
        negatives.append(side(_strip_placeholder(row.get("neg_text")), _images(row.get("neg_image_path"))))
    answer = positive["text"] if task in ("vqa", "classification") else None
    query = side(text, qry_images)
    return make_example(_row_id(subset, row), task, subset, query, instruction, positive, negatives, answer)


def from_eval_row(row: dict, subset: str, task: str) -> dict:
    """An MMEB eval row (candidates in `tgt_text`/`tgt_img_path`, positive first) as an example."""
    for key in ("qry_text", "tgt_text"):
        if key not in row or row[key] is None:
            raise KeyError(key)
    texts = row["tgt_text"] if isinstance(row["tgt_text"], list) else [row["tgt_text"]]
    imgs = row.get("tgt_img_path") or [""] * len(texts)
    imgs = imgs if isinstance(imgs, list) else [imgs]
    if not texts or len(imgs) != len(texts):
        raise ValueError(f"tgt_text has {len(texts)} candidates but tgt_img_path has {len(imgs)}")
    cands = [side(_strip_placeholder(t), _images(p)) for t, p in zip(texts, imgs, strict=True)]
    answer = cands[0]["text"] if task in ("vqa", "classification") else None
    query = side(_strip_placeholder(row["qry_text"]), _images(row.get("qry_img_path")))
    instruction = _strip_placeholder(row.get("qry_inst"))
    target_instruction = _strip_placeholder(row.get("tgt_inst"))  # embedding_gain / target-side traces use it
    return make_example(_row_id(subset, row), task, subset, query, instruction, cands[0], cands[1:], answer,
                        target_instruction)  # fmt: skip


def row_format(row: dict) -> str:
    """'ours', 'mmeb_train' or 'mmeb_eval', by the fields present."""
    if "query" in row and "task" in row:
        return "ours"
    if "qry_inst" in row or isinstance(row.get("tgt_text"), list):
        return "mmeb_eval"
    return "mmeb_train"


def convert_row(row: dict, subset: str | None, image_root: str | Path = ".") -> dict:
    """Any supported row as an example; raises KeyError/ValueError with the reason."""
    fmt = row_format(row)
    if fmt == "ours":
        return row
    if subset is None:
        raise ValueError("MMEB rows need a subset name (--subset, or the file name) to know the task type")
    task = subset_task(subset)
    if task == "video":
        from distill.data.mmeb_video import from_video_row

        return from_video_row(row, subset, image_root)
    return from_eval_row(row, subset, task) if fmt == "mmeb_eval" else from_train_row(row, subset, task)


def _examples(rows, subset: str | None, image_root) -> Iterator[tuple[int, dict | BadRow]]:
    """(line, example or BadRow) for (line, row or BadRow) pairs: the row checks every reader applies."""
    for line, row in rows:
        if isinstance(row, BadRow):
            yield line, BadRow(line, row.reason)
            continue
        try:
            example = convert_row(row, subset, image_root)
        except KeyError as e:
            yield line, BadRow(line, f"missing field {e.args[0]!r}", row.get("id"))
            continue
        except (ValueError, TypeError, AttributeError, IndexError) as e:
            yield line, BadRow(line, f"malformed row: {e}", row.get("id"))
            continue
        # the one schema check every stage applies (distill.records): a bad row is a BadRow here, not a crash later
        if reasons := example_problems(example):
            row_id = example.get("id") if isinstance(example.get("id"), str) else None
            yield line, BadRow(line, "; ".join(reasons), row_id)
            continue
        yield line, example


def load_examples(
    path: str | Path, subset: str | None = None, trace_side: str | None = None, image_root: str | Path = "."
) -> Iterator[tuple[int, dict | BadRow]]:
    """(1-based line, example or BadRow) for every row of `path`; never raises on a bad row.

    `subset` defaults to the file stem (or directory name) when that is a known MMEB subset; rows already in our
    schema need none. A BEIR-style visual-document directory (`distill.data.beir`) gives its query examples for
    `trace_side` "query", one example per page for "target", both for None (validate); its embedded page images are
    referenced relative to `image_root` (the stage's), where every stage opens them. A folder named after an MMEB-V2
    dataset (or its Hub repo) holding parquet shards as the Hub publishes them is read as that subset
    (`distill.data.mmeb_v2.hub_shards`). Any other directory holding `*.jsonl`/`*.parquet` files (not a saved
    dataset) is read file by file, each file's stem naming its subset; problems then name the file.
    With `trace_side="eval"`, video classification and retrieval rows get MMEB-V2's dataset-wide candidate pool
    (`distill.data.mmeb_video.with_pools`).
    """
    path = Path(path)
    from distill.data.beir import check_beir_parts, is_beir_dir, load_beir_examples
    from distill.data.inputs import dataset_files, hub_rows, is_published_folder
    from distill.data.mmeb_v2 import hub_shards, hub_subset

    check_beir_parts(path)
    if path.is_dir() and not (path / "dataset_info.json").exists():  # per-corpus subfolders: each one complete
        for sub in (d for d in path.iterdir() if d.is_dir()):
            check_beir_parts(sub)
    if is_beir_dir(path):  # a visual-document corpus: queries + page images + qrels (ViDoRe / VisRAG layout)
        yield from load_beir_examples(path, subset, trace_side, image_root)
        return
    saved = (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()
    shards = hub_shards(path) if is_published_folder(path, subset) else []
    if shards:
        subset = subset or hub_subset(path.name)
        items = _examples(hub_rows(shards, path), subset, image_root)
    elif path.is_dir() and not saved:
        for f in dataset_files(path):
            for line, item in load_examples(f, subset, trace_side, image_root):
                if isinstance(item, BadRow):
                    item.reason = f"{f.name}: {item.reason}"
                yield line, item
        return
    else:
        if subset is None and _norm(path.stem) in _NORMALISED:
            subset = path.stem
        items = _examples(iter_table(path), subset, image_root)
    if trace_side != "eval" or subset is None or subset_task(subset) != "video":
        yield from items
        return
    from distill.data.mmeb_video import label_list, with_pools

    items = list(items)  # one dataset: its pool is built once, from every row
    pooled = iter(with_pools([ex for _, ex in items if not isinstance(ex, BadRow)], subset, label_list(path)))
    yield from ((line, ex if isinstance(ex, BadRow) else next(pooled)) for line, ex in items)


def read_inputs(paths: list[str], subset: str | None, side: str, image_root: str,
                problems: list[str]) -> Iterator[tuple[str, int, dict]]:  # fmt: skip
    """(file, line, example) for every row `load_examples(..., side)` reads from `paths`; a path that does not
    exist, a folder without datasets, a file type it cannot read and each unreadable row go to `problems` instead,
    as `file[:line]: why`."""
    from distill.data.inputs import input_files

    for p in paths:
        if not Path(p).exists():
            problems.append(f"{p}: no such file or directory")
            continue
        files = input_files(Path(p), subset)
        if not files:
            problems.append(f"{p}: no .jsonl or .parquet files")
        for f in files:
            try:
                items = list(load_examples(f, subset, side, image_root))
            except ValueError as e:  # an unsupported file type, a subset that names no task
                problems.append(f"{f}: {e}")
                continue
            for line, item in items:
                if isinstance(item, BadRow):
                    problems.append(f"{f}:{line}: {item.reason}")
                else:
                    yield str(f), line, item

"""MMEB-V2 video rows (classification, QA, retrieval, moment retrieval) as example rows with a `video` side.

    distill validate --input data/demo/video --image_root data/demo     # a dir of <subset>.jsonl files

A video is a path relative to image_root: a folder of extracted frames (how MMEB-V2 ships its video tasks) or a video
file (decoded with PyAV); `distill.video` samples 8 frames uniformly from either. Row fields by kind (the subset name
decides the kind, `VIDEO_KINDS`); `video` may be spelled `qry_video_path`, `video_path` or `video`, or given as
`video_id`, which names the frame folder `<subset>/<video_id>` (MMEB-V2's `video-tasks/frames/<subset>/<id>` layout):
    classification  video, `pos_text` (the label; also `label`), optional `tgt_text` = the candidate labels, gold first
    qa              video, `question` (or `qry_text`), `options` + `answer` (or `tgt_text`, gold first)
    retrieval       `caption` (or `qry_text`): the text query; the target is the video; optional `tgt_video_path`
                    = candidate videos, positive first
    moment          video + `query` (or `qry_text`), `pos_video_path` = the matching clip (a frame folder or file),
                    optional `neg_video_path` / `tgt_video_path` = other clips of the same video
`qry_inst` overrides the kind's default instruction. For classification and QA the gold answer is the label / option.
"""

from __future__ import annotations

import hashlib
import re

import orjson

from distill.records import make_example, side

VIDEO_KINDS: dict[str, str] = {
    **dict.fromkeys(["K700", "SmthSmthV2", "HMDB51", "UCF101", "Breakfast"], "classification"),
    **dict.fromkeys(["MVBench", "Video-MME", "NExTQA", "EgoSchema", "ActivityNetQA"], "qa"),
    **dict.fromkeys(["DiDeMo", "MSR-VTT", "MSVD", "VATEX", "YouCook2"], "retrieval"),
    **dict.fromkeys(["QVHighlight", "Charades-STA", "MomentSeeker"], "moment"),
    # the bundled demo subsets (data/demo/make_demo.py)
    "DemoVideoCLS": "classification", "DemoVideoQA": "qa", "DemoVideoRet": "retrieval", "DemoVideoMoment": "moment",
}  # fmt: skip
INSTRUCTIONS = {  # MMEB-V2's task instructions, per kind
    "classification": "Recognize the category of the video content.",
    "qa": "Given a video and a question, select the most accurate answer from the provided candidates.",
    "retrieval": "Find a video that contains the following visual content:",
    "moment": "Given a video and a query, find the clip of the video that matches the query:",
}


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


_KINDS = {_norm(k): v for k, v in VIDEO_KINDS.items()}


def video_kind(subset: str) -> str:
    kind = _KINDS.get(_norm(subset))
    if kind is None:
        raise ValueError(f"no video task kind for subset {subset!r}; known: {', '.join(sorted(VIDEO_KINDS))}")
    return kind


def _video(row: dict, subset: str, required: bool = True) -> str | None:
    for key in ("qry_video_path", "video_path", "video"):
        if isinstance(row.get(key), str) and row[key]:
            return row[key]
    if row.get("video_id") not in (None, ""):
        return f"{subset}/{row['video_id']}"
    if required:
        raise KeyError("qry_video_path")
    return None


def _text(row: dict, *keys: str, required: bool = True) -> str:
    for key in keys:
        if isinstance(row.get(key), str) and row[key].strip():
            return row[key].strip()
    if required:
        raise KeyError(keys[0])
    return ""


def _list(value) -> list:
    if value is None or value == "":
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def from_video_row(row: dict, subset: str) -> dict:
    """An MMEB-V2 video row as an example; KeyError names a missing field, ValueError a malformed one."""
    kind = video_kind(subset)
    instruction = _text(row, "qry_inst", required=False) or INSTRUCTIONS[kind]
    answer, negatives = None, []
    if kind == "retrieval":
        query = side(_text(row, "caption", "qry_text", "query", "qry"))
        videos = _list(row.get("tgt_video_path")) or [_video(row, subset)]
        positive, negatives = side("", [], videos[0]), [side("", [], v) for v in videos[1:]]
    elif kind == "moment":
        query = side(_text(row, "query", "qry_text", "qry"), [], _video(row, subset))
        clips = _list(row.get("tgt_video_path")) or _list(row.get("pos_video_path"))
        if not clips:
            raise KeyError("pos_video_path")
        negatives = [side("", [], v) for v in clips[1:] + _list(row.get("neg_video_path"))]
        positive = side("", [], clips[0])
    else:
        text = _text(row, "question", "qry_text", "qry", required=kind == "qa")
        query = side(text, [], _video(row, subset))
        if kind == "qa" and row.get("options") is not None:
            options = [str(o) for o in _list(row["options"])]
            gold = _text(row, "answer", "pos_text")
            if gold not in options:  # an option letter ("B") names the option
                letters = {chr(65 + i): o for i, o in enumerate(options)}
                gold = letters.get(gold.strip("() ").upper()) or gold
            cands = [gold] + [o for o in options if o != gold]
        else:
            cands = [str(t) for t in _list(row.get("tgt_text"))] or [_text(row, "pos_text", "label", "answer")]
        answer = cands[0]
        positive, negatives = side(answer), [side(c) for c in cands[1:]]
    row_id = f"{subset}-{hashlib.sha1(orjson.dumps(row, option=orjson.OPT_SORT_KEYS)).hexdigest()[:12]}"
    return make_example(row_id, "video", subset, query, instruction, positive, negatives, answer)

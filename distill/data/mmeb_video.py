"""MMEB-V2 video rows (classification, QA, retrieval, moment retrieval) as example rows with a `video` side.

    distill validate --input /data/mmeb/HMDB51 --subset HMDB51 --image_root /data/mmeb   # VLM2Vec-V2's own rows
    distill validate --input data/demo/video --image_root data/demo                      # a dir of <subset>.jsonl

A video is a path relative to image_root: a folder of extracted frames or a video file (PyAV); `distill.video` samples
8 frames uniformly from either. Two row shapes:

- **As published** (the 18 MMEB-V2 datasets, with VLM2Vec-V2's field names, PUBLISHED below): the frames live where
  MMEB-V2 ships them, `video-tasks/frames/<group>/<dataset>/<video name>/` under image_root; the query text, options
  and candidate texts are built the way VLM2Vec-V2's evaluation builds them (video QA puts the lettered options in
  the query text, as MMEB-V2 does, so the teacher and the embedder both see them). Moment retrieval reads the clips of
  the query's video from disk (`<video name>/query` is the video, every other folder a clip, `positive*` the match).
- **Ours** (any subset; the demo): `video` may be `qry_video_path`, `video_path`, `video`, or `video_id` (the folder
  `<subset>/<video_id>`); classification `pos_text` (or `label`), optional `tgt_text` = candidate labels, gold first;
  QA `question` (or `qry_text`), `options` + `answer` (text or letter; or `tgt_text`, gold first); retrieval `caption`
  (or `qry_text`), optional `tgt_video_path` = candidate videos, positive first; moment video + `query`,
  `pos_video_path`, optional `neg_video_path` / `tgt_video_path`. `qry_inst` overrides the instruction.

Candidate pools (`load_examples(..., trace_side="eval")`, `with_pools`): MMEB-V2 ranks video classification against the
dataset's whole label set and video retrieval against the dataset's whole video pool (built once per dataset, shared by
every row); SmthSmthV2, QA and moment retrieval rank each row's own candidates. A label list beside the data
(`labels.txt` in its folder, or `<file stem>.labels.txt`) adds labels no row uses, as VLM2Vec-V2's full lists do.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import orjson

from distill.data.mmeb_v2 import norm
from distill.records import make_example, side

VIDEO_KINDS: dict[str, str] = {
    **dict.fromkeys(["K700", "SmthSmthV2", "HMDB51", "UCF101", "Breakfast"], "classification"),
    **dict.fromkeys(["MVBench", "Video-MME", "NExTQA", "EgoSchema", "ActivityNetQA"], "qa"),
    **dict.fromkeys(["DiDeMo", "MSR-VTT", "MSVD", "VATEX", "YouCook2"], "retrieval"),
    **dict.fromkeys(["QVHighlight", "Charades-STA", "MomentSeeker"], "moment"),
    # the bundled demo subsets (data/demo/make_demo.py)
    "DemoVideoCLS": "classification", "DemoVideoQA": "qa", "DemoVideoRet": "retrieval", "DemoVideoMoment": "moment",
}  # fmt: skip
QA_PROMPT = ("Given a video and a question, select the most accurate answer from the provided candidates. Return only "
             "the exact text of your chosen answer. Question:")  # fmt: skip
INSTRUCTIONS = {  # MMEB-V2's task instructions, per kind (datasets with their own: PUBLISHED)
    "classification": "Recognize the category of the video content.",
    "qa": QA_PROMPT,
    "retrieval": "Find a video that contains the following visual content:",
    "moment": "Find the clip that corresponds to the described scene in the given video:",
}
VIDEO_TARGET = "Understand the content of the provided video."  # VLM2Vec-V2's candidate instruction for videos
FRAMES = "video-tasks/frames"  # where MMEB-V2 ships extracted frames, under image_root
# dataset -> (frame folder under FRAMES, query instruction); VLM2Vec-V2's experiments/public/eval/video.yaml + parsers
PUBLISHED: dict[str, tuple[str, str]] = {
    "K700": ("video_cls/K700", "Recognize the category of the video content."),
    "SmthSmthV2": ("video_cls/SSv2", "What actions or object interactions are being performed by the person in the "
                                     "video?"),
    "HMDB51": ("video_cls/HMDB51", "What actions or objects interactions are the person in the video doing?"),
    "UCF101": ("video_cls/UCF101", "What activities or sports are being performed by the person in the video?"),
    "Breakfast": ("video_cls/Breakfast", "Recognize the breakfast type that the person is cooking in the video."),
    "MSR-VTT": ("video_ret/MSR-VTT", "Find a video that contains the following visual content:"),
    "MSVD": ("video_ret/MSVD", "Find the video snippet that corresponds to the given summary:"),
    "DiDeMo": ("video_ret/DiDeMo", "Find a video that includes the following described scenes:"),
    "YouCook2": ("video_ret/YouCook2", "Find a video that demonstrates the following action while making a recipe:"),
    "VATEX": ("video_ret/VATEX", "Select a video that fits the description provided:"),
    **{n: (f"video_qa/{n}", QA_PROMPT) for n in ("Video-MME", "NExTQA", "EgoSchema", "MVBench", "ActivityNetQA")},
    "QVHighlight": ("video_mret/QVHighlight", INSTRUCTIONS["moment"]),
    "Charades-STA": ("video_mret/Charades_STA", INSTRUCTIONS["moment"]),
    "MomentSeeker": ("video_mret/MomentSeeker", "Find the clip that corresponds to the given text:"),
}  # fmt: skip
GLOBAL_POOL = {"K700", "HMDB51", "UCF101", "Breakfast", "DiDeMo", "MSR-VTT", "MSVD", "VATEX", "YouCook2"}
_KINDS = {norm(k): v for k, v in VIDEO_KINDS.items()}
_NAMES = {norm(k): k for k in VIDEO_KINDS} | {"kinetics700": "K700"}


def video_kind(subset: str) -> str:
    kind = _KINDS.get(norm(subset)) or _KINDS.get(norm(_NAMES.get(norm(subset), "")))
    if kind is None:
        raise ValueError(f"no video task kind for subset {subset!r}; known: {', '.join(sorted(VIDEO_KINDS))}")
    return kind


def _name(subset: str) -> str:
    return _NAMES.get(norm(subset), subset)


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


def _lettered(question: str, options: list[str]) -> str:
    """VLM2Vec-V2's qa_template: the question, then 'Options:' and one '(A) option' line each."""
    return question + "\nOptions:\n" + "\n".join(f"({chr(65 + i)}) {o}" for i, o in enumerate(options))


def _published(row: dict, name: str, image_root) -> tuple | None:
    """(query side, candidate sides with the positive first, answer, target instruction) of a row in VLM2Vec-V2's
    shape for dataset `name`; None when the row is not in that shape (then the generic reader reads it)."""
    folder = f"{FRAMES}/{PUBLISHED[name][0]}"
    has = set(row).__contains__
    if name in ("K700", "HMDB51", "UCF101", "Breakfast") and has("video_id") and has("pos_text"):
        label = str(row["pos_text"])
        return side("", [], f"{folder}/{row['video_id']}"), [side(label)], label, ""
    if name == "SmthSmthV2" and has("video_id") and has("neg_text"):
        gold, cands = str(row["pos_text"]), [str(c) for c in _list(row["neg_text"])]
        cands = [gold] + [c for c in cands if c != gold]
        return side("", [], f"{folder}/{row['video_id']}"), [side(c) for c in cands], gold, ""
    ret = {"MSR-VTT": ("video_id", "caption"), "MSVD": ("video_id", "caption"), "DiDeMo": ("video", "caption"),
           "VATEX": ("videoID", "enCap"), "YouCook2": ("id", "sentence")}.get(name)  # fmt: skip
    if ret and has(ret[0]) and has(ret[1]) and not has("tgt_video_path"):
        vid = Path(str(row[ret[0]])).stem if name == "DiDeMo" else str(row[ret[0]])
        caption = _list(row[ret[1]])[0]  # MSVD and VATEX list captions: the first is the query
        return side(str(caption).strip()), [side("", [], f"{folder}/{vid}")], None, VIDEO_TARGET
    qa = {"NExTQA": "a0", "MVBench": "candidates", "EgoSchema": "video_idx", "Video-MME": "videoID",
          "ActivityNetQA": "video_name"}.get(name)  # fmt: skip
    if qa and has(qa) and has("question"):
        return _published_qa(row, name, folder)
    if name in ("QVHighlight", "Charades-STA") and has("video_path") and not has("pos_video_path"):
        return _moment_clips(row, f"{folder}/{Path(str(row['video_path'])).stem}", image_root)
    if name == "MomentSeeker" and has("positive_frames"):
        return _momentseeker(row, folder)
    return None


def _published_qa(row: dict, name: str, folder: str) -> tuple:
    """Query text with the options (as VLM2Vec-V2 writes it per dataset), the candidates MMEB ranks, gold first."""
    q = str(row["question"]).strip()
    if name == "NExTQA":
        options = [str(row[f"a{i}"]) for i in range(5)]
        text, cands, gold, vid = _lettered(q, options), options, options[int(row["answer"])], row["video"]
    elif name == "MVBench":
        options = [str(c) for c in row["candidates"]]
        text, vid = _lettered(q, options), f"{row['subset']}/{row['video']}"
        cands = [f"({chr(65 + i)}) {o}" for i, o in enumerate(options)]
        gold = cands[options.index(str(row["answer"]))]
    elif name in ("EgoSchema", "Video-MME"):
        options = [str(o) for o in _list(row["option" if name == "EgoSchema" else "options"])]
        # VLM2Vec-V2's parsers, verbatim: EgoSchema glues the options to the question with no separator.
        text = q + (" ".join(options) if name == "EgoSchema" else "\n" + "\n".join(options))
        cands = [o[o.find(". ") :].strip(". ") for o in options]  # 'A. text' -> 'text'
        index = int(row["answer"]) if name == "EgoSchema" else "ABCDE".index(str(row["answer"]).strip())
        gold, vid = cands[index], row["video_idx" if name == "EgoSchema" else "videoID"]
    else:  # ActivityNetQA: yes/no questions
        text, cands, gold, vid = (
            q + "? (A) yes; (B) no.",
            ["yes", "no"],
            str(row["answer"]).strip(),
            f"v_{row['video_name']}",
        )
    cands = [gold] + [c for c in cands if c != gold]
    return side(text, [], f"{folder}/{vid}"), [side(c) for c in cands], gold, ""


def _moment_clips(row: dict, video_dir: str, image_root) -> tuple:
    """QVHighlight / Charades-STA: `<video>/query` is the video, the other folders its clips (`positive*` matches)."""
    base = Path(image_root or ".") / video_dir
    if not base.is_dir():
        raise ValueError(f"frames folder {video_dir} not found under image_root (MMEB-V2's video-tasks/frames layout)")
    clips = sorted(p.name for p in base.iterdir() if p.is_dir() and p.name != "query")
    positives = [c for c in clips if c.startswith("positive")]
    if not positives:
        raise ValueError(f"no positive* clip folder in {video_dir}")
    ordered = [positives[0]] + [c for c in clips if c != positives[0]]
    query = side(str(row["query"]).strip(), [], f"{video_dir}/query")
    return query, [side("", [], f"{video_dir}/{c}") for c in ordered], None, VIDEO_TARGET


def _momentseeker(row: dict, folder: str) -> tuple:
    """MomentSeeker: a text, image or video query; candidate clips named by their output paths."""

    def clip(path: str) -> str:
        return f"{folder}/video_frames/{path.replace('/', '_').split('.mp4')[0]}"

    source = str(row.get("input_frames") or "")
    if source.endswith(".mp4"):
        query = side(str(row["query"]).strip(), [], clip(source))
    elif source.endswith(".jpg"):
        query = side(str(row["query"]).strip(), [f"{folder}/query_{source}"])
    else:
        query = side(str(row["query"]).strip())
    paths = [e["output_path"] for e in _list(row["positive_frames"]) + _list(row.get("negative_frames"))]
    return query, [side("", [], clip(p)) for p in paths], None, "Understand the content of the provided video clip."


def _video(row: dict, subset: str, required: bool = True) -> str | None:
    for key in ("qry_video_path", "video_path", "video"):
        if isinstance(row.get(key), str) and row[key]:
            return row[key]
    if row.get("video_id") not in (None, ""):
        return f"{subset}/{row['video_id']}"
    if required:
        raise KeyError("qry_video_path")
    return None


def _generic(row: dict, subset: str, kind: str) -> tuple:
    """Our own (and the demo's) video rows: explicit paths, candidates given in the row."""
    target = ""
    if kind == "retrieval":
        query = side(_text(row, "caption", "qry_text", "query", "qry"))
        cands = [side("", [], v) for v in _list(row.get("tgt_video_path")) or [_video(row, subset)]]
        return query, cands, None, VIDEO_TARGET
    if kind == "moment":
        query = side(_text(row, "query", "qry_text", "qry"), [], _video(row, subset))
        clips = _list(row.get("tgt_video_path")) or _list(row.get("pos_video_path"))
        if not clips:
            raise KeyError("pos_video_path")
        return query, [side("", [], v) for v in clips + _list(row.get("neg_video_path"))], None, VIDEO_TARGET
    text = _text(row, "question", "qry_text", "qry", required=kind == "qa")
    if kind == "qa" and row.get("options") is not None:
        options = [str(o) for o in _list(row["options"])]
        gold = _text(row, "answer", "pos_text")
        if gold not in options:  # an option letter ("B") names the option
            letters = {chr(65 + i): o for i, o in enumerate(options)}
            gold = letters.get(gold.strip("() ").upper()) or gold
        cands = [gold] + [o for o in options if o != gold]
        text = _lettered(text, options)  # MMEB-V2 shows the options in the query
    else:
        cands = [str(t) for t in _list(row.get("tgt_text"))] or [_text(row, "pos_text", "label", "answer")]
    return side(text, [], _video(row, subset)), [side(c) for c in cands], cands[0], target


def from_video_row(row: dict, subset: str, image_root=None) -> dict:
    """An MMEB-V2 video row as an example; KeyError names a missing field, ValueError a malformed one. `image_root`
    is read only for moment retrieval as published (the clips of a video are the folders beside its frames)."""
    kind, name = video_kind(subset), _name(subset)
    parsed = _published(row, name, image_root) if name in PUBLISHED else None
    query, cands, answer, target = parsed or _generic(row, subset, kind)
    default = PUBLISHED[name][1] if parsed else INSTRUCTIONS[kind]
    instruction = _text(row, "qry_inst", required=False) or default
    row_id = f"{subset}-{hashlib.sha1(orjson.dumps(row, option=orjson.OPT_SORT_KEYS)).hexdigest()[:12]}"
    return make_example(row_id, "video", subset, query, instruction, cands[0], cands[1:], answer, target)


def label_list(path: Path) -> list[str]:
    """Labels beside a data file (`<stem>.labels.txt`) or in its folder (`labels.txt`), one per line; [] if none."""
    for f in (path.with_name(f"{path.stem}.labels.txt"), path / "labels.txt", path.parent / "labels.txt"):
        if f.is_file():
            return [s for line in f.read_text(encoding="utf-8").splitlines() if (s := line.strip())]
    return []


def with_pools(examples: list[dict], subset: str, extra_labels: list[str] = ()) -> list[dict]:
    """Rows of one dataset with the candidates MMEB-V2 ranks them against: for video classification the dataset's
    whole label set (rows' labels, then `extra_labels`), for video retrieval every video of the dataset; the pool is
    built once and its sides shared by every row. Other kinds are returned as they are (their own candidates)."""
    if _name(subset) not in GLOBAL_POOL:
        return examples
    key = (lambda s: s["text"]) if video_kind(subset) == "classification" else (lambda s: s.get("video") or "")
    pool: dict[str, dict] = {}
    for ex in examples:
        for s in (ex["positive"], *ex["negatives"]):
            pool.setdefault(key(s), s)
    for label in extra_labels:
        pool.setdefault(label, side(label))
    out = []
    for ex in examples:
        mine = key(ex["positive"])
        out.append({**ex, "negatives": [s for k, s in pool.items() if k != mine]})
    return out


def natural_name(subset: str) -> str:
    """The MMEB-V2 spelling of a video subset name (Kinetics-700 -> K700); other names as given."""
    return _name(subset)

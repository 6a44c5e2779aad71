"""What an embedder reads for a row: the query, a candidate and a trace, as (text, visuals) items. One definition shared
by the `embedding_gain` scorer, `distill eval`'s retrieval and `distill embed`'s training pairs, so what an embedder is
trained on and what it is measured on can never drift apart.

    q = query_item(row, uses_images=True)                # ("\\nRepresent the given image ... What is it?\\n", ("a.jpg",))
    q_cond = with_trace(q, trace_for_embedding(row, "full"))
    pos = target_item(row, row["positive"], uses_images=True)   # a candidate of the row's dataset
    cands = candidate_items(row, uses_images=True)       # positive first, then the negatives, in order

An item is (text, visuals): image paths relative to the image root, then a video as one `video:<path>` entry (the VLM
embedder samples its frames); a text-only embedder gets items without visuals (`uses_images=False`). The embedder puts the visuals
first and the text after them, so for an MMEB-V2 dataset the text is VLM2Vec-V2's evaluation text for that dataset
(`src/data/eval_dataset/*.py`, Qwen2-VL backbone) with its leading `<|image_pad|>` / `<|video_pad|>` token removed:
`FORMATS` names each dataset's format, docs/eval.md tables them. Visual documents and videos get VLM2Vec's fixed
instructions ("Understand the content of the provided document image." on pages); `tgt_inst` is added only where
VLM2Vec adds it (image retrieval and grounding candidates, never to labels, answers or captions). Rows of datasets
outside the table (MMEB-train style rows of other sets, the demo sets) get the generic items: instruction + " " + text
for the query, target instruction + "\\n" + text for a candidate.
"""

from __future__ import annotations

import re

from distill.chat_format import assistant_text

Item = tuple[str, tuple[str, ...]]  # (text, relative image paths and `video:<path>` entries)
VIDEO = "video:"  # an item entry naming a video (frame folder or file): the VLM embedder sees its sampled frames
PARTS = ("full", "think", "final", "raw")

# VLM2Vec-V2's fixed instructions (the rows of these sets carry none of their own)
DOC_QUERY = "Find a document image that matches the given query:"
DOC_PAGE = "Understand the content of the provided document image."
VIDEO_TARGET = "Understand the content of the provided video."
CLIP_TARGET = "Understand the content of the provided video clip."  # MomentSeeker
VIDEO_QA = ("Given a video and a question, select the most accurate answer from the provided candidates. Return only "
            "the exact text of your chosen answer. Question: ")  # fmt: skip
VIDEO_QUERY = {  # text -> video retrieval and moment retrieval: the query instruction per dataset
    "MSR-VTT": "Find a video that contains the following visual content:",
    "DiDeMo": "Find a video that includes the following described scenes:",
    "MSVD": "Find the video snippet that corresponds to the given summary:",
    "VATEX": "Select a video that fits the description provided:",
    "YouCook2": "Find a video that demonstrates the following action while making a recipe:",
    "QVHighlight": "Find the clip that corresponds to the described scene in the given video:",
    "Charades-STA": "Find the clip that corresponds to the described scene in the given video:",
}
MOMENTSEEKER_QUERY = {  # by what the query carries besides its text
    "video": "Find the clip that corresponds to the given sentence and video segment:",
    "image": "Select the video clip that aligns with the given text and image:",
    "text": "Find the clip that corresponds to the given text:",
}
VIDEO_CLS = {  # the query is the instruction alone (with the video)
    "K700": "Recognize the category of the video content.",
    "SmthSmthV2": "What actions or object interactions are being performed by the person in the video?",
    "UCF101": "What activities or sports are being performed by the person in the video?",
    "HMDB51": "What actions or objects interactions are the person in the video doing?",
    "Breakfast": "Recognize the breakfast type that the person is cooking in the video. ",
}

_IMAGE_FORMATS = {
    "image_cls": ["ImageNet-1K", "N24News", "HatefulMemes", "VOC2007", "SUN397", "Place365", "ImageNet-A", "ImageNet-R",
                  "ObjectNet", "Country211"],
    "image_qa": ["OK-VQA", "A-OKVQA", "DocVQA", "InfographicsVQA", "ChartQA", "Visual7W", "ScienceQA", "VizWiz", "GQA",
                 "TextVQA"],
    "image_i2t": ["MSCOCO_i2t", "VisualNews_i2t"],
    "image_t2i": ["VisDial", "MSCOCO_t2i", "VisualNews_t2i", "WebQA", "EDIS", "Wiki-SS-NQ"],
    "image_i2i_vg": ["CIRR", "NIGHTS", "OVEN", "FashionIQ", "MSCOCO", "RefCOCO", "RefCOCO-Matching",
                     "Visual7W-Pointing"],
    "video_cls": list(VIDEO_CLS),
    "video_qa": ["Video-MME", "NExTQA", "EgoSchema", "MVBench", "ActivityNetQA"],
    "video_ret": ["MSR-VTT", "DiDeMo", "MSVD", "VATEX", "YouCook2"],
    "video_mret": ["QVHighlight", "Charades-STA"],
    "momentseeker": ["MomentSeeker"],
}  # fmt: skip
# MMEB-V2 dataset -> VLM2Vec-V2's eval parser family (the item format); every visdoc set is "visdoc" (by task).
FORMATS: dict[str, str] = {name: fmt for fmt, names in _IMAGE_FORMATS.items() for name in names}


def _norm(name) -> str:
    return re.sub(r"[^a-z0-9]", "", str(name or "").lower())


_BY_NORM = {_norm(k): k for k in FORMATS} | {_norm("Kinetics-700"): "K700"}
_CANON = {_norm(k): k for table in (VIDEO_QUERY, VIDEO_CLS) for k in table} | {_norm("Kinetics-700"): "K700"}


def item_format(row: dict) -> str | None:
    """The item format of a row's dataset (train and eval spellings alike), "visdoc" for visual documents, None for
    datasets outside MMEB-V2 (generic items)."""
    if row.get("task") == "visdoc":
        return "visdoc"
    name = _BY_NORM.get(_norm(row.get("dataset")))
    return FORMATS[name] if name else None


def visuals(side: dict) -> tuple[str, ...]:
    """A side's images, then its video as one `video:<path>` entry (the VLM embedder samples the frames)."""
    return tuple(side.get("images") or ()) + ((VIDEO + side["video"],) if side.get("video") else ())


def _seen(side: dict, uses_images: bool) -> tuple[str, ...]:
    return visuals(side) if uses_images else ()


def _after_token(instruction: str, text: str = "") -> str:
    """VLM2Vec's `process_input_text(instruction, text, add_*_token=True)` without the token: " {inst} {text}"."""
    return " " + instruction + (" " + text if text else "")


def _v1(text: str) -> str:
    """VLM2Vec's "to stay consistent with v1 eval" touch on image queries: " \\n" -> "\\n", then a final newline."""
    return text.replace(" \n", "\n") + "\n"


def _query_text(row: dict, fmt: str | None) -> str:
    query = row.get("query") or {}
    inst, text = (row.get("instruction") or "").strip(), (query.get("text") or "").strip()
    ds = _CANON.get(_norm(row.get("dataset")), row.get("dataset"))
    if fmt in ("image_cls", "image_i2t"):
        return _v1(_after_token(inst, text))
    if fmt in ("image_qa", "image_i2i_vg"):
        return _v1(_after_token("\n" + inst, text))
    if fmt == "image_t2i":
        return f"{inst} {text}\n" + ("\n" if ds == "VisDial" else "")
    if fmt == "visdoc":
        return f"{DOC_QUERY} {text}"
    if fmt == "video_ret":
        return f"{VIDEO_QUERY[ds]} {text}"
    if fmt == "video_mret":
        return _after_token(VIDEO_QUERY[ds], text)
    if fmt == "momentseeker":
        kind = "video" if query.get("video") else "image" if query.get("images") else "text"
        return (_after_token if kind != "text" else lambda i, t: f"{i} {t}")(MOMENTSEEKER_QUERY[kind], text)
    if fmt == "video_cls":
        return _after_token(VIDEO_CLS[ds])
    if fmt == "video_qa":
        return _after_token(VIDEO_QA, text)
    return " ".join(t for t in (inst, text) if t)


def query_item(row: dict, uses_images: bool) -> Item:
    """The query as the embedder reads it (see the module docstring)."""
    return _query_text(row, item_format(row)), _seen(row.get("query") or {}, uses_images)


def side_item(side, uses_images: bool, instruction: str = "") -> Item | None:
    """A candidate of a dataset outside the table: target instruction + "\\n" + text; None when it has neither text
    nor anything this embedder sees."""
    if not isinstance(side, dict):
        return None
    images = _seen(side, uses_images)
    text = (side.get("text") or "").strip()
    if not (text or images):
        return None
    return "\n".join(t for t in (instruction, text) if t), images


def candidate_items(row: dict, uses_images: bool, sides: list | None = None) -> list[Item | None]:
    """The items of `sides` (default: the row's positive, then its negatives) as candidates of `row`'s dataset.
    Image retrieval / grounding decide by the row's positive, as VLM2Vec does by its first candidate, whether
    candidates carry their caption after `tgt_inst` or `tgt_inst` alone."""
    if sides is None:
        sides = [row.get("positive"), *(row.get("negatives") or [])]
    fmt, tinst = item_format(row), target_instruction(row)
    if fmt is None:
        return [side_item(s, uses_images, tinst) for s in sides]
    out: list[Item | None] = []
    captioned = bool(((row.get("positive") or {}).get("text") or "").strip())
    for s in sides:
        if not isinstance(s, dict):
            out.append(None)
            continue
        text = (s.get("text") or "").strip()
        if fmt in ("image_t2i", "image_i2i_vg"):
            body = _after_token(tinst + " " + text) if captioned else _after_token(tinst)
            text = body.replace(" \n", "\n") + ("\n" if captioned or fmt == "image_t2i" else "")
        elif fmt == "visdoc":
            text = _after_token(DOC_PAGE)
        elif fmt in ("video_ret", "video_mret"):
            text = _after_token(VIDEO_TARGET)
        elif fmt == "momentseeker":
            text = _after_token(CLIP_TARGET)
        out.append((text, _seen(s, uses_images)))  # cls / qa / i2t / video cls+qa: the label, answer or caption alone
    return out


def target_instruction(row: dict) -> str:
    """The instruction a candidate of `row` carries (MMEB eval's `tgt_inst`; empty when the data gives none)."""
    return (row.get("target_instruction") or "").strip()


def target_item(row: dict, side, uses_images: bool) -> Item | None:
    """A candidate of `row` (its positive, a negative, an eval candidate) as the embedder sees it: the text its
    dataset's format gives (`candidate_items`)."""
    return candidate_items(row, uses_images, [side])[0]


def with_trace(item: Item, trace: str) -> Item:
    """The item with a trace after its text (one newline between), visuals unchanged."""
    text = item[0].rstrip()
    return ((text + "\n") if text.strip() else "") + trace.strip(), item[1]


def trace_for_embedding(row: dict, part: str) -> str | None:
    """The trace text the embedder reads (`part` in PARTS): `full` is the exported assistant turn (what the student
    learns to write); None when the row has no usable trace."""
    from distill.scoring.registry import trace_text  # here: distill.scoring imports this module

    if part != "full":
        return trace_text(row, part)
    if trace_text(row, "raw") is None:  # failed row or no trace object
        return None
    trace = row["trace"]
    if not (str(trace.get("think") or "").strip() or str(trace.get("final") or "").strip()):
        return None
    return assistant_text(trace)

"""ECR prompt templates (teacher_prompts/*.yaml at the top level, shipped in the wheel) rendered into OpenAI chat `messages`.

The templates are package data, so `pip install` users get them: `prompts_dir=None` means the installed ones
(`installed_prompts_dir()`), a directory of your own replaces them. `TemplateSet.check(tasks, side)` loads every
template a run needs up front, so a missing or broken directory is a configuration error before any request.

A template file holds `id`, `version`, `system`, `user` and `hint` (str.format fields: {instruction} {text} {answer}
{target} {num_images}), and optionally `examples`: few-shot turns `[{user, assistant}, ...]` sent as literal chat turns
between the system message and the query (small teachers follow a shown format far better than a described one). Mode `blind` shows the query only; `hinted` adds the hint with the gold answer / target text and
appends the target's images. Side `query` renders the example's query; side `target` renders its positive (the
candidate) with its side's template and, when hinted, the query text as context. Templates by (task, side):
TASK_TEMPLATES on the query side, TARGET_TEMPLATES on the target side: visual documents describe the page on the target
side (`visdoc.yaml`, the page image) and use the text-query template on the query side (ViDoRe queries are text).
Each `Rendered` carries the template's `prompt_id` (id@vN), its `template_sha` (sha256 of the template's id, version
and texts: the same for every row of one template, what lineage tables list) and the `request_sha` of the rendered
request (differs per row).

Rendering happens in two steps so that keys never hold base64: `render` gives *keyed* messages whose image parts carry
`image-sha256:<digest>` (digest of the source file bytes and the resize budget), which is what prompt hashes and
journal keys are computed over; `materialize` swaps in the base64 PNG data URLs (resized by `distill.images` to the
recipe's min/max pixels) right before sending. `ImageStore` (`distill.image_store`) hashes each file once and encodes each distinct image once
per run (LRU bounded by `cache_mb`, so num_samples, retries and repeated images reuse the encoding).
`render_messages` does both steps for callers that just want ready-to-send messages.
"""

from __future__ import annotations

import hashlib
import re
import string
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import yaml

from distill.data.mmeb import interleave
from distill.image_store import IMAGE_REF, VIDEO_REF, ImageStore

MODES = ("blind", "hinted")
SIDES = ("query", "target")
FIELDS = {"instruction", "text", "answer", "target", "num_images"}
# Template file per task type on the query side. Visual documents: the query is text (a question), the page is the
# target, so their query side uses the text-query template and the page description runs on the target side.
TASK_TEMPLATES = {
    "vqa": "vqa.yaml",
    "classification": "classification.yaml",
    "retrieval": "retrieval_query.yaml",
    "grounding": "grounding.yaml",
    "video": "video.yaml",
    "visdoc": "retrieval_query.yaml",
}
TARGET_TEMPLATE = "retrieval_target.yaml"  # the target side of every task without its own entry below
TARGET_TEMPLATES = {"visdoc": "visdoc.yaml"}


def template_name(task: str, side: str, text_query: bool = False) -> str:
    """The template file for a task type on a side (query | target). A video task whose query is text alone (text to
    video retrieval: DiDeMo, MSR-VTT, MSVD, VATEX, YouCook2) uses the text-query template: there are no frames."""
    if side == "target":
        return TARGET_TEMPLATES.get(task, TARGET_TEMPLATE)
    return TASK_TEMPLATES["retrieval" if text_query and task == "video" else task]


def is_text_query(example: dict, side: str) -> bool:
    """True for a video row whose query has neither video nor images (text to video retrieval)."""
    query = example["query"]
    return side == "query" and example["task"] == "video" and not query.get("video") and not query["images"]


def installed_prompts_dir() -> Path:
    """The shipped templates, wherever distill runs from: `distill/teacher_prompts/` in an installed wheel (setup.py
    maps the top-level folder there), else `teacher_prompts/` beside the package (a source checkout or an editable
    install, where the top-level folder is the one source)."""
    package = Path(__file__).resolve().parents[1]
    in_wheel = package / "teacher_prompts"
    return in_wheel if in_wheel.is_dir() else package.parent / "teacher_prompts"


def resolve_prompt_file(path: str | Path) -> Path:
    """A prompt file given by path: as given when it exists, else relative to the installed prompts directory
    (so `judge/ecr_quality.md` names the shipped judge rubric from any working directory)."""
    p = Path(path)
    if p.exists() or p.is_absolute():
        return p
    shipped = installed_prompts_dir() / p
    return shipped if shipped.exists() else p


@dataclass(frozen=True)
class PromptTemplate:
    id: str
    version: int
    system: str
    user: str
    hint: str
    path: str
    examples: tuple = ()  # ((user, assistant), ...): few-shot turns, literal text

    @property
    def prompt_id(self) -> str:
        return f"{self.id}@v{self.version}"

    @property
    def sha(self) -> str:
        """sha256 of what the teacher is told (id, version, system, user, hint); comments and file layout excluded."""
        body = {"id": self.id, "version": self.version, "system": self.system, "user": self.user, "hint": self.hint}
        if self.examples:  # only then: the shas of templates without examples stay what they were
            body["examples"] = [list(e) for e in self.examples]
        return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def load_template(path: str | Path) -> PromptTemplate:
    """Read and check one template file; ValueError names the file and the problem."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML ({' '.join(str(e).split())[:200]})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a prompt template must be a YAML mapping")
    missing = [k for k in ("id", "version", "system", "user") if not data.get(k)]
    unknown = set(data) - {"id", "version", "system", "user", "hint", "examples"}
    if missing or unknown:
        raise ValueError(f"{path}: missing keys {missing}, unknown keys {sorted(unknown)}")
    for key in ("system", "user", "hint"):
        used = {f for _, f, _, _ in string.Formatter().parse(data.get(key) or "") if f is not None}
        if used - FIELDS:
            raise ValueError(f"{path}: {key} uses unknown fields {sorted(used - FIELDS)} (allowed: {sorted(FIELDS)})")
    examples = data.get("examples") or []
    if not isinstance(examples, list) or not all(
        isinstance(e, dict) and set(e) == {"user", "assistant"} and all(isinstance(v, str) and v for v in e.values())
        for e in examples
    ):
        raise ValueError(f"{path}: examples must be a list of {{user: text, assistant: text}} turns")
    return PromptTemplate(str(data["id"]), int(data["version"]), data["system"], data["user"], data.get("hint") or "",
                          str(path), tuple((e["user"], e["assistant"]) for e in examples))  # fmt: skip


class TemplateSet:
    """The templates of one prompts directory (None = the installed ones), loaded on first use."""

    def __init__(self, prompts_dir: str | Path | None = None):
        self.dir = installed_prompts_dir() if prompts_dir is None else Path(prompts_dir)
        self._cache: dict[str, PromptTemplate] = {}

    def check(self, tasks, side: str) -> None:
        """Load every template that `tasks` on `side` need; ValueError (one line, naming the file) when the directory
        or a template is missing or broken. Called before any request so this is a config error, not N failed rows."""
        if not self.dir.is_dir():
            raise ValueError(f"prompts directory {self.dir} does not exist (omit prompts_dir for the installed ones)")
        for task in sorted(set(tasks)):
            try:
                self.for_example(task, side)
                self.for_example(task, side, text_query=True)
            except OSError as e:
                raise ValueError(f"prompts directory {self.dir}: cannot read template {Path(e.filename or '?').name}"
                                 f" ({e.strerror})") from None  # fmt: skip

    def for_example(self, task: str, side: str, text_query: bool = False) -> PromptTemplate:
        if task not in TASK_TEMPLATES:
            raise ValueError(f"no prompt template for task {task!r} (known: {sorted(TASK_TEMPLATES)})")
        name = template_name(task, side, text_query)
        if name not in self._cache:
            self._cache[name] = load_template(self.dir / name)
        return self._cache[name]


@dataclass
class Rendered:
    """Keyed messages (image parts as `image-sha256:` refs), the image paths in part order, the template's id@version,
    version and sha (stable across rows) and the sha of this rendered request (one per row)."""

    messages: list[dict]
    images: list[str]
    prompt_id: str
    prompt_version: int
    template_sha: str
    request_sha: str
    videos: list[list[str]] = field(default_factory=list)  # frame refs of each native video part, in part order


def _fill(template: str, fields: dict) -> str:
    return re.sub(r"\n{3,}", "\n\n", template.format_map(fields)).strip()


def _image_parts(images: list[str], store: ImageStore) -> list[dict]:
    return [{"type": "image_url", "image_url": {"url": IMAGE_REF + store.digest(p)}} for p in images]


def render(
    example: dict, templates: TemplateSet, store: ImageStore, mode: str = "blind", side: str = "query"
) -> Rendered:
    """Keyed messages for one example; raises ImageError when an image cannot be read (the row then fails)."""
    if mode not in MODES or side not in SIDES:
        raise ValueError(f"mode must be one of {MODES} and side one of {SIDES}")
    tpl = templates.for_example(example["task"], side, is_text_query(example, side))
    subject, other = (
        (example["query"], example["positive"]) if side == "query" else (example["positive"], example["query"])
    )
    native = store.native_video  # a video as one video_url part (vLLM), else its frames as images
    frames = store.video_frames(subject)
    subject_images = list(subject["images"]) if native else [*frames, *subject["images"]]
    # hinted: the other side's visuals follow the hint: the positive's on the query side; on the target side the
    # query's, when it has no text to quote (an image or video query)
    hinted = mode == "hinted" and (side == "query" or not other["text"].strip())
    other_frames = store.video_frames(other) if hinted else []
    hint_images = [*([] if native else other_frames), *other["images"]] if hinted else []
    videos = [v for v in ((frames, other_frames) if native else ()) if v]  # native video parts, in part order
    shown = "(shown after this text)" if hint_images or other_frames else ""  # a visual target has no text
    fields = {
        # the task instruction instructs the query side; the target side has its own (MMEB eval tgt_inst) or none
        "instruction": example.get("instruction" if side == "query" else "target_instruction") or "",
        "text": subject["text"],
        "answer": example.get("answer") or other["text"] or shown,
        "target": other["text"] or shown,
        "num_images": len(frames) + len(subject["images"]),
    }
    text = _fill(tpl.user, fields)
    if mode == "hinted" and tpl.hint:
        text += "\n\n" + _fill(tpl.hint, fields)
    # Images first, then the text (Qwen-VL convention), except those the text places with MMEB's <|image_N|>
    # markers (interleaved multi-image queries); then the target images a hint refers to.
    parts = [("image", subject_images[i]) if kind == "image" else (kind, i)
             for kind, i in interleave(text, len(subject_images))]  # fmt: skip
    images = [ref for kind, ref in parts if kind == "image"] + hint_images
    user: str | list[dict] = text  # plain string when there is no image: what text-only servers expect
    if images or videos:
        video_parts = [{"type": "video_url", "video_url": {"url": VIDEO_REF + store.video_key(v)}} for v in videos]
        first = 1 if frames and native else 0  # the subject's video leads, as its frames do; the hint's comes last
        user = [
            *video_parts[:first],
            *({"type": "text", "text": v} if kind == "text" else _image_parts([v], store)[0] for kind, v in parts),
            *_image_parts(hint_images, store),
            *video_parts[first:],
        ]
    shots = [{"role": r, "content": t} for u, a in tpl.examples for r, t in (("user", u), ("assistant", a))]
    messages = [{"role": "system", "content": _fill(tpl.system, fields)}, *shots, {"role": "user", "content": user}]
    sha = hashlib.sha256(orjson.dumps(messages, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return Rendered(messages, images, tpl.prompt_id, tpl.version, tpl.sha, sha, videos)


def materialize(messages: list[dict], images: list[str], store: ImageStore) -> list[dict]:
    """A copy of keyed `messages` with each image ref replaced by its data URL (in part order), and each native video
    part by its frames' `data:video/jpeg` URL; call off the loop."""
    urls = iter([store.data_url(p) for p in images])

    def part_url(part: dict) -> dict:
        if part.get("type") == "image_url":
            return {"type": "image_url", "image_url": {"url": next(urls)}}
        if part.get("type") == "video_url":
            return {
                "type": "video_url",
                "video_url": {"url": store.video_url(store.video_for(part["video_url"]["url"]))},
            }
        return part

    return [{**m, "content": [part_url(p) for p in m["content"]] if isinstance(m["content"], list) else m["content"]}
            for m in messages]  # fmt: skip


def render_messages(example: dict, templates: TemplateSet, store: ImageStore, mode: str = "blind",
                    side: str = "query") -> list[dict]:  # fmt: skip
    """Ready-to-send OpenAI `messages` for one example (render + materialize), for callers outside `generate`."""
    r = render(example, templates, store, mode, side)
    return materialize(r.messages, r.images, store)


def approx_prompt_tokens(rendered: Rendered, store: ImageStore) -> int:
    """Rough prompt size for dry runs: ~4 characters per text token plus each image's vision tokens."""
    chars = sum(len(m["content"]) if isinstance(m["content"], str) else
                sum(len(p.get("text", "")) for p in m["content"]) for m in rendered.messages)  # fmt: skip
    frames = [f for video in rendered.videos for f in video]
    return chars // 4 + sum(store.approx_tokens(p) for p in [*rendered.images, *frames])

"""The student's chat format: the one definition of the messages the student is trained on and asked with.

    python -c "from distill.chat_format import student_prompt; print(student_prompt({'instruction': 'Represent the \
image:', 'query': {'text': 'What color?', 'images': ['a.png']}}))"

`distill export` writes `student_prompt(row, trace=row["trace"])` as the training row, the train-time label audit and
pre-flight tokenize those rows with `tokenize_messages`, and `distill reason` asks the student with
`student_prompt(row)` (no assistant turn) through the same `tokenize_messages(..., add_generation_prompt=True)`. So a
student trained by `distill train` and asked by `distill reason` sees the same prompt token ids (tests/test_reason.py).

Format (TRL's conversational vision-language rows):
    [system: system_prompt]                                  only when one is configured
    user:      instruction + "\\n" + text of the side        images: the side's images, placed before the text
The side (`distill.records.SIDES`) is the one the trace is about: `query` (the task instruction and the query) or
`target` (the target instruction, MMEB eval's `tgt_inst` where the data has one, and the positive: its text and
images), so a target-side trace is trained on the positive it describes, never on the query.
    assistant: "<think>" + think + "</think>\\n" + final       only with a trace (training rows)
Content is a string, as TRL's dataset format has it. `multimodal_messages` (used by `tokenize_messages`, the train
collator, pre-flight and the label audit) turns it into structured content: the side's video first (one
`{"type": "video"}` block of its sampled frames, which Qwen2-VL's processor encodes as a video), then its images, then
the text; images the text places with MMEB's `<|image_N|>` markers (interleaved multi-image queries,
`distill.data.mmeb.interleave`) sit at their marker instead. Without video or markers this is exactly TRL's own
`prepare_multimodal_messages` layout (images first), so plain image rows also train with stock `trl sft`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from distill.records import SIDE_FIELDS, side_instruction
from distill.records import SIDES as RECORD_SIDES

# The part of a row the student reasons about: "query" (instruction + query) or "target" (target instruction +
# positive). Defined once in distill.records, so export, audit, reason and the scorers agree.
SIDES = RECORD_SIDES


@dataclass
class StudentPrompt:
    """The student's messages for one row, and the image paths (relative to image_root) in placeholder order."""

    messages: list[dict]
    images: list[str] = field(default_factory=list)
    videos: list[str] = field(default_factory=list)  # frame folders / video files, sampled by `load_videos`


def user_text(row: dict, side: str = "query") -> str:
    """The student's user-turn text: the instruction, then the side's text (either may be empty)."""
    _check_side(side)
    text = (row[SIDE_FIELDS[side]].get("text") or "").strip()
    return "\n".join(p for p in (side_instruction(row, side), text) if p)


def assistant_text(trace: dict) -> str:
    """The supervised assistant turn: `<think>` + think + `</think>` + newline + final."""
    return f"<think>{(trace.get('think') or '').strip()}</think>\n{(trace.get('final') or '').strip()}"


def student_prompt(
    row: dict, *, side: str = "query", trace: dict | None = None, system_prompt: str | None = None
) -> StudentPrompt:
    """The student's messages for `row` (an example or trace row, `distill.records`): system (optional), user, and
    the assistant turn when `trace` is given (training); without it, the prompt the student is asked with."""
    _check_side(side)
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages.append({"role": "user", "content": user_text(row, side)})
    if trace is not None:
        messages.append({"role": "assistant", "content": assistant_text(trace)})
    subject = row[SIDE_FIELDS[side]]
    video = subject.get("video")
    return StudentPrompt(messages, list(subject.get("images") or []), [video] if video else [])


def load_images(paths: list[str], image_root: str, min_pixels: int, max_pixels: int) -> list:
    """The prompt's images as the student sees them: opened and checked (`distill.images`), resized to the pixel
    budget (Qwen2-VL smart resize). Export and reason both use it; raises `ImageError` naming the file."""
    from distill.images import load_image, resize_to_budget

    images = []
    for rel in paths:
        with load_image(image_root, rel) as img:
            images.append(resize_to_budget(img, min_pixels, max_pixels))
    return images


def load_videos(paths: list[str], image_root: str, num_frames: int, min_pixels: int, max_pixels: int) -> list:
    """Each video as the student sees it: `num_frames` frames sampled uniformly (`distill.video`, as the teacher's
    request had them), each resized to the per-frame pixel budget. Raises `ImageError`/`VideoError` naming the file."""
    from distill.images import resize_to_budget
    from distill.video import open_frames, sample_frames

    return [[resize_to_budget(f, min_pixels, max_pixels) for f in open_frames(image_root, sample_frames(
        image_root, rel, num_frames))] for rel in paths]  # fmt: skip


def multimodal_messages(messages: list[dict], images: list, videos: list | None = None) -> list[dict]:
    """Messages in structured form with `videos` (each a list of PIL frames) and `images` (PIL images, in `images`
    order) filled in: videos, then images, then text in the first user turn, except images placed by `<|image_N|>`
    markers. Without videos or markers, exactly TRL's `prepare_multimodal_messages`."""
    from trl.data_utils import prepare_multimodal_messages

    from distill.data.mmeb import IMAGE_PLACEHOLDER, interleave

    videos, images = list(videos or []), list(images)
    out, placed = [], False
    for m in messages:
        content = m["content"]
        if (
            m["role"] == "user"
            and isinstance(content, str)
            and not placed
            and (videos or IMAGE_PLACEHOLDER.search(content))
        ):
            blocks = [{"type": "video", "video": v} for v in videos]
            blocks += [{"type": "image", "image": images[v]} if kind == "image" else {"type": "text", "text": v}
                       for kind, v in interleave(content, len(images))]  # fmt: skip
            m, placed = {**m, "content": blocks}, True
        out.append(m)
    return prepare_multimodal_messages(out, images=[] if placed else images)


def tokenize_messages(
    processor,
    messages: list[dict],
    images: list,
    chat_template: str | None = None,
    add_generation_prompt: bool = False,
    videos: list | None = None,
) -> dict:
    """Tokenize as TRL's vision collator does (no padding, no truncation): `input_ids` [1, n], `pixel_values`, ...
    With `add_generation_prompt` (and no assistant turn) this is the prompt `distill reason` sends to the student."""
    return processor.apply_chat_template(
        multimodal_messages(messages, images, videos), chat_template=chat_template, tokenize=True, return_dict=True,
        add_generation_prompt=add_generation_prompt, processor_kwargs={"add_special_tokens": False},
    )  # fmt: skip


def _check_side(side: str) -> None:
    if side not in SIDES:
        raise ValueError(f"unknown side {side!r} (supported: {', '.join(SIDES)})")

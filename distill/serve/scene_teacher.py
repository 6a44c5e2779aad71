"""`distill serve --model scenes=shape-scenes`: the demo's image teacher, an ECR trace writer that reads the pixels.

    distill serve --model smollm2 --model scenes=shape-scenes --port 0

No package ships a small pretrained VLM, and the kit's tiny VLM has random weights, so its image traces are noise. The
demo's images are synthetic shape scenes; this "model" reads them (`distill.serve.scene_reader`: connected components,
hue, fill of the bounding box, position) and answers the request the way the ECR templates ask: `<think>` what it
sees and how that decides the task `</think>`, then the final part (a plain statement, and `Answer: <answer>` for vqa
and classification). The task comes from the request's last user message, the query part before its first blank
line (every template puts the instruction and the query text first):
- grounding ("... isolates the object labeled as 'red circle'"): describes the referred object, its place and neighbours;
- classification ("... for classification"): names the largest shape;
- vqa (a question): counts ("how many [red] [circles]"), colour of a shape, shape at a position, position of a shape;
- anything else (retrieval, either side): a caption of the whole image.
It is only right on such scenes; on a photo it describes coloured blobs. Image-less requests get a 400 (send text to a
language model). Deterministic: the `n` choices are the same text. Token counts are whitespace-separated words (there
is no tokenizer); `max_tokens` cuts the text at that many words (finish_reason "length"), `stop` strings apply.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from distill.serve.chat_request import ChatRequest, Choice, RequestError
from distill.serve.scene_reader import Shape, count_word, english, has_background, listing, read_scene, relation

SCENES_NAME = "shape-scenes"  # reserved model path for `distill serve --model NAME=shape-scenes`
COLOURS = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink", "white", "grey", "black")
SHAPES = ("circle", "square", "triangle", "rectangle", "ellipse")
_WORD = re.compile(r"[a-z]+")


@dataclass
class Prepared:
    """The answer, computed when the request is prepared (reading the pixels takes milliseconds)."""

    text: str
    prompt_tokens: int


def query_text(request: ChatRequest) -> str:
    """The last user message's text up to its first blank line: the instruction and query every template leads with."""
    user = [m for m in request.messages if m["role"] == "user"][-1]
    text = "\n".join(p["text"] for p in user["content"] if p.get("type") == "text").strip()
    return text.split("\n\n", 1)[0]


def task_of(query: str) -> str:
    """grounding | classification | vqa | describe, from the query text."""
    q = query.lower()
    if "labeled as" in q or "isolat" in q or "refer" in q:
        return "grounding"
    if "classif" in q or "category" in q:
        return "classification"
    if "?" in q or "question" in q:
        return "vqa"
    return "describe"


def _named(text: str, vocabulary: tuple[str, ...]) -> str | None:
    """The first word of `vocabulary` in `text` (plurals and "colour"/"color" spellings handled by the caller)."""
    words = [w.removesuffix("s") if w.endswith(("circles", "squares", "triangles")) else w
             for w in _WORD.findall(text.lower())]  # fmt: skip
    return next((w for w in words if w in vocabulary), None)


def _matching(shapes: list[Shape], colour: str | None, shape: str | None) -> list[Shape]:
    return [s for s in shapes if (colour is None or s.colour == colour) and (shape is None or s.shape == shape)]


def _scene(shapes: list[Shape], background: bool) -> str:
    where = " on a plain white background" if background else ", filling the frame"
    if not shapes:
        return "The image is blank: no shape stands out from the background."
    noun = "shape" if len(shapes) == 1 else "shapes"
    return f"The image shows {count_word(len(shapes))} {noun}{where}: {listing(shapes)}."


def caption(shapes: list[Shape], background: bool) -> str:
    """A one-sentence caption: "An image of a red circle and a blue square on a white background." """
    if not shapes:
        return "An empty image with a plain background."
    return f"An image of {listing(shapes, where=False)}" + (" on a white background." if background else ".")


def answer_vqa(question: str, shapes: list[Shape]) -> tuple[str, str, str]:
    """(reasoning, statement, short answer) for the question kinds the scenes support."""
    q = question.lower()
    colour, shape = _named(q, COLOURS), _named(q, SHAPES)
    position = re.search(r"\b(top|bottom|upper|lower)[- ](left|right)\b", q)
    if "how many" in q:
        found = _matching(shapes, colour, shape)
        what = " ".join(w for w in (colour, shape) if w) or "shape"
        plural = what if len(found) == 1 else what + "s"
        return (f"The question asks how many {what}s there are. Counting the matching ones gives "
                f"{count_word(len(found))}.", f"There {'is' if len(found) == 1 else 'are'} {count_word(len(found))} "
                f"{plural} in the image.", str(len(found)))  # fmt: skip
    if "colo" in q and shape:
        found = _matching(shapes, None, shape)
        if found:
            s = found[0]
            return (f"The question asks for the colour of the {shape}. The {shape} is the shape {_in(s)}, and its "
                    f"pixels are {s.colour}.", f"The {shape} is {s.colour}.", s.colour)  # fmt: skip
        return f"The question asks about a {shape}, but no {shape} is visible.", f"There is no {shape}.", "none"
    if "shape" in q and position:
        place = f"{'top' if position[1] in ('top', 'upper') else 'bottom'}-{position[2]}"
        found = [s for s in shapes if s.position == place]
        if found:
            s = found[0]
            return (f"The question asks which shape is in the {place} part. The shape there is {s.colour}, and its "
                    f"outline fills {round(100 * s.fill)}% of its box, so it is a {s.shape}.",
                    f"The shape in the {place} part is a {s.colour} {s.shape}.", s.shape)  # fmt: skip
        return f"The question asks about the {place} part, which is empty.", f"No shape is in the {place} part.", "none"
    if ("where" in q or "position" in q) and (colour or shape):
        found = _matching(shapes, colour, shape)
        what = " ".join(w for w in (colour, shape) if w)
        if found:
            return (f"The question asks where the {what} is. It is {_in(found[0])}.",
                    f"The {what} is {_in(found[0])}.", found[0].position)  # fmt: skip
        return f"The question asks where the {what} is, but none is visible.", f"There is no {what}.", "none"
    return ("The question is not about counts, colours, shapes or positions, which is all these pixels tell.",
            "The image does not settle this question.", "unknown")  # fmt: skip


def _in(s: Shape) -> str:
    return "in the centre" if s.position == "centre" else f"in the {s.position}"


def answer_grounding(query: str, shapes: list[Shape]) -> tuple[str, str]:
    """(reasoning, description of the referred object and its surroundings)."""
    quoted = re.findall(r"['\"]([^'\"]+)['\"]", query)
    phrase = quoted[-1] if quoted else query.split("labeled as", 1)[-1]
    colour, shape = _named(phrase, COLOURS), _named(phrase, SHAPES)
    found = _matching(shapes, colour, shape)
    if not found:
        return (f"The phrase names '{phrase.strip()}', but no such object is visible.",
                f"No {phrase.strip()} is in the image.")  # fmt: skip
    target = max(found, key=lambda s: s.area)
    others = [s for s in shapes if s is not target]
    near = english([f"a {o.name} {relation(target, o)}" for o in others])
    why = f"It is the only {target.name}" if len(found) == 1 else f"It is the largest of {len(found)} {target.name}s"
    reasoning = (
        f"The phrase names the {target.name}. {why}, {_in(target)}, about {round(100 * target.size)}% of "
        "the image wide."
    )
    description = (f"A solid {target.colour} {target.shape} {_in(target)} of the image"
                   + (f", with {near}." if others else ", alone on the white background."))  # fmt: skip
    return reasoning, description


def write_trace(query: str, shapes: list[Shape], background: bool) -> str:
    """The ECR trace for `query` about an image holding `shapes`."""
    scene = _scene(shapes, background)
    task = task_of(query)
    if task == "classification":
        if not shapes:
            return f"<think>{scene}</think>\nNo shape is visible.\nAnswer: none"
        s = max(shapes, key=lambda s: s.area)
        return (f"<think>{scene} The main object is the {s.colour} shape; it fills {round(100 * s.fill)}% of its "
                f"bounding box, as a {s.shape} does.</think>\nThe image shows a {s.colour} {s.shape}.\n"
                f"Answer: {s.shape}")  # fmt: skip
    if task == "vqa":
        question = query.split("question:", 1)[-1] if "question:" in query.lower() else query
        reasoning, statement, short = answer_vqa(question, shapes)
        return f"<think>{scene} {reasoning}</think>\n{statement}\nAnswer: {short}"
    if task == "grounding":
        reasoning, description = answer_grounding(query, shapes)
        return f"<think>{scene} {reasoning}</think>\n{description}"
    return f"<think>{scene}</think>\n{caption(shapes, background)}"


@dataclass(eq=False)
class _Run:
    """A batch for the batcher: every row is done as soon as it starts (the text was written in `prepare`)."""

    model: object
    jobs: list
    rows: list = field(default_factory=list)
    generated: int = 0
    paused_at: float = 0.0

    def live_rows(self) -> list:
        return []


class SceneTeacher:
    """The served model: the batcher's interface (`prepare`, `begin`, `advance`, `choices`) over `write_trace`."""

    kind = "image-text (pixel reader)"

    def __init__(self, model_id: str):
        self.model_id = model_id

    def prepare(self, request: ChatRequest) -> Prepared:
        if not request.images:
            raise RequestError(400, f"model {self.model_id!r} reads shape scenes from pixels and needs an image "
                               "(send text-only queries to a language model)", code="image_required",
                               param="messages")  # fmt: skip
        query = query_text(request)
        shapes = read_scene(request.images[0])
        text = write_trace(query, shapes, has_background(request.images[0], shapes))
        prompt = sum(len(p.get("text", "").split()) for m in request.messages for p in m["content"])
        return Prepared(text, prompt + len(request.images))

    def begin(self, jobs: list) -> _Run:
        return _Run(self, list(jobs))

    def advance(self, run: _Run, on_job_done, should_pause, min_steps: int) -> None:
        for job in run.jobs:
            on_job_done(job)

    def choices(self, job) -> list[Choice]:
        return [_cut(job.prepared.text, job.params)] * job.params.n


def _cut(text: str, params) -> Choice:
    """Apply `stop` strings and `max_tokens` (counted in words) as a generating model would."""
    finish = "stop"
    cut = min((p for p in (text.find(s) for s in params.stop) if p >= 0), default=-1)
    if cut >= 0:
        text = text[:cut]
    words = re.findall(r"\S+\s*", text)
    if len(words) > params.max_tokens:
        text, finish = "".join(words[: params.max_tokens]).rstrip(), "length"
    return Choice(text=text, finish_reason=finish, completion_tokens=min(len(words), params.max_tokens))

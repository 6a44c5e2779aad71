"""What an embedder reads for a row: the query, a candidate and a trace, as (text, images) items. One definition shared
by the `embedding_gain` scorer, `distill eval`'s retrieval and `distill embed`'s training pairs, so what an embedder is
trained on and what it is measured on can never drift apart.

    q = query_item(row, uses_images=True)                # instruction + query text, the query's images
    q_cond = with_trace(q, trace_for_embedding(row, "full"))
    pos = target_item(row, row["positive"], uses_images=True)   # the candidate with the target instruction

An item is (text, visuals): visuals are image paths relative to the image root, then a video as one `video:<path>`
entry (the VLM embedder samples its frames). A text-only embedder gets items without visuals (`uses_images=False`).
"""

from __future__ import annotations

from distill.chat_format import assistant_text

Item = tuple[str, tuple[str, ...]]  # (text, relative image paths and `video:<path>` entries)
VIDEO = "video:"  # an item entry naming a video (frame folder or file): the VLM embedder sees its sampled frames
PARTS = ("full", "think", "final", "raw")


def visuals(side: dict) -> tuple[str, ...]:
    """A side's images, then its video as one `video:<path>` entry (the VLM embedder samples the frames)."""
    return tuple(side.get("images") or ()) + ((VIDEO + side["video"],) if side.get("video") else ())


def side_item(side, uses_images: bool, instruction: str = "") -> Item | None:
    """A side (`{text, images[], video}`) as an item, `instruction` on the line above its text; None when the side
    is not an object or has neither text nor (for an image-reading embedder) visuals."""
    if not isinstance(side, dict):
        return None
    images = visuals(side) if uses_images else ()
    text = (side.get("text") or "").strip()
    if not (text or images):
        return None
    return "\n".join(t for t in (instruction, text) if t), images


def target_instruction(row: dict) -> str:
    """The instruction a candidate of `row` carries (MMEB eval's `tgt_inst`; empty when the data gives none)."""
    return (row.get("target_instruction") or "").strip()


def target_item(row: dict, side, uses_images: bool) -> Item | None:
    """A candidate of `row` (its positive, a negative, an eval candidate) as the embedder sees it: with the target
    instruction where there is one."""
    return side_item(side, uses_images, target_instruction(row))


def query_item(row: dict, uses_images: bool) -> Item:
    """The query as the embedder sees it: instruction and query text on one line, the query's visuals."""
    query = row.get("query") or {}
    text = " ".join(t for t in ((row.get("instruction") or "").strip(), (query.get("text") or "").strip()) if t)
    return text, visuals(query) if uses_images else ()


def with_trace(item: Item, trace: str) -> Item:
    """`item` conditioned on a trace: the trace on the line after its text (TTE concatenates it after the input)."""
    return (item[0] + "\n" + trace).strip(), item[1]


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

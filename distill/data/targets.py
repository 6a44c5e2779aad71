"""Each distinct retrieval target once: the rows `distill generate --side target` (and the `generate_target` pipeline
stage) sends to the teacher when the input holds examples with candidates (MMEB-train / eval rows).

    for line, row in distinct_targets(lambda: load_examples("mmeb_eval/MSCOCO_t2i.jsonl")):
        ...   # the first example of each distinct positive, then a target-only row per negative never a positive

A target is its dataset, text and visuals (`target_digest`; `distill eval --target_traces` finds a candidate's trace
by the same key). A target that is some example's positive is sent as the first such example, unchanged (its query
and negatives stay, so `embedding_gain` can score the trace against them). A candidate that is only ever a negative
gets a target-only row: id `<dataset>-target-<digest>`, the source example's dataset, task and target instruction, the
candidate as `positive`, no query, no negatives, `target_only: true` (scored by nobody; it exists so the candidate
has a trace wherever it is ranked). Two passes over the input (`read` is called twice), 16 bytes per distinct target.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator

import orjson

from distill.embed_text import visuals
from distill.records import make_example, side


def target_digest(dataset, target: dict) -> bytes:
    key = [dataset, (target.get("text") or "").strip(), list(visuals(target))]
    return hashlib.blake2b(orjson.dumps(key), digest_size=16).digest()


def target_only_row(example: dict, target: dict, digest: bytes) -> dict:
    """The row that asks for a trace of `target`, a candidate of `example` that is no example's positive."""
    ds = example.get("dataset")
    row = make_example(f"{ds}-target-{digest.hex()[:16]}", example["task"], ds, side(), example.get("instruction") or "",
                       target, [], None, example.get("target_instruction"))  # fmt: skip
    return {**row, "target_only": True}


def distinct_targets(read: Callable[[], Iterator[tuple[int, object]]]) -> Iterator[tuple[int, object]]:
    """(line, row or BadRow) as `read()` yields them, each distinct target once (module docstring); non-dict items
    (problems) pass through."""
    positives = set()
    for _, item in read():
        if isinstance(item, dict) and isinstance(item.get("positive"), dict):
            positives.add(target_digest(item.get("dataset"), item["positive"]))
    seen: set[bytes] = set()
    for line, item in read():
        if not isinstance(item, dict) or not isinstance(item.get("positive"), dict):
            yield line, item
            continue
        digest = target_digest(item.get("dataset"), item["positive"])
        if digest not in seen:
            seen.add(digest)
            yield line, item
        for neg in item.get("negatives") or []:
            digest = target_digest(item.get("dataset"), neg)
            if digest not in positives and digest not in seen:
                seen.add(digest)
                yield line, target_only_row(item, neg, digest)

"""Hand-written trace rows over the demo examples, for tests, the CPU demo and benchmarks (no teacher needed).

    python -m distill.testing.traces runs/demo/kept.jsonl [--input data/demo/train]

`demo_trace_rows()` turns each demo example into a kept trace row (the schema in `distill.records`): a short ECR trace
written from the gold answer / positive text, with a think part whose length varies by row so that batching and padding
behave like real data. The `teacher` block names a fake model and prompt so lineage has something to record.
"""

from __future__ import annotations

import argparse
import hashlib

from distill.data.mmeb import Problem, load_examples

_STEPS = [
    "I look at the whole image first.",
    "The background is plain white.",
    "Each shape has one solid color.",
    "I check the top left part of the image.",
    "Then I compare the shapes with the instruction.",
    "Nothing else is in the image.",
]


def _trace(example: dict, index: int) -> tuple[str, str]:
    target = example.get("answer") or example["positive"]["text"] or "the matching image"
    steps = " ".join(_STEPS[: 1 + index % len(_STEPS)])  # 1..6 sentences: lengths differ row to row
    if example["task"] == "retrieval" and not example["query"]["images"]:
        think = f"The caption asks for an image. {steps} The target must show what the caption says."
        final = f"An image that shows: {example['query']['text']}"
    elif example["task"] == "grounding":
        think = f"{steps} The referred object is the one named in the instruction."
        final = f"The object: {example['query']['text'] or example['instruction']}"
    else:
        think = f"{steps} The evidence points to {target}."
        final = f"Answer: {target}"
    return think, final


def demo_trace_rows(input: str = "data/demo/train", model: str = "demo-teacher") -> list[dict]:
    """One kept trace row per demo example (sample_index 0), deterministic."""
    rows = []
    for i, (_, ex) in enumerate(load_examples(input)):
        if isinstance(ex, Problem):
            raise ValueError(f"{input}: {ex.reason}")
        think, final = _trace(ex, i)
        prompt_id = f"ecr-{ex['task']}-v1"
        rows.append(
            {
                **ex,
                "sample_index": 0,
                "trace": {"raw": f"<think>{think}</think>\n{final}", "think": think, "final": final},
                "teacher": {
                    "model": model,
                    "prompt_id": prompt_id,
                    "prompt_sha": hashlib.sha256(prompt_id.encode()).hexdigest(),
                    "mode": "blind",
                    "sampling": {"temperature": 0.7, "max_tokens": 512},
                },
                "usage": {"prompt_tokens": 100, "completion_tokens": len(think.split()) + len(final.split())},
                "status": "ok",
            }
        )
    return rows


def main() -> None:
    from distill.io import write_jsonl_atomic

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("output")
    ap.add_argument("--input", default="data/demo/train")
    args = ap.parse_args()
    print(f"{write_jsonl_atomic(args.output, demo_trace_rows(args.input))} rows -> {args.output}")


if __name__ == "__main__":
    main()

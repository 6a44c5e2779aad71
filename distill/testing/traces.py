"""Hand-written trace rows over example rows, for tests, the CPU demo and benchmarks (no teacher needed).

    python -m distill.testing.traces runs/demo/kept.jsonl [--input data/demo/train]

- `trace_row(example, i, raw)`: one row in the trace schema of `distill.records`.
- `demo_trace_rows(examples)`: three samples per example whose defects are known in advance (a good one, a wrong or
  vague one, and one with a teacher / format fault), so scorer and filter tests can assert exact outcomes.
- `kept_demo_rows(input)`: one good trace per demo example (what `filter` would keep), with think parts whose length
  varies by row so that batching and padding behave like real data; export / train tests and benchmarks use it.
"""

from __future__ import annotations

import argparse
import hashlib

from distill.data.mmeb import load_examples
from distill.io import BadRow
from distill.trace_rows import parse_trace


def trace_row(example: dict, sample_index: int, raw: str | None, status: str = "ok", error: str | None = None) -> dict:
    """A trace row: the example plus sample_index, trace, teacher, usage, status (and error when not ok)."""
    row = {
        **example,
        "sample_index": sample_index,
        # split exactly as `generate` does; generate writes empty parts for failures
        "trace": parse_trace(raw) if raw is not None else {"raw": "", "think": "", "final": ""},
        "teacher": {"model": "hand-written", "prompt_id": example["task"], "prompt_sha": "0" * 12, "mode": "blind",
                    "sampling": {"temperature": 0.7, "max_tokens": 512}},
        "usage": {"prompt_tokens": 50, "completion_tokens": 0 if raw is None else len(raw.split())},
        "status": status,
        "error": None if status == "ok" else (error or status),
    }  # fmt: skip
    return row


def _good(ex: dict) -> str:
    if ex.get("answer"):
        return f"<think>I look at the image and check each shape carefully.</think>The answer is {ex['answer']}."
    pos = ex["positive"]["text"] if not ex["positive"]["images"] else ex["query"]["text"] or ex["instruction"]
    return f"<think>The target must show exactly what is described.</think>{pos}"


def demo_trace_rows(examples: list[dict]) -> list[dict]:
    """Three samples per example: 0 good; 1 wrong answer (vqa / classification) or a vague description; 2 cycles
    through faults by example position: truncated, failed, unclosed think tag, degenerate repetition."""
    rows = []
    for k, ex in enumerate(examples):
        rows.append(trace_row(ex, 0, _good(ex)))
        if ex.get("answer"):
            wrong = "<think>Looking quickly.</think>The answer is " + ("7" if ex["answer"][0].isdigit() else "purple")
        else:
            wrong = "<think>Something is there.</think>An ordinary picture of something."
        rows.append(trace_row(ex, 1, wrong))
        fault = k % 4
        if fault == 0:
            rows.append(trace_row(ex, 2, "<think>I start counting the shapes one by one and", "truncated", "length"))
        elif fault == 1:
            rows.append(trace_row(ex, 2, None, "failed", "HTTP 503 after 5 retries"))
        elif fault == 2:
            rows.append(trace_row(ex, 2, "<think>I look at the image. " + _good(ex).split("</think>")[1]))
        else:
            rows.append(trace_row(ex, 2, "<think>" + "the shape is red and " * 30 + "</think>red"))
    return rows


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


def kept_demo_rows(input: str = "data/demo/train", model: str = "demo-teacher") -> list[dict]:
    """One kept trace row per demo example (sample_index 0), deterministic."""
    rows = []
    for i, (_, ex) in enumerate(load_examples(input)):
        if isinstance(ex, BadRow):
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
    print(f"{write_jsonl_atomic(args.output, kept_demo_rows(args.input))} rows -> {args.output}")


if __name__ == "__main__":
    main()

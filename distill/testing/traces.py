"""Trace rows for tests and benchmarks, built from example rows with hand-written traces (no teacher needed).

    from distill.data.mmeb import load_examples
    rows = demo_trace_rows([e for _, e in load_examples("data/demo/train")])

`trace_row` follows the trace schema in `distill.records`; `demo_trace_rows` gives each example three samples whose
defects are known in advance (a good one, a wrong or vague one, and one with a teacher / format fault), so scorer and
filter tests can assert exact outcomes.
"""

from __future__ import annotations

import re

_SPLIT = re.compile(r"^\s*<think>(.*?)</think>(.*)$", re.S)


def split_trace(raw: str) -> tuple[str, str]:
    """(think, final) of a raw completion: the parts inside and after `<think>...</think>`, else ("", raw)."""
    m = _SPLIT.match(raw)
    return (m.group(1).strip(), m.group(2).strip()) if m else ("", raw.strip())


def trace_row(example: dict, sample_index: int, raw: str | None, status: str = "ok", error: str | None = None) -> dict:
    """A trace row: the example plus sample_index, trace, teacher, usage, status (and error when not ok)."""
    think, final = split_trace(raw) if raw is not None else ("", "")
    row = {
        **example,
        "sample_index": sample_index,
        "trace": {"raw": raw or "", "think": think, "final": final},  # generate writes empty parts for failures
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

"""JSONL read/write cost: `distill.io` (orjson, line-numbered bad lines) vs the `jsonlines` package, side by side.

    python benchmarks/jsonl_io.py [--rows 50000]

Rows are trace-shaped (nested trace/teacher/scores, ~1.5 KB). Prints seconds and rows/s per reader and writer, and
each one's ratio to distill.io, measured in the same process one after the other (best of 3).
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from pathlib import Path

import jsonlines
import orjson

from distill.io import BadRow, iter_jsonl, write_jsonl_atomic


def trace_row(i: int) -> dict:
    return {"id": f"ShapesVQA-{i:08x}", "task": "vqa", "dataset": "ShapesVQA", "instruction": "Represent the image:",
            "query": {"text": "What color is the circle in the image?", "images": [f"images/{i % 500}.png"]},
            "positive": {"text": "red", "images": []}, "negatives": [], "answer": "red", "sample_index": i % 2,
            "trace": {"raw": "<think>" + "The image shows a red circle. " * 20 + "</think>\nred",
                      "think": "The image shows a red circle. " * 20, "final": "red"},
            "teacher": {"model": "Qwen/Qwen2.5-VL-72B-Instruct", "prompt_id": "ecr-vqa@v1", "prompt_sha": "ab" * 32,
                        "mode": "blind", "sampling": {"temperature": 0.7, "top_p": 0.95, "max_tokens": 1024}},
            "usage": {"prompt_tokens": 812, "completion_tokens": 143}, "status": "ok", "error": None,
            "scores": {"format": 1.0, "length": 143, "repetition": 0.02, "answer_match": 1.0}}  # fmt: skip


def best(fn, k: int = 3) -> float:
    times = []
    for _ in range(k):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=50_000)
    args = ap.parse_args()
    rows = [trace_row(i) for i in range(args.rows)]
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "rows.jsonl"
        write_jsonl_atomic(path, rows)

        def read_ours():
            return sum(1 for _, r in iter_jsonl(path) if not isinstance(r, BadRow))

        def read_jsonlines(loads):
            def run():
                with jsonlines.open(path, loads=loads) as r:
                    return sum(1 for _ in r)

            return run

        def write_jsonlines(dumps):
            def run():
                with open(Path(d) / "w.jsonl", "w") as f, jsonlines.Writer(f, dumps=dumps) as w:
                    w.write_all(rows)

            return run

        ours_dumps = lambda r: orjson.dumps(r).decode()  # noqa: E731
        cases = [("read  distill.io (orjson)", read_ours), ("read  jsonlines (json)", read_jsonlines(json.loads)),
                 ("read  jsonlines (orjson loads)", read_jsonlines(orjson.loads)),
                 ("write distill.io (orjson, atomic)", lambda: write_jsonl_atomic(Path(d) / "o.jsonl", rows)),
                 ("write jsonlines (json)", write_jsonlines(json.dumps)),
                 ("write jsonlines (orjson dumps)", write_jsonlines(ours_dumps))]  # fmt: skip
        results = {name: best(fn) for name, fn in cases}
    out = io.StringIO()
    for name, s in results.items():
        ref = results["read  distill.io (orjson)" if name.startswith("read") else "write distill.io (orjson, atomic)"]
        print(f"{name:36s} {s:7.3f} s  {args.rows / s:10.0f} rows/s  x{s / ref:4.2f} of distill.io", file=out)
    print(out.getvalue(), end="")


if __name__ == "__main__":
    main()

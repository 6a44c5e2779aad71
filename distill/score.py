"""`distill score`: run named scorers over trace rows and add a `scores` dict to each row; nothing is dropped.

    distill score --input runs/demo/traces.jsonl --output runs/demo/scored.jsonl --config recipes/demo/score.yaml

Rows keep their order and fields; `scores` gains one entry per configured scorer (entries already present for other
names are kept, so scorers can be added in later runs). Output is written atomically, and a rerun on the same input
gives a byte-identical file. Lines that are not JSON objects cannot be scored or passed on: each is reported with its
line number and reason (log + `<output>.summary.json`); `--strict` stops on them with exit status 1 before writing.
Also written: `<output>.config.yaml` (the resolved config) and `<output>.summary.json` (rows, bad lines, per-scorer
time, rows/s, not-applicable counts and value ranges).

score.yaml: `scorers` maps an output name to the scorer's parameters (null for none). The output name is the
scorer's registry name, or any name with `scorer: <registry name>` among the parameters, so one scorer can run twice
(e.g. two embedders).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from distill.io import BadLine, iter_jsonl, write_json_atomic, write_jsonl_atomic

log = logging.getLogger(__name__)


@dataclass
class ScoreConfig:
    input: str = field(metadata={"help": "Trace rows (.jsonl) written by `distill generate`."})
    output: str = field(metadata={"help": "Scored rows (.jsonl): the input rows plus `scores`, same order."})
    scorers: dict | str | None = field(
        default=None,
        metadata={"help": "Output name -> scorer parameters (YAML mapping, or JSON on the command line); "
                  "`scorer: NAME` picks the registry scorer when the output name differs."},
    )  # fmt: skip
    image_root: str = field(default=".", metadata={"help": "Directory the rows' image paths are relative to."})
    strict: bool = field(default=False, metadata={"help": "Exit 1 on the first unreadable input line."})

    def __post_init__(self):
        if isinstance(self.scorers, str):
            self.scorers = json.loads(self.scorers)
        if not self.scorers or not isinstance(self.scorers, dict):
            raise ValueError("score: `scorers` must name at least one scorer (a mapping name -> parameters)")
        from distill.scoring.registry import check_params

        for name, params in self.scorers.items():
            if params is not None and not isinstance(params, dict):
                raise ValueError(f"score: parameters of scorer {name!r} must be a mapping or null")
            params = dict(params or {})
            check_params(params.pop("scorer", name), params)
        if Path(self.input).resolve() == Path(self.output).resolve():
            raise ValueError("score: --output must differ from --input (stages never rewrite their input)")


def build_scorers(config: ScoreConfig) -> dict:
    """Output name -> built scorer, in config order."""
    from distill.scoring import build_scorer  # importing the package registers every scorer family

    context = {"image_root": config.image_root, "work_dir": str(Path(config.output).parent)}
    built = {}
    for name, params in config.scorers.items():
        params = dict(params or {})
        built[name] = build_scorer(params.pop("scorer", name), context=context, **params)
    return built


def _stats(values: list) -> dict:
    nums = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    out = {"none": sum(v is None for v in values)}
    if nums:
        out |= {"min": min(nums), "max": max(nums), "mean": round(sum(nums) / len(nums), 6)}
    return out


def score_rows(rows: list[dict], scorers: dict) -> dict:
    """Add `scores` to every row in place (other fields untouched); returns per-scorer stats for the summary."""
    stats = {}
    for name, scorer in scorers.items():
        t0 = time.perf_counter()
        values = scorer(rows)
        seconds = time.perf_counter() - t0
        if len(values) != len(rows):
            raise RuntimeError(f"scorer {name!r} returned {len(values)} values for {len(rows)} rows")
        for row, value in zip(rows, values, strict=False):
            scores = row.get("scores")
            if not isinstance(scores, dict):
                scores = row["scores"] = {}
            scores[name] = value
        stats[name] = {"seconds": round(seconds, 3), "rows_per_s": round(len(rows) / max(seconds, 1e-9))}
        stats[name] |= _stats(values)
        log.info("%s: %d rows in %.2fs", name, len(rows), seconds)
    return stats


def main(config: ScoreConfig) -> int:
    from distill.configs import save_resolved_config

    t0 = time.time()
    try:  # before reading the input: a wrong model or tokenizer path fails in seconds, not after the load
        scorers = build_scorers(config)
    except (ValueError, OSError, ImportError) as e:
        print(f"distill score: cannot build the scorers: {e}", file=sys.stderr)
        return 2
    rows, bad, not_traces = [], [], []
    for line, item in iter_jsonl(config.input):
        if isinstance(item, BadLine):
            log.warning("%s (line not scored; it is not passed on)", item)
            bad.append({"line": line, "reason": item.reason})
            if config.strict:
                print(f"distill score: {item} (--strict: stopping, nothing written)", file=sys.stderr)
                return 1
            continue
        if not isinstance(item.get("trace"), dict) and item.get("status") != "failed":
            log.warning("%s:%d: row %r has no 'trace' object; scorers give None", config.input, line, item.get("id"))
            not_traces.append(line)
        rows.append(item)
    stats = score_rows(rows, scorers)
    write_jsonl_atomic(config.output, rows)
    out = Path(config.output)
    save_resolved_config(out.with_name(out.name + ".config.yaml"), config)
    summary = {"input": config.input, "output": config.output, "rows_in": len(rows) + len(bad), "rows_out": len(rows),
               "bad_lines": bad, "rows_without_trace": not_traces, "scorers": stats,
               "seconds": round(time.time() - t0, 3)}  # fmt: skip
    write_json_atomic(out.with_name(out.name + ".summary.json"), summary)
    print(f"{config.input}: {len(rows)} rows scored by {', '.join(stats)} -> {config.output}")
    if bad:
        print(f"  {len(bad)} unreadable line(s) not passed on: " + ", ".join(str(b["line"]) for b in bad[:20]))
    return 0


if __name__ == "__main__":
    from distill.cli import main as cli_main

    sys.exit(cli_main(["score", *sys.argv[1:]]))

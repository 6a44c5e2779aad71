"""`distill score`: run named scorers over trace rows and add a `scores` dict to each row; nothing is dropped.

    distill score --input runs/demo/traces.jsonl --output runs/demo/scored.jsonl --config recipes/demo/score.yaml

Rows keep their order and fields; `scores` gains one entry per configured scorer (entries already present for other
names are kept, so scorers can be added in later runs). Output is written atomically, and a rerun on the same input
gives a byte-identical file. Lines that are not JSON objects, or rows that are not trace rows (`distill.records`:
`"trace": "str"`, `"id": 3`, ...), cannot be scored or passed on: each is reported with its
line number and reason (log + the summary); `--strict` stops on them with exit status 1 before writing.
Also written (the stage contract, `distill.stage`): `<output stem>.config.yaml` (the resolved config) and
`<output stem>.summary.json` (rows, bad lines, per-scorer time, rows/s, not-applicable counts and value ranges).

score.yaml: `scorers` maps an output name to the scorer's parameters (null for none). The output name is the
scorer's registry name, or any name with `scorer: <registry name>` among the parameters, so one scorer can run twice
(e.g. two embedders).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from distill.io import BadLine, checked_rows, write_json_atomic, write_jsonl_atomic
from distill.records import trace_problems
from distill.stage import EXIT_DATA, all_failed_reason, contract_paths, reason_class
from distill.stage import summary as stage_summary

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
    rows, bad = [], []
    for line, item in checked_rows(config.input, trace_problems):  # the trace schema, as every stage checks it
        if isinstance(item, BadLine):
            log.warning("%s (line not scored; it is not passed on)", item)
            bad.append({"line": line, "reason": item.reason})
            if config.strict:
                print(f"distill score: {item} (--strict: stopping, nothing written)", file=sys.stderr)
                return 1
            continue
        rows.append(item)
    stats = score_rows(rows, scorers)
    write_jsonl_atomic(config.output, rows)
    config_path, summary_path = contract_paths(config.output)
    save_resolved_config(config_path, config)
    dropped = Counter(reason_class(b["reason"]) for b in bad)
    summary = stage_summary("score", len(rows) + len(bad), len(rows), time.time() - t0, dropped=dropped, problems=bad,
                            input=config.input, output=config.output, bad_lines=bad, scorers=stats)  # fmt: skip
    write_json_atomic(summary_path, summary)
    print(f"{config.input}: {len(rows)} rows scored by {', '.join(stats)} -> {config.output}")
    if bad:
        print(f"  {len(bad)} unreadable line(s) not passed on: " + ", ".join(str(b["line"]) for b in bad[:20]))
    if reason := all_failed_reason(len(rows) + len(bad), len(rows), dropped):
        print(f"distill score: every row failed: {reason} (e.g. {config.input}:{bad[0]['line']})", file=sys.stderr)
        return EXIT_DATA
    return 0


if __name__ == "__main__":
    from distill.cli import main as cli_main

    sys.exit(cli_main(["score", *sys.argv[1:]]))

"""`distill filter`: split scored rows into kept and rejected by the recipe's rules; every rejection says why.

    distill filter --input runs/demo/scored.jsonl --kept runs/demo/kept.jsonl --rejected runs/demo/rejected.jsonl \
        --config recipes/demo/filter.yaml

Rules, in order:
1. per-row checks, all evaluated on every row: teacher `status` in `reject_status` (failed / truncated), and each
   `thresholds` entry `{min, max, none}` on a score path (`length`, `embedding_gain.gain`; a None value passes unless
   `none: reject`, since None means "does not apply");
2. `dedup`: among rows that passed 1, one row per near-duplicate cluster (the best by `rank_by`);
3. `best_of_n`: among rows still standing, the best `n` per example `id` and `side` by `score`.
Selection steps only compare rows that passed the per-row checks, so a row's `rejected_by` lists every per-row check
it failed, plus the selection step that dropped it when it passed them all. Ties go to the earlier input row.

Outputs: kept rows unchanged, rejected rows + `rejected_by: [reason, ...]`, both in input order, kept + rejected =
every readable input row; written atomically, byte-identical on rerun. Next to them (`report_dir`, default the kept
file's directory): report.md, summary.json, plots/*.png, filter.config.yaml.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from distill.io import read_rows_reporting_bad, write_jsonl_atomic

log = logging.getLogger(__name__)


def _mapping(value, what: str) -> dict:
    value = json.loads(value) if isinstance(value, str) else value
    if value is not None and not isinstance(value, dict):
        raise ValueError(f"filter: `{what}` must be a mapping")
    return value or {}


@dataclass
class FilterConfig:
    input: str = field(metadata={"help": "Scored rows (.jsonl) written by `distill score`."})
    kept: str = field(metadata={"help": "Where kept rows go (.jsonl), unchanged, input order."})
    rejected: str = field(metadata={"help": "Where rejected rows go (.jsonl), with `rejected_by`, input order."})
    thresholds: dict | str | None = field(
        default=None,
        metadata={"help": "Score path (`name` or `name.key`) -> {min, max, none: pass|reject}; bounds inclusive."},
    )
    reject_status: list[str] = field(
        default_factory=lambda: ["failed", "truncated"],
        metadata={"help": "Teacher statuses rejected outright (reason `status: <status>`)."},
    )
    dedup: dict | str | None = field(
        default=None,
        metadata={"help": "{score: cluster score name (near_duplicate), rank_by: score path, higher_is_better, "
                  "scope: global | id}: keep one row per cluster (per cluster and example id with scope id); "
                  "null = no dedup."},
    )  # fmt: skip
    best_of_n: dict | str | None = field(
        default=None,
        metadata={"help": "{score: score path, n: rows kept per example id, higher_is_better}; null = keep all."},
    )
    report_dir: str | None = field(
        default=None, metadata={"help": "Where report.md, summary.json and plots/ go; default: the kept file's dir."}
    )
    report_examples: int = field(
        default=3, metadata={"help": "Examples in report.md: this many kept rows, and rejected rows per check."}
    )
    strict: bool = field(default=False, metadata={"help": "Exit 1 on the first unreadable input line."})

    def __post_init__(self):
        self.thresholds = _mapping(self.thresholds, "thresholds")
        self.dedup = _mapping(self.dedup, "dedup")
        self.best_of_n = _mapping(self.best_of_n, "best_of_n")
        for path, rule in self.thresholds.items():
            if not isinstance(rule, dict) or not set(rule) <= {"min", "max", "none"} or not rule:
                raise ValueError(f"filter: threshold {path!r} must be a mapping of min / max / none")
            if rule.get("none", "pass") not in ("pass", "reject"):
                raise ValueError(f"filter: threshold {path!r}: `none` must be pass or reject")
            lo, hi = rule.get("min"), rule.get("max")
            if lo is not None and hi is not None and lo > hi:
                raise ValueError(f"filter: threshold {path!r}: min {lo} > max {hi}")
        if self.dedup and not set(self.dedup) <= {"score", "rank_by", "higher_is_better", "scope"}:
            raise ValueError("filter: `dedup` takes score, rank_by, higher_is_better, scope")
        if self.dedup.get("scope", "global") not in ("global", "id"):
            raise ValueError("filter: dedup.scope must be global or id")
        if self.best_of_n:
            if not set(self.best_of_n) <= {"score", "n", "higher_is_better"} or "score" not in self.best_of_n:
                raise ValueError("filter: `best_of_n` takes score (required), n, higher_is_better")
            if int(self.best_of_n.get("n", 1)) < 1:
                raise ValueError("filter: best_of_n.n must be >= 1")
        if len({Path(p).resolve() for p in (self.input, self.kept, self.rejected)}) != 3:
            raise ValueError("filter: --input, --kept and --rejected must be three different files")


_MISSING = object()


def score_at(row: dict, path: str):
    """The score at `path` ('name' or 'name.key'); _MISSING when the row has no such score."""
    value = row.get("scores")
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def row_reasons(row: dict, config: FilterConfig) -> list[str]:
    """Every per-row check the row fails, as 'check: detail' strings (empty = passes)."""
    reasons = []
    if row.get("status") in config.reject_status:
        reasons.append(f"status: {row.get('status')}")
    for path, rule in config.thresholds.items():
        value = score_at(row, path)
        if value is None or value is _MISSING:
            if rule.get("none", "pass") == "reject":
                reasons.append(f"{path}: no value")
        elif not isinstance(value, (int, float)):
            reasons.append(f"{path}: not a number ({type(value).__name__})")
        elif rule.get("min") is not None and value < rule["min"]:
            reasons.append(f"{path}: {value:g} < min {rule['min']:g}")
        elif rule.get("max") is not None and value > rule["max"]:
            reasons.append(f"{path}: {value:g} > max {rule['max']:g}")
    return reasons


def _sort_key(row: dict, pos: int, path: str | None, higher: bool):
    """Best first: rows with a number at `path` by it (desc when `higher`), then rows without, then input order."""
    value = score_at(row, path) if path else None
    if not isinstance(value, (int, float)):
        return (1, 0.0, pos)
    return (0, -value if higher else value, pos)


def _label(row: dict) -> str:
    return f"{row.get('id')}#{row.get('sample_index', 0)}"


def select(rows: list[dict], reasons: list[list[str]], config: FilterConfig) -> None:
    """Apply dedup then best-of-n to rows without reasons, appending the selection reason to the losers in place."""
    if config.dedup:
        cluster, rank_by = config.dedup.get("score", "near_duplicate"), config.dedup.get("rank_by")
        rank_by = rank_by or config.best_of_n.get("score")
        higher = config.dedup.get("higher_is_better", True)
        per_id = config.dedup.get("scope", "global") == "id"
        groups: dict = {}
        for i, row in enumerate(rows):
            cid = score_at(row, cluster)
            if not reasons[i] and cid is not None and cid is not _MISSING:
                groups.setdefault((row.get("id"), row.get("side"), cid) if per_id else cid, []).append(i)
        for members in groups.values():
            order = sorted(members, key=lambda i: _sort_key(rows[i], i, rank_by, higher))
            for i in order[1:]:
                reasons[i].append(f"{cluster}: near duplicate of kept {_label(rows[order[0]])}")
    if config.best_of_n:
        path, n = config.best_of_n["score"], int(config.best_of_n.get("n", 1))
        higher = config.best_of_n.get("higher_is_better", True)
        groups = {}
        for i, row in enumerate(rows):
            if not reasons[i]:  # a query-side and a target-side trace of one example do not compete
                groups.setdefault((row.get("id"), row.get("side")), []).append(i)
        for members in groups.values():
            order = sorted(members, key=lambda i: _sort_key(rows[i], i, path, higher))
            for i in order[n:]:
                reasons[i].append(f"best_of_n: {path} below the best {n} of {len(order)} samples of this id")


def check_paths(rows: list[dict], config: FilterConfig) -> None:
    """Fail clearly when the recipe names a score no row has (a typo, or a scorer `score` did not run)."""
    paths = list(config.thresholds)
    paths += [p for p in (config.best_of_n.get("score"), config.dedup.get("rank_by")) if p]
    if config.dedup:
        paths.append(config.dedup.get("score", "near_duplicate"))
    for path in paths:
        if rows and all(score_at(r, path) is _MISSING for r in rows):
            have = sorted({k for r in rows for k in (r.get("scores") or {})})
            raise ValueError(f"filter: no row has score {path!r} (scores present: {', '.join(have) or 'none'})")


def main(config: FilterConfig) -> int:
    from distill.configs import save_resolved_config
    from distill.report import write_report

    t0 = time.time()
    try:
        rows, bad = read_rows_reporting_bad(config.input, config.strict)
    except ValueError as e:
        print(f"distill filter: {e}", file=sys.stderr)
        return 1
    try:
        check_paths(rows, config)
    except ValueError as e:
        print(f"distill filter: {e}", file=sys.stderr)
        return 2
    reasons = [row_reasons(r, config) for r in rows]
    select(rows, reasons, config)
    # A stale `rejected_by` (re-filtering an earlier rejected file) must not ride along on a kept row.
    kept = [
        {k: v for k, v in r.items() if k != "rejected_by"} for r, why in zip(rows, reasons, strict=False) if not why
    ]
    rejected = [{**r, "rejected_by": why} for r, why in zip(rows, reasons, strict=False) if why]
    write_jsonl_atomic(config.kept, kept)
    write_jsonl_atomic(config.rejected, rejected)
    report_dir = Path(config.report_dir or Path(config.kept).parent)
    save_resolved_config(report_dir / "filter.config.yaml", config)
    summary = write_report(report_dir, rows, reasons, config, bad, time.time() - t0)
    print(f"{config.input}: {len(rows)} rows -> {len(kept)} kept, {len(rejected)} rejected; report: {report_dir}")
    for reason, n in summary["rejections_by_check"].items():
        print(f"  {n:6d}  {reason}")
    return 0


if __name__ == "__main__":
    from distill.cli import main as cli_main

    sys.exit(cli_main(["filter", *sys.argv[1:]]))

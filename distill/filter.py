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
every readable, well-formed input row (`distill.records.scored_problems`: a row without `scores` is reported by line);
written atomically, byte-identical on rerun. Beside the kept file (the stage contract): `kept.summary.json` (counts,
rejections and keep rates by check, task and dataset, score ranges) and `kept.config.yaml`; in `report_dir` (default
the kept file's directory): report.md and plots/*.png.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from pathlib import Path

from distill.filter_config import FilterConfig
from distill.io import BadRow, checked_rows, write_jsonl_atomic
from distill.records import scored_problems
from distill.stage import DataError, Paths, Stage, StageError, every_row_dropped, reason_class
from distill.stage import summary as stage_summary

log = logging.getLogger(__name__)


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
            if rule.none == "reject":
                reasons.append(f"{path}: no value")
        elif not isinstance(value, (int, float)):
            reasons.append(f"{path}: not a number ({type(value).__name__})")
        elif rule.min is not None and value < rule.min:
            reasons.append(f"{path}: {value:g} < min {rule.min:g}")
        elif rule.max is not None and value > rule.max:
            reasons.append(f"{path}: {value:g} > max {rule.max:g}")
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
    if config.dedup is not None:
        cluster, rank_by = config.dedup.score, config.dedup.rank_by
        rank_by = rank_by or (config.best_of_n.score if config.best_of_n else None)
        higher = config.dedup.higher_is_better
        per_id = config.dedup.scope == "id"
        groups: dict = {}
        for i, row in enumerate(rows):
            cid = score_at(row, cluster)
            if not reasons[i] and cid is not None and cid is not _MISSING:
                groups.setdefault((row.get("id"), row.get("side"), cid) if per_id else cid, []).append(i)
        for members in groups.values():
            order = sorted(members, key=lambda i: _sort_key(rows[i], i, rank_by, higher))
            for i in order[1:]:
                reasons[i].append(f"{cluster}: near duplicate of kept {_label(rows[order[0]])}")
    if config.best_of_n is not None:
        path, n = config.best_of_n.score, config.best_of_n.n
        higher = config.best_of_n.higher_is_better
        groups = {}
        for i, row in enumerate(rows):
            if not reasons[i]:  # a query-side and a target-side trace of one example do not compete
                groups.setdefault((row.get("id"), row.get("side")), []).append(i)
        for members in groups.values():
            order = sorted(members, key=lambda i: _sort_key(rows[i], i, path, higher))
            for i in order[n:]:
                reasons[i].append(f"best_of_n: {path} below the best {n} of {len(order)} samples of this id")


SLIM_KEYS = ("id", "side", "sample_index", "task", "dataset", "status", "scores")
SHARED_KEYS = frozenset({"side", "task", "dataset", "status"})  # few distinct values over millions of rows


def _shared(key: str, value):
    """One string object per distinct task / dataset / status / side (sys.intern) instead of one per row."""
    return sys.intern(value) if key in SHARED_KEYS and isinstance(value, str) else value


def _report_candidates(reasons: list[list[str]], k: int) -> set[int]:
    """Rows the report may quote: the first k kept, and the first k rejected by each check (a superset of its pick)."""
    from distill.report import check_of

    out, per_check, kept = set(), Counter(), 0
    limit = k * (len({check_of(x) for why in reasons for x in why}) + 1)  # the report skips rows shown before
    for i, why in enumerate(reasons):
        if not why and kept < k:
            out.add(i)
            kept += 1
        for check in {check_of(x) for x in why}:
            if per_check[check] < limit:
                per_check[check] += 1
                out.add(i)
    return out


def check_paths(rows: list[dict], config: FilterConfig) -> None:
    """Fail clearly when the recipe names a score no row has (a typo, or a scorer `score` did not run)."""
    paths = list(config.thresholds)
    paths += [config.best_of_n.score] if config.best_of_n else []
    paths += [p for p in (config.dedup.rank_by, config.dedup.score) if p] if config.dedup else []
    for path in paths:
        if rows and all(score_at(r, path) is _MISSING for r in rows):
            have = sorted({k for r in rows for k in (r.get("scores") or {})})
            raise ValueError(f"filter: no row has score {path!r} (scores present: {', '.join(have) or 'none'})")


def run(config: FilterConfig) -> dict:
    from distill.report import check_of, write_report

    t0 = time.time()
    # Pass 1 keeps a slim view of each row (ids, status, scores: what the checks, selection and report read); the
    # outputs are then streamed from the input in passes 2 and 3, so memory does not hold the traces and examples.
    rows, bad = [], []
    for line, item in checked_rows(config.input, scored_problems):  # a row without `scores` is reported, never kept
        if isinstance(item, BadRow):
            if config.strict:
                raise DataError(f"{item} (--strict: stopping, nothing written)")
            log.warning("%s (not passed on)", item)
            bad.append({"line": line, "reason": item.reason})
            continue
        rows.append({k: _shared(k, item[k]) for k in SLIM_KEYS if k in item})
    try:
        check_paths(rows, config)
    except ValueError as e:
        raise StageError(str(e)) from None
    reasons = [row_reasons(r, config) for r in rows]
    select(rows, reasons, config)
    shown = _report_candidates(reasons, config.report_examples)
    full: dict[int, dict] = {}

    def out_rows(keep: bool):
        for i, row in enumerate(r for _, r in checked_rows(config.input, scored_problems) if not isinstance(r, BadRow)):
            if i in shown:
                full[i] = row
            if (not reasons[i]) == keep:
                # A stale `rejected_by` (re-filtering an earlier rejected file) must not ride along on a kept row.
                yield (
                    {k: v for k, v in row.items() if k != "rejected_by"} if keep else {**row, "rejected_by": reasons[i]}
                )

    n_kept = write_jsonl_atomic(config.kept, out_rows(True))
    n_rejected = write_jsonl_atomic(config.rejected, out_rows(False))
    for i, row in full.items():  # the report quotes these rows' traces
        rows[i] = row
    report_dir = Path(config.report_dir or Path(config.kept).parent)
    report = write_report(report_dir, rows, reasons, config, bad, time.time() - t0)
    by_check = Counter(check_of(x) for why in reasons for x in why)
    dropped = Counter(reason_class(b["reason"]) for b in bad) + by_check
    summary = stage_summary("filter", len(rows) + len(bad), n_kept, time.time() - t0, dropped=dropped,
                            problems=bad, **{k: v for k, v in report.items() if k not in ("rows_in", "seconds")})  # fmt: skip
    print(f"{config.input}: {len(rows)} rows -> {n_kept} kept, {n_rejected} rejected; report: {report_dir}")
    for reason, n in summary["rejections_by_check"].items():
        print(f"  {n:6d}  {reason}")
    return summary


STAGE = Stage(
    "filter",
    (FilterConfig,),
    run,
    output="kept",
    writes="--rejected (rows with `rejected_by`), report.md + plots in --report_dir",
    paths=lambda c: Paths(read_files=[c.input], writes=[c.kept, c.rejected], write_dirs=[c.report_dir]),
    verdict=every_row_dropped,
)
main = STAGE.main


if __name__ == "__main__":
    from distill.cli import main as cli_main

    sys.exit(cli_main(["filter", *sys.argv[1:]]))

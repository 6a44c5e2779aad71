"""`distill filter`'s configuration: the flags and their nested sections (thresholds per score, near-duplicate dedup,
best-of-n), each a typed dataclass checked on construction.

    from distill.filter_config import FilterConfig
    FilterConfig(input="scored.jsonl", kept="kept.jsonl", rejected="rejected.jsonl", thresholds={"length": {"max": 900}})
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from distill.configs import ConfigError, typed


def _mapping(value, what: str) -> dict:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise ConfigError(f"filter: {what}: not valid JSON: {e}") from None
    if value is not None and not isinstance(value, dict):
        raise ConfigError(f"filter: `{what}` must be a mapping")
    return value or {}


@dataclass
class Threshold:
    """One `thresholds` entry: bounds on a score path (inclusive); `none`: what a row without a value gets."""

    min: float | None = field(default=None, metadata={"help": "Lowest value kept; None: no lower bound."})
    max: float | None = field(default=None, metadata={"help": "Highest value kept; None: no upper bound."})
    none: Literal["pass", "reject"] = field(
        default="pass", metadata={"help": "A None / missing value: pass or reject."}
    )


@dataclass
class Dedup:
    """`dedup`: keep one row per near-duplicate cluster."""

    score: str = field(default="near_duplicate", metadata={"help": "The score holding the cluster id."})
    rank_by: str | None = field(
        default=None, metadata={"help": "Score path that picks the row kept; None: best_of_n's."}
    )
    higher_is_better: bool = field(default=True, metadata={"help": "rank_by order."})
    scope: Literal["global", "id"] = field(default="global", metadata={"help": "id: clusters within one example id."})


@dataclass
class BestOfN:
    """`best_of_n`: the best `n` rows per example id by `score`."""

    score: str = field(metadata={"help": "Score path to rank by (required)."})
    n: int = field(default=1, metadata={"help": "Rows kept per example id (>= 1)."})
    higher_is_better: bool = field(default=True, metadata={"help": "score order."})


@dataclass
class FilterConfig:
    input: str = field(metadata={"help": "Scored rows (.jsonl) written by `distill score`."})
    kept: str = field(metadata={"help": "Where kept rows go (.jsonl), unchanged, input order."})
    rejected: str = field(metadata={"help": "Where rejected rows go (.jsonl), with `rejected_by`, input order."})
    thresholds: dict | str | None = field(
        default=None,
        metadata={"help": "Score path (`name` or `name.key`) -> {min, max, none: pass|reject} (a `Threshold`); "
                  "bounds inclusive."},
    )  # fmt: skip
    reject_status: list[str] = field(
        default_factory=lambda: ["failed", "truncated"],
        metadata={"help": "Teacher statuses rejected outright (reason `status: <status>`)."},
    )
    dedup: dict | str | None = field(
        default=None,
        metadata={"help": "{score: cluster score name (near_duplicate), rank_by: score path, higher_is_better, "
                  "scope: global | id} (a `Dedup`): keep one row per cluster (per cluster and example id with "
                  "scope id); null = no dedup."},
    )  # fmt: skip
    best_of_n: dict | str | None = field(
        default=None,
        metadata={
            "help": "{score: score path, n: rows kept per example id, higher_is_better} (a `BestOfN`); null = keep all."
        },
    )
    report_dir: str | None = field(
        default=None, metadata={"help": "Where report.md, summary.json and plots/ go; default: the kept file's dir."}
    )
    report_examples: int = field(
        default=3, metadata={"help": "Examples in report.md: this many kept rows, and rejected rows per check."}
    )
    strict: bool = field(default=False, metadata={"help": "Exit 1 on the first unreadable input line."})

    def __post_init__(self):
        # nested sections become typed dataclasses, every key and type checked (distill.configs.typed)
        thresholds = {}
        for path, rule in _mapping(self.thresholds, "thresholds").items():
            if not rule:
                raise ConfigError(f"filter: thresholds: {path}: give min, max or none")
            rule = thresholds[path] = typed(Threshold, rule, f"filter: thresholds: {path}")
            if rule.min is not None and rule.max is not None and rule.min > rule.max:
                raise ConfigError(f"filter: threshold {path!r}: min {rule.min:g} > max {rule.max:g}")
        self.thresholds = thresholds
        dedup, best_of_n = _mapping(self.dedup, "dedup"), _mapping(self.best_of_n, "best_of_n")
        self.dedup = typed(Dedup, dedup, "filter: dedup") if dedup else None
        self.best_of_n = typed(BestOfN, best_of_n, "filter: best_of_n") if best_of_n else None
        if self.best_of_n is not None and self.best_of_n.n < 1:
            raise ConfigError("filter: best_of_n.n must be >= 1")
        if len({Path(p).resolve() for p in (self.input, self.kept, self.rejected)}) != 3:
            raise ValueError("filter: --input, --kept and --rejected must be three different files")

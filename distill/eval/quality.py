"""Trace quality per trace set, overall and per task and dataset: the scorers `score` runs, summarised side by side.

    from distill.eval.quality import quality
    table = quality(sets, reference="teacher")   # sets: {name: TraceSet}; see distill.eval.inputs

Per row, with the same definitions as `distill score` (built from the scorer registry): `format` (think tags well
formed), `truncated` (stopped on the token limit), `answer_match` (final answer vs the gold `answer`, vqa and
classification; the matching lives in distill.scoring.answers), length (words of the raw trace, or tokens with
`length_tokenizer`). Rates are over every row of the set, so a failed row counts as neither well formed nor correct:
a student that crashes on a query should not look better for it. Length is averaged over rows that have a trace.
Agreement: per id, one trace per set (lowest sample_index), answer keys (`answers.answer_key`, given the gold answer
so paraphrases of the right answer agree) equal to the reference set's; over ids with a gold-answer task where the
reference has an answer.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict

from distill.records import TASKS_WITH_ANSWER
from distill.scoring import build_scorer
from distill.scoring.answers import answer_key
from distill.scoring.registry import trace_text


def _rate(values: list) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def _row_values(rows: list[dict], require_think: bool, length_tokenizer: str | None) -> list[dict]:
    fmt = build_scorer("format", require_think=require_think)(rows)
    trunc = build_scorer("truncated")(rows)
    match = build_scorer("answer_match")(rows)
    if length_tokenizer:
        lengths = build_scorer("length", tokenizer=length_tokenizer)(rows)
    else:
        lengths = [None if (t := trace_text(r, "raw")) is None else len(t.split()) for r in rows]
    out = []
    for row, f, t, m, n in zip(rows, fmt, trunc, match, lengths, strict=True):
        gold = row.get("task") in TASKS_WITH_ANSWER and bool(row.get("answer"))
        out.append({
            "format": f == 1.0, "truncated": t == 1.0, "failed": row.get("status") == "failed",
            "length": n, "correct": (m == 1.0) if gold else None,
        })  # fmt: skip
    return out


def _stats(values: list[dict], agree: list[bool]) -> dict:
    lengths = [v["length"] for v in values if v["length"] is not None]
    correct = [v["correct"] for v in values if v["correct"] is not None]
    return {
        "rows": len(values),
        "format_rate": _rate([v["format"] for v in values]),
        "truncation_rate": _rate([v["truncated"] for v in values]),
        "failed_rate": _rate([v["failed"] for v in values]),
        "length_mean": round(statistics.fmean(lengths), 2) if lengths else None,
        "length_median": statistics.median(lengths) if lengths else None,
        "accuracy": _rate(correct),
        "accuracy_rows": len(correct),
        "agreement": _rate(agree),
        "agreement_ids": len(agree),
    }


def _agreement(s, ref) -> dict[str, bool]:
    """id -> does this set's answer equal the reference's (ids with a gold-answer task and a reference answer)."""
    mine, theirs = s.first_per_id(), ref.first_per_id()
    out = {}
    for id_, j in theirs.items():
        r = ref.rows[j]
        final_ref = trace_text(r, "final")
        if r.get("task") not in TASKS_WITH_ANSWER or not (final_ref or "").strip() or id_ not in mine:
            continue
        query = (r.get("query") or {}).get("text") or ""
        final = trace_text(s.rows[mine[id_]], "final")
        gold = r.get("answer") or None  # with the gold, two paraphrases of the right answer agree
        out[id_] = bool((final or "").strip()) and answer_key(final, query, gold) == answer_key(final_ref, query, gold)
    return out


def _writers(rows: list[dict]) -> dict[str, int]:
    """Who wrote the traces: `teacher.model` (generate's block; `reason` writes the student's there too, with its
    `role` and `backend`), e.g. {"runs/demo/train/model (student, hf)": 40}."""

    def who(row: dict) -> str:
        block = row.get("teacher") or {}
        extra = ", ".join(str(block[k]) for k in ("role", "backend") if block.get(k))
        return f"{block.get('model')}" + (f" ({extra})" if extra else "")

    return dict(Counter(who(r) for r in rows).most_common())


def quality(sets: dict, reference: str | None, require_think: bool = True, length_tokenizer: str | None = None) -> dict:
    """{set name: {"file", "writers", "length_unit", "all": stats, "by_task": {task: stats}, "by_dataset": {...}}}."""
    unit = f"tokens of {length_tokenizer}" if length_tokenizer else "words"
    out = {}
    for name, s in sets.items():
        values = _row_values(s.rows, require_think, length_tokenizer)
        agree = _agreement(s, sets[reference]) if reference and name != reference else {}
        first = s.first_per_id()
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, row in enumerate(s.rows):
            groups[("all", "")].append(i)
            groups[("by_task", str(row.get("task")))].append(i)
            groups[("by_dataset", str(row.get("dataset")))].append(i)
        entry = {"file": s.path, "writers": _writers(s.rows), "length_unit": unit,
                 "target_side_rows_skipped": s.target_side_rows, "by_task": {}, "by_dataset": {}}  # fmt: skip
        for (kind, key), idx in sorted(groups.items()):
            ids = {s.rows[i]["id"] for i in idx if first[s.rows[i]["id"]] == i}
            stats = _stats([values[i] for i in idx], [agree[i] for i in ids if i in agree] if agree else [])
            if kind == "all":
                entry["all"] = stats
            else:
                entry[kind][key] = stats
        out[name] = entry
    return out

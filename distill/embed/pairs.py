"""Training pairs for `distill embed`: example rows + one trace set -> per-dataset (anchor, positive, negative_1..k)
rows of items, exactly as `distill eval` and `embedding_gain` build them (`distill.embed_text`).

    examples = load_examples_checked(["data/demo/train"])
    traces = load_traces("teacher", "runs/demo/kept.jsonl", examples)
    pairs, stats = build_pairs(examples, traces, part="full", dropout=0.0, seed=0, num_negatives=1, uses_images=False)

- anchor: the query (instruction + query text [+ images]), with the row's query-side trace appended;
- positive: the positive with the target instruction, with the row's target-side trace (`side: target`) appended;
- negative_i: the row's own hard negatives (MMEB `neg_*`, our `negatives`), with the target instruction; a dataset
  whose rows carry k hard negatives gets k negative columns (at most `num_negatives`), and a row with fewer is topped
  up with the positives of the next rows of its dataset (deterministic, as embedding_gain tops up its candidates):
  the multiple-negatives losses need the same columns in every row of a dataset.
One trace per example id: the row with the lowest `sample_index` (as `distill eval` picks). `dropout` trains that
fraction of pairs without their traces, chosen by a hash of (seed, id), so a resumed run sees the same pairs.

Every problem is an `InputError` line naming the file, the line and the reason: an unreadable or malformed example
(an example without a positive among them), a trace id that matches no example, a trace file with no usable rows.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from distill.embed_text import query_item, target_item, trace_for_embedding, with_trace
from distill.io import listed
from distill.stage import StageError


class InputError(StageError):
    """Bad input for `distill embed` (exit 2); str() lists one `file:line: reason` per problem."""


def raise_problems(problems: list[str], what: str) -> None:
    """InputError on one line (`what: problem; problem; ... and N more`) when there are problems."""
    if problems:
        raise InputError(f"{what}: {listed(problems, '; ')}")


@dataclass
class Example:
    row: dict
    file: str
    line: int


def load_examples_checked(paths: list[str], subset: str | None = None, image_root: str = ".") -> list[Example]:
    """Every example row of `paths` (MMEB-train, MMEB eval or ours, via `distill.data.mmeb.load_examples`; embedded
    page images referenced relative to `image_root`); InputError listing each bad row by file and line."""
    from distill.data.mmeb import read_inputs

    problems = []
    out = [Example(row, f, line) for f, line, row in read_inputs(paths, subset, "query", image_root, problems)]
    raise_problems(problems, "examples cannot be trained on")
    if not out:
        raise InputError(f"no example rows in {', '.join(paths)}")
    return out


@dataclass
class TraceSet:
    """One trace file's usable traces: (id, side) -> (sample_index, trace text), and who wrote them."""

    name: str
    path: str
    texts: dict[tuple[str, str], tuple[int, str | None]] = field(default_factory=dict)
    writers: dict[str, int] = field(default_factory=dict)  # teacher model / student checkpoint -> rows
    rows: int = 0


def _writer(row: dict) -> str:
    t = row.get("teacher") if isinstance(row.get("teacher"), dict) else {}
    role = "student" if t.get("role") == "student" else "teacher"
    return f"{role}: {t.get('checkpoint') or t.get('model') or 'unknown'}"


def load_traces(name: str, path: str, examples: list[Example], part: str) -> TraceSet:
    """The trace set in `path`; InputError naming file and line for each row `eval` could not use either (unreadable,
    no id, a field of the wrong type, an unknown side) and each id that matches no example; InputError when the file
    holds no trace rows at all."""
    from distill.eval.inputs import read_trace_rows

    if not Path(path).is_file():
        raise InputError(f"trace set {name!r}: {path}: no such file")
    ids = {e.row["id"] for e in examples}
    out, problems = TraceSet(name, path), []
    for line, row, side in read_trace_rows(path, problems):  # eval's reader: the same rows are usable in both
        if row["id"] not in ids:
            problems.append(f"{path}:{line}: trace id {row['id']!r} matches no example of the input")
            continue
        index = row.get("sample_index") or 0
        out.rows += 1
        key = (row["id"], side)
        if key not in out.texts or index < out.texts[key][0]:  # the lowest sample_index, as `distill eval` picks
            out.texts[key] = (index, trace_for_embedding(row, part))
        writer = _writer(row)
        out.writers[writer] = out.writers.get(writer, 0) + 1
    raise_problems(problems, f"trace set {name!r} ({path}) has unusable rows")
    if not out.rows:
        raise InputError(f"trace set {name!r}: {path}: empty (no trace rows)")
    return out


def dropped(seed: int, id_: str, rate: float) -> bool:
    """Whether pair `id_` trains without its trace: a stable hash of (seed, id) below `rate`."""
    if rate <= 0:
        return False
    digest = hashlib.sha256(f"{seed}:{id_}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < rate


def build_pairs(examples: list[Example], traces: TraceSet | None, *, dropout: float, seed: int, num_negatives: int,
                uses_images: bool, missing_trace: str = "no_trace") -> tuple[dict[str, list[list]], dict]:  # fmt: skip
    """({dataset: [[anchor, positive, negative_1..k] items per pair]}, stats). See the module docstring.

    `missing_trace` (a trace set is given, an example has no usable trace of either side in it): no_trace (train the
    pair without one) | drop (leave the pair out) | error (InputError naming the example's file and line)."""
    by_ds: dict[str, list[Example]] = defaultdict(list)
    for e in examples:
        by_ds[e.row["dataset"]].append(e)
    stats = {"pairs": 0, "with_query_trace": 0, "with_target_trace": 0, "trace_dropout": 0, "no_trace": 0,
             "dropped_no_trace": 0, "dropped_unreadable_positive": 0, "dropped_indistinguishable": 0,
             "dropped_identical_queries": 0, "hard_negatives": 0, "negatives_topped_up": 0, "datasets": {}}  # fmt: skip
    out, problems = {}, []
    for ds, exs in sorted(by_ds.items()):
        rows = []
        positives = [target_item(e.row, e.row["positive"], uses_images) for e in exs]
        keep = [i for i, p in enumerate(positives) if p is not None]  # an image-only positive has no text to read
        stats["dropped_unreadable_positive"] += len(exs) - len(keep)
        exs, positives = [exs[i] for i in keep], [positives[i] for i in keep]
        distinct = len(set(positives))
        if distinct < 2:  # every positive reads the same to this embedder: nothing to contrast (eval leaves these out)
            stats["dropped_indistinguishable"] += len(exs)
            continue
        own = [
            [n for n in (target_item(e.row, s, uses_images) for s in e.row.get("negatives") or []) if n] for e in exs
        ]
        k = min(num_negatives, max((len(n) for n in own), default=0), distinct - 1)
        for i, e in enumerate(exs):
            q, pos = query_item(e.row, uses_images), positives[i]
            if traces is not None:
                q_trace = traces.texts.get((e.row["id"], "query"), (0, None))[1]
                t_trace = traces.texts.get((e.row["id"], "target"), (0, None))[1]
                if dropped(seed, e.row["id"], dropout):
                    q_trace = t_trace = None
                    stats["trace_dropout"] += 1
                elif not ((q_trace or "").strip() or (t_trace or "").strip()):
                    if missing_trace == "error":
                        problems.append(f"{e.file}:{e.line}: example {e.row['id']!r} has no usable trace in "
                                        f"{traces.path}")  # fmt: skip
                        continue
                    if missing_trace == "drop":
                        stats["dropped_no_trace"] += 1
                        continue
                    stats["no_trace"] += 1
                if q_trace and q_trace.strip():
                    q = with_trace(q, q_trace.strip())
                    stats["with_query_trace"] += 1
                if t_trace and t_trace.strip():
                    pos = with_trace(pos, t_trace)
                    stats["with_target_trace"] += 1
            negs = [n for n in own[i] if n != positives[i]][:k]
            stats["hard_negatives"] += len(negs)
            for j in range(1, len(exs)):  # top up: the next rows' positives (never this row's own; distinct - 1 >= k)
                if len(negs) >= k:
                    break
                cand = positives[(i + j) % len(exs)]
                if cand != positives[i] and cand not in negs:
                    negs.append(cand)
                    stats["negatives_topped_up"] += 1
            rows.append([q, pos, *negs])
        if rows and len({r[0] for r in rows}) < 2:
            # every query reads the same to this embedder (image queries to a text model, no trace): nothing to
            # contrast, and the no-duplicates sampler would make one-pair batches whose loss is 0 (wasted steps)
            stats["dropped_identical_queries"] += len(rows)
            continue
        if rows:
            out[ds] = rows
            stats["datasets"][ds] = {"pairs": len(rows), "negative_columns": k}
            stats["pairs"] += len(rows)
    raise_problems(problems, "pairs cannot be built")
    if not out:
        left_out = {k: v for k, v in stats.items() if k.startswith("dropped") and v}
        raise InputError(f"no training pairs: every example was left out ({left_out})")
    return out, stats

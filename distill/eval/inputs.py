"""What `distill eval` reads, checked up front: named trace files and MMEB eval rows. Every problem is collected and
raised as one `InputError` whose lines name the file, the line and the reason, so a bad input never ends in a traceback.

    sets = load_trace_sets({"teacher": "runs/x/teacher.jsonl", "student": "runs/x/student.jsonl"})
    shared = check_same_ids(sets, reference="teacher", on_missing="error")
    rows = load_eval_rows(["data/demo/eval"]);  check_images(rows, "data/demo")
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from distill.data.mmeb import read_inputs
from distill.io import BadRow, iter_jsonl, listed
from distill.records import example_problems, trace_side


class InputError(ValueError):
    """Bad input for `distill eval`; str() is one line per problem (`file:line: reason`)."""


def _raise(problems: list[str], what: str) -> None:
    if problems:
        raise InputError(f"{what}:\n  " + listed(problems, "\n  "))


@dataclass
class TraceSet:
    """One named trace file: its rows (any sample count per id) and the 1-based line of each row."""

    name: str
    path: str
    rows: list[dict] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    target_side_rows: int = 0  # rows about the target side (`side: target`), not evaluated: eval reads query traces

    def first_per_id(self) -> dict[str, int]:
        """id -> index of its row with the lowest sample_index: the one trace per id that agreement and retrieval use
        (every set is compared on the same footing even when the teacher wrote 2 samples and the student 1)."""
        best: dict[str, int] = {}
        for i, row in enumerate(self.rows):
            j = best.get(row["id"])
            if j is None or (row.get("sample_index") or 0) < (self.rows[j].get("sample_index") or 0):
                best[row["id"]] = i
        return best

    def line_of(self, id_: str) -> int:
        return self.lines[self.first_per_id()[id_]]

    def restrict(self, ids: set[str]) -> TraceSet:
        keep = [i for i, r in enumerate(self.rows) if r["id"] in ids]
        rows, lines = [self.rows[i] for i in keep], [self.lines[i] for i in keep]
        return TraceSet(self.name, self.path, rows, lines, self.target_side_rows)


def _trace_row_problem(row: dict) -> str | None:
    """A field of the wrong type that the quality and retrieval code would trip over; None when usable."""
    if not isinstance(row.get("sample_index", 0), int) or isinstance(row.get("sample_index"), bool):
        return "field 'sample_index' must be an integer"
    for key in ("trace", "query", "teacher", "usage"):
        if row.get(key) is not None and not isinstance(row[key], dict):
            return f"field '{key}' must be an object"
    return None


def read_trace_rows(path: str, problems: list[str]) -> Iterator[tuple[int, dict, str]]:
    """(line, row, side) for each usable row of a trace file (`eval`'s trace sets, `embed`'s `--traces`); each other
    row (unparsable, without an id, a field of the wrong type, an unknown side) goes to `problems` as `file:line: why`."""
    for line, row in iter_jsonl(path):
        if isinstance(row, BadRow):
            problems.append(str(row))
            continue
        if not isinstance(row.get("id"), str) or not row["id"]:
            problems.append(f"{path}:{line}: missing field 'id'")
            continue
        if shape := _trace_row_problem(row):
            problems.append(f"{path}:{line}: {shape}")
            continue
        try:
            side = trace_side(row)
        except ValueError as e:
            problems.append(f"{path}:{line}: {e}")
            continue
        yield line, row, side


def load_trace_set(name: str, path: str) -> TraceSet:
    """Read one trace file; InputError lists unreadable lines, rows without an id and repeated (id, sample_index)."""
    if not Path(path).is_file():
        raise InputError(f"trace set {name!r}: {path}: no such file")
    out, problems, seen = TraceSet(name, path), [], {}
    for line, row, side in read_trace_rows(path, problems):
        if side == "target":
            out.target_side_rows += 1
            continue
        key = (row["id"], row.get("sample_index") or 0)
        if key in seen:
            problems.append(f"{path}:{line}: id {key[0]!r} sample {key[1]} repeats line {seen[key]}")
            continue
        seen[key] = line
        out.rows.append(row)
        out.lines.append(line)
    _raise(problems, f"trace set {name!r} ({path}) has unreadable rows")
    if not out.rows:
        raise InputError(f"trace set {name!r}: {path}: no query-side trace rows")
    return out


def load_trace_sets(paths: dict[str, str]) -> dict[str, TraceSet]:
    return {name: load_trace_set(name, path) for name, path in paths.items()}


def check_same_ids(sets: dict[str, TraceSet], reference: str, on_missing: str = "error") -> set[str]:
    """The ids every set has. With on_missing 'error', InputError when any set lacks an id another has, naming the
    set, its file and each id with the file and line where the other set has it."""
    ids = {name: set(s.first_per_id()) for name, s in sets.items()}
    shared = set.intersection(*ids.values())
    if on_missing == "intersect" or all(v == shared for v in ids.values()):
        return shared
    problems = []
    ref = sets[reference]
    for name, s in sets.items():
        if name == reference:
            continue
        for lacking, holder in ((s, ref), (ref, s)):  # each gap against the reference, both ways
            missing = sorted(ids[holder.name] - ids[lacking.name])
            if missing:
                listed = ", ".join(f"{i} ({holder.path}:{holder.line_of(i)})" for i in missing[:5])
                more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
                problems.append(f"{lacking.name} ({lacking.path}) lacks {len(missing)} id(s) that {holder.name} "
                                f"has: {listed}{more}")  # fmt: skip
    _raise(problems + ["(--on_missing intersect evaluates only the ids every set shares)"],
           "trace sets cover different ids")  # fmt: skip
    return shared


@dataclass
class EvalRow:
    """An MMEB eval row as an example (positive = candidate 0, negatives = the rest, in order) and where it came from."""

    file: str
    line: int
    example: dict

    @property
    def candidates(self) -> list[dict]:
        return [self.example["positive"], *self.example.get("negatives", [])]

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


def load_eval_rows(paths: list[str], subset: str | None = None, image_root: str = ".") -> list[EvalRow]:
    """MMEB eval rows (or example rows with negatives) from files or directories of per-subset files (the stem names
    the subset). InputError lists bad rows and rows with fewer than 2 candidates, each with file and line."""
    rows, problems = [], []
    for f, line, item in read_inputs(paths, subset, "eval", image_root, problems):  # MMEB-V2's candidate pools
        if bad := example_problems(item):  # rows already in our schema are passed through unchecked
            problems.append(f"{f}:{line}: " + "; ".join(bad))
            continue
        row = EvalRow(f, line, item)
        if len(row.candidates) < 2:
            problems.append(f"{f}:{line}: row {item['id']!r} has {len(row.candidates)} candidate(s); ranking "
                            "needs the positive and at least one other (tgt_text, positive first)")  # fmt: skip
            continue
        rel = item.get("relevance")
        if rel is not None and (not isinstance(rel, list) or len(rel) != len(row.candidates)
                                or not all(isinstance(r, int) and r >= 0 for r in rel)):  # fmt: skip
            problems.append(f"{f}:{line}: 'relevance' must list one grade (int >= 0) per candidate "
                            f"({len(row.candidates)})")  # fmt: skip
            continue
        rows.append(row)
    _raise(problems, "eval rows cannot be ranked")
    if not rows:
        raise InputError(f"no eval rows in {', '.join(paths)}")
    return rows


def _check_visual(image_root: str, entry: str) -> None:
    """Open an image, or every sampled frame of a `video:` entry, as the VLM embedder will; raises ImageError."""
    from distill.images import check_ref
    from distill.scoring.embedders import VIDEO

    if not entry.startswith(VIDEO):
        check_ref(image_root, entry)
        return
    from distill.video import open_frame, sample_frames

    for ref in sample_frames(image_root, entry[len(VIDEO) :]):
        open_frame(image_root, ref).close()


def check_images(rows: list[EvalRow], image_root: str) -> None:
    """InputError naming file, line and reason for every row referencing an image or video that cannot be opened;
    each distinct image (video) is opened once."""
    from distill.embed_text import visuals
    from distill.images import ImageError

    status: dict[str, str | None] = {}
    problems = []
    for row in rows:
        for entry in [v for s in (row.example["query"], *row.candidates) for v in visuals(s)]:
            if entry not in status:
                try:
                    _check_visual(image_root, entry)
                    status[entry] = None
                except ImageError as e:  # VideoError is one too
                    status[entry] = e.reason
            if status[entry] is not None:
                what = "video " + entry.split(":", 1)[1] if entry.startswith("video:") else f"image {entry}"
                problems.append(f"{row.where}: unreadable {what}: {status[entry]}")
    _raise(problems, f"eval rows reference unreadable images or videos (image_root {image_root})")


def load_target_traces(path: str, part: str) -> dict[tuple, str]:
    """`distill.eval.retrieval.target_key` -> the trace text (as `part` says) of the target-side trace rows of `path`
    (one per target: the lowest sample_index with a usable trace; failed rows are skipped). InputError names unreadable
    lines and query-side rows (a query trace set given as target traces) by file and line."""
    from distill.embed_text import trace_for_embedding
    from distill.eval.retrieval import target_key

    if not Path(path).is_file():
        raise InputError(f"--target_traces {path}: no such file")
    best: dict[tuple, tuple[int, str]] = {}
    problems = []
    for line, row in iter_jsonl(path):
        if isinstance(row, BadRow):
            problems.append(f"{path}:{line}: {row.reason}")
            continue
        try:
            side = trace_side(row)
        except ValueError as e:
            side = str(e)
        if side != "target" or not isinstance(row.get("positive"), dict):
            problems.append(f"{path}:{line}: not a target-side trace row (side {side!r}); make them with "
                            "`distill generate --side target` or the generate_target stage")  # fmt: skip
            continue
        trace = trace_for_embedding(row, part)
        if not trace or not trace.strip():
            continue
        key, index = target_key(row.get("dataset"), row["positive"]), row.get("sample_index") or 0
        if key not in best or index < best[key][0]:
            best[key] = (index, trace.strip())
    _raise(problems, f"target traces cannot be used ({path})")
    return {key: trace for key, (_, trace) in best.items()}

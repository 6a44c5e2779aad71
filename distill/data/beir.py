"""BEIR-style visual-document corpora (MMEB-V2's ViDoRe / VisRAG sets): text queries, page images, graded qrels.

    distill validate --input data/demo/visdoc/DemoDocs --image_root data/demo
    distill generate --input data/demo/visdoc/DemoDocs --image_root data/demo --side query ...   # one row per query
    distill generate --input data/demo/visdoc/DemoDocs --image_root data/demo --side target ...  # one row per page

A corpus directory holds three tables (`.jsonl` or `.parquet`, read with `distill.io.iter_table`):
    queries   {"query-id", "query"}                 (also `_id`/`id` and `text`, as BEIR and ViDoRe spell them)
    corpus    {"corpus-id", "image"}                image: page image path relative to image_root (also `image_path`)
    qrels     {"query-id", "corpus-id", "score"}    graded relevance; also `qrels.tsv` or `qrels/<split>.tsv`
The directory name is the subset (e.g. `ViDoRe_arxivqa`); the task is `visdoc`.

Query examples (`--side query`): id `<subset>-q-<query-id>`, the query text, positive = its most relevant page, plus
`query_id` and `qrels {corpus-id: score}` (what NDCG@5 in `distill eval` needs). Page examples (`--side target`): one
per corpus page, id `<subset>-page-<corpus-id>`, the page on both sides, plus `corpus_id`: each page is described once,
and every query that needs the page's index-side trace finds it by `corpus_id`. Broken input is reported by file and
line: unreadable lines, missing ids, duplicate ids, qrels naming unknown query or corpus ids, queries without qrels.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from distill.io import BadLine, iter_table
from distill.records import make_example, side

QUERY_INSTRUCTION = "Find a document image that matches the given query:"  # MMEB-V2's ViDoRe / VisRAG instructions
PAGE_INSTRUCTION = "Understand the content of the provided document image."
TABLE_SUFFIXES = (".jsonl", ".parquet")


def _table(directory: Path, name: str) -> Path | None:
    for suffix in TABLE_SUFFIXES:
        if (directory / f"{name}{suffix}").exists():
            return directory / f"{name}{suffix}"
    return None


def _qrels_file(directory: Path) -> Path | None:
    if found := _table(directory, "qrels"):
        return found
    if (directory / "qrels.tsv").exists():
        return directory / "qrels.tsv"
    tsvs = sorted((directory / "qrels").glob("*.tsv")) if (directory / "qrels").is_dir() else []
    return (directory / "qrels" / "test.tsv") if (directory / "qrels" / "test.tsv") in tsvs else (tsvs or [None])[0]


def is_beir_dir(path: str | Path) -> bool:
    path = Path(path)
    return path.is_dir() and bool(_table(path, "queries") and _table(path, "corpus") and _qrels_file(path))


def _first(row: dict, *keys):
    for k in keys:
        if row.get(k) not in (None, ""):
            return row[k]
    return None


def _rows(path: Path) -> Iterator[tuple[int, dict | BadLine]]:
    if path.suffix != ".tsv":
        yield from iter_table(path)
        return
    with open(path, newline="", encoding="utf-8") as f:
        for i, rec in enumerate(csv.reader(f, delimiter="\t"), 1):
            if i == 1 and rec and rec[0] in ("query-id", "query_id", "qid"):
                continue  # header
            if len(rec) < 3:
                yield i, BadLine(i, f"expected 3 tab-separated columns (query-id, corpus-id, score), got {len(rec)}")
            else:
                yield i, {"query-id": rec[0], "corpus-id": rec[1], "score": rec[2]}


@dataclass
class BeirCorpus:
    """One corpus: queries {id: (line, text)}, pages {id: (line, image path)}, qrels {query id: {page id: score}}."""

    name: str
    queries: dict[str, tuple[int, str]] = field(default_factory=dict)
    pages: dict[str, tuple[int, str]] = field(default_factory=dict)
    qrels: dict[str, dict[str, int]] = field(default_factory=dict)
    problems: list[tuple[str, int, str | None, str]] = field(default_factory=list)  # (file, line, id, reason)


def load_beir(path: str | Path, subset: str | None = None) -> BeirCorpus:
    """Read the three tables; every broken line becomes a problem, never an exception."""
    path = Path(path)
    corpus = BeirCorpus(subset or path.name)
    q_file, c_file, r_file = _table(path, "queries"), _table(path, "corpus"), _qrels_file(path)
    for table, target, keys, value_keys in ((q_file, corpus.queries, ("query-id", "_id", "id"), ("query", "text")),
                                            (c_file, corpus.pages, ("corpus-id", "_id", "id"), ("image", "image_path"))):  # fmt: skip
        for line, row in _rows(table):
            if isinstance(row, BadLine):
                corpus.problems.append((table.name, line, None, row.reason))
                continue
            rid, value = _first(row, *keys), _first(row, *value_keys)
            if rid is None or not isinstance(value, str) or not value:
                what = "an id" if rid is None else f"a {value_keys[0]} string"
                corpus.problems.append((table.name, line, None if rid is None else str(rid), f"row has no {what}"))
            elif str(rid) in target:
                corpus.problems.append(
                    (table.name, line, str(rid), f"duplicate id (first on line {target[str(rid)][0]})")
                )
            else:
                target[str(rid)] = (line, value)
    for line, row in _rows(r_file):
        if isinstance(row, BadLine):
            corpus.problems.append((r_file.name, line, None, row.reason))
            continue
        qid, cid, score = (
            str(_first(row, *k)) for k in (("query-id", "query_id"), ("corpus-id", "corpus_id"), ("score",))
        )
        unknown = [f"unknown query id {qid!r}"] if qid not in corpus.queries else []
        unknown += [f"unknown corpus id {cid!r}"] if cid not in corpus.pages else []
        try:
            grade = int(float(score))
        except ValueError:
            unknown.append(f"score {score!r} is not a number")
        if unknown:
            corpus.problems.append((r_file.name, line, qid, "qrels line names " + ", ".join(unknown)))
        elif grade > 0:
            corpus.qrels.setdefault(qid, {})[cid] = grade
    return corpus


def load_beir_examples(path: str | Path, subset: str | None = None, trace_side: str | None = None):
    """(line, example or Problem) for the corpus at `path`: query examples, page examples, or both (None)."""
    from distill.data.mmeb import Problem

    corpus = load_beir(path, subset)
    for file, line, rid, reason in corpus.problems:
        yield line, Problem(line, f"{file}: {reason}", rid)
    name = corpus.name
    if trace_side in (None, "query"):
        for qid, (line, text) in corpus.queries.items():
            rel = corpus.qrels.get(qid)
            if not rel:
                yield line, Problem(line, "queries: query has no relevant page in qrels", f"{name}-q-{qid}")
                continue
            best = max(rel, key=lambda cid: (rel[cid], -list(corpus.pages).index(cid)))
            ex = make_example(f"{name}-q-{qid}", "visdoc", name, side(text), QUERY_INSTRUCTION,
                              side("", [corpus.pages[best][1]]))  # fmt: skip
            yield line, {**ex, "query_id": qid, "qrels": dict(rel)}
    if trace_side == "eval":  # `distill eval`: every page is a candidate, graded by qrels (NDCG@5)
        pages = [side("", [image]) for _, image in corpus.pages.values()]
        ids = list(corpus.pages)
        for qid, (line, text) in corpus.queries.items():
            rel = corpus.qrels.get(qid)
            if not rel:
                yield line, Problem(line, "queries: query has no relevant page in qrels", f"{name}-q-{qid}")
                continue
            order = sorted(range(len(ids)), key=lambda k: (-rel.get(ids[k], 0), k))  # most relevant page first
            ex = make_example(f"{name}-q-{qid}", "visdoc", name, side(text), QUERY_INSTRUCTION, pages[order[0]],
                              [pages[k] for k in order[1:]])  # fmt: skip
            yield line, {**ex, "query_id": qid, "relevance": [rel.get(ids[k], 0) for k in order]}
    if trace_side in (None, "target"):
        for cid, (line, image) in corpus.pages.items():
            page = side("", [image])
            ex = make_example(f"{name}-page-{cid}", "visdoc", name, page, PAGE_INSTRUCTION, dict(page))
            yield line, {**ex, "corpus_id": cid}

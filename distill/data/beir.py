"""BEIR-style visual-document corpora (MMEB-V2's ViDoRe / VisRAG / ViDoSeek / MMLongBench sets): text queries,
page images, graded qrels, read as published (no extraction step) or as small files of our own.

    distill validate --input /data/mmeb/arxivqa_test_subsampled_beir --image_root /data/mmeb   # a Hub snapshot
    distill generate --input data/demo/visdoc/DemoDocs --image_root data/demo --side query ...   # one row per query
    distill generate --input data/demo/visdoc/DemoDocs --image_root data/demo --side target ...  # one row per page

A corpus directory holds three tables, each either one file (`corpus.jsonl` / `corpus.parquet`) or a folder of
parquet shards as the Hub publishes them (`corpus/test-00000-of-00003.parquet`, or `corpus/test/0000.parquet`; the
`test` split is read, else `train`, VisRAG's only split):
    queries   {"query-id", "query"}          (also `_id`/`id` and `text`); ViDoRe v2's `language` (see QUERY_LANGUAGE)
    corpus    {"corpus-id", "image"}         image: a `datasets` Image column ({bytes, path}: the page is embedded) or
                                             a path relative to image_root (also `image_path`)
    qrels     {"query-id", "corpus-id", "score"}    graded relevance; also `qrels.tsv` or `qrels/<split>.tsv`
An embedded page is referenced as `parquet:<shard relative to image_root>#<row>` and decoded when a stage opens it
(`distill.images.load_image`), so the corpus must lie under image_root. Only the id column is read here: the page
bytes stay on disk until used. The subset is the directory name, or the MMEB-V2 name of the repo it is named after
(`arxivqa_test_subsampled_beir` -> ViDoRe_arxivqa, `distill.data.mmeb_v2`); the task is `visdoc`.

Query examples (`--side query`): id `<subset>-q-<query-id>`, the query text, positive = its most relevant page, plus
`query_id` and `qrels {corpus-id: score}` (what NDCG@5 in `distill eval` needs). Every row carries MMEB-V2's page
instruction as `target_instruction` (what a page candidate is embedded and described with). Page examples (`--side
target`): one per corpus page, id `<subset>-page-<corpus-id>`, the page on both sides, plus `corpus_id` and `queries`
(the queries the qrels point at, `{query_id, text, instruction, score}`, most relevant first: `embedding_gain` scores
the page's trace through them): each page is described once, and every query that needs the page's index-side trace
finds it by `corpus_id`. Broken input is reported by file and
line: unreadable lines, missing ids, duplicate ids, qrels naming unknown query or corpus ids, queries without qrels.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from distill.data.mmeb_v2 import hub_shards, hub_subset, query_language
from distill.io import BadRow, iter_table
from distill.parquet_images import COLUMN, embedded_ref
from distill.records import make_example, side

QUERY_INSTRUCTION = "Find a document image that matches the given query:"  # MMEB-V2's ViDoRe / VisRAG instructions
PAGE_INSTRUCTION = "Understand the content of the provided document image."
TABLE_SUFFIXES = (".jsonl", ".parquet")
QUERY_KEYS, PAGE_KEYS = ("query-id", "_id", "id"), ("corpus-id", "_id", "id")


def _tables(directory: Path, name: str) -> list[Path]:
    """The file(s) holding table `name`: one .jsonl/.parquet file, or the shards of a Hub-layout folder."""
    for suffix in TABLE_SUFFIXES:
        if (directory / f"{name}{suffix}").exists():
            return [directory / f"{name}{suffix}"]
    if (directory / name).is_dir():
        if shards := hub_shards(directory / name):
            return [f for f, _ in shards]
        if name == "qrels":
            tsvs = sorted((directory / "qrels").glob("*.tsv"))
            test = directory / "qrels" / "test.tsv"
            return [test] if test in tsvs else tsvs[:1]
    if name == "qrels" and (directory / "qrels.tsv").exists():
        return [directory / "qrels.tsv"]
    return []


def is_beir_dir(path: str | Path) -> bool:
    path = Path(path)
    return path.is_dir() and all(_tables(path, name) for name in ("queries", "corpus", "qrels"))


def check_beir_parts(path: str | Path) -> None:
    """StageError naming what is missing when `path` is a folder holding part of a visual-document corpus (queries or
    corpus, not all three parts): without it the folder was read as MMEB rows and every row failed for lack of a
    subset name, while the real cause, say the missing qrels, was never named."""
    from distill.stage import StageError

    path = Path(path)
    if not path.is_dir():
        return
    parts = {name: _tables(path, name) for name in ("queries", "corpus", "qrels")}
    missing = [name for name, found in parts.items() if not found]
    if missing and (parts["queries"] or parts["corpus"]):
        have = ", ".join(files[0].relative_to(path).parts[0] for files in parts.values() if files)
        wanted = {"queries": "queries.jsonl/.parquet or queries/ shards", "corpus": "corpus.jsonl/.parquet or corpus/ "
                  "shards", "qrels": "qrels.jsonl/.parquet, qrels.tsv, qrels/<split>.tsv or qrels/ shards"}  # fmt: skip
        raise StageError(f"{path}: a visual-document corpus folder ({have}) without its "
                         f"{' and '.join(missing)} ({'; '.join(wanted[m] for m in missing)}); the qrels say which "
                         "page answers each query")  # fmt: skip


def _first(row: dict, *keys):
    for k in keys:
        if row.get(k) not in (None, ""):
            return row[k]
    return None


def _parquet_rows(path: Path, wanted: tuple[str, ...]) -> Iterator[tuple[int, dict]]:
    """Rows of the `wanted` columns that exist (others never read: a corpus shard's page bytes stay on disk)."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    columns = [c for c in wanted if c in pf.schema_arrow.names]
    line = 0
    for batch in pf.iter_batches(columns=columns, batch_size=4096):
        for row in batch.to_pylist():
            line += 1
            yield line, row


def _rows(path: Path, wanted: tuple[str, ...]) -> Iterator[tuple[int, dict | BadRow]]:
    if path.suffix == ".parquet":
        yield from _parquet_rows(path, wanted)
        return
    if path.suffix != ".tsv":
        yield from iter_table(path)
        return
    with open(path, newline="", encoding="utf-8-sig") as f:  # utf-8-sig: a byte-order mark would hide the header
        for i, rec in enumerate(csv.reader(f, delimiter="\t"), 1):
            if i == 1 and rec and rec[0] in ("query-id", "query_id", "qid"):
                continue  # header
            if len(rec) < 3:
                yield i, BadRow(i, f"expected 3 tab-separated columns (query-id, corpus-id, score), got {len(rec)}", path=str(path))  # fmt: skip
            else:
                yield i, {"query-id": rec[0], "corpus-id": rec[1], "score": rec[2]}


def _embedded_images(path: Path) -> bool:
    """True when a corpus shard's image column holds the images themselves (a `datasets` Image struct or bytes)."""
    if path.suffix != ".parquet":
        return False
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pq.read_schema(path)
    if COLUMN not in schema.names:
        return False
    kind = schema.field(COLUMN).type
    return pa.types.is_struct(kind) or pa.types.is_binary(kind) or pa.types.is_large_binary(kind)


@dataclass
class BeirCorpus:
    """One corpus: queries {id: (line, text)}, pages {id: (line, image ref)}, qrels {query id: {page id: score}}."""

    name: str
    queries: dict[str, tuple[int, str]] = field(default_factory=dict)
    pages: dict[str, tuple[int, str]] = field(default_factory=dict)
    qrels: dict[str, dict[str, int]] = field(default_factory=dict)
    problems: list[tuple[str, int, str | None, str]] = field(default_factory=list)  # (file, line, id, reason)
    other_language: set[str] = field(default_factory=set)  # queries left out by QUERY_LANGUAGE


def _read_ids(corpus: BeirCorpus, files: list[Path], target: dict, keys, value_keys, where, value_of=None,
              language: str | None = None) -> None:  # fmt: skip
    """Queries or pages into `target` {id: (line, value)}; `value_of(file, index)` gives an embedded page's ref."""
    for f in files:
        for line, row in _rows(f, (*keys, "language", *(() if value_of else value_keys))):
            if isinstance(row, BadRow):
                corpus.problems.append((where(f), line, None, row.reason))
                continue
            rid = _first(row, *keys)
            value = value_of(f, line - 1) if value_of else _first(row, *value_keys)
            if rid is not None and language and row.get("language") not in (None, language):
                corpus.other_language.add(str(rid))
            elif rid is None or not isinstance(value, str) or not value:
                what = "an id" if rid is None else f"a {value_keys[0]} string"
                corpus.problems.append((where(f), line, None if rid is None else str(rid), f"row has no {what}"))
            elif str(rid) in target:
                corpus.problems.append(
                    (where(f), line, str(rid), f"duplicate id (first on line {target[str(rid)][0]})")
                )
            else:
                target[str(rid)] = (line, value)


def load_beir(path: str | Path, subset: str | None = None, image_root: str | Path = ".") -> BeirCorpus:
    """Read the three tables; every broken line becomes a problem, never an exception. Embedded pages become
    `parquet:` refs relative to `image_root` (a corpus outside it is one problem: nothing outside it is read)."""
    path = Path(path)
    corpus = BeirCorpus(subset or hub_subset(path.name) or path.name)

    def where(f: Path) -> str:
        return f.name if f.parent == path else str(f.relative_to(path))

    q_files, c_files, r_files = (_tables(path, n) for n in ("queries", "corpus", "qrels"))
    _read_ids(corpus, q_files, corpus.queries, QUERY_KEYS, ("query", "text"), where,
              language=query_language(corpus.name))  # fmt: skip
    root = Path(image_root).resolve()
    embedded = [f for f in c_files if _embedded_images(f)]
    outside = [f for f in embedded if not f.resolve().is_relative_to(root)]
    for f in outside:
        corpus.problems.append((where(f), 0, None, f"embedded pages lie outside image_root {root}: pass an "
                                "--image_root that contains the corpus"))  # fmt: skip
    rel = {f: os.path.relpath(f.resolve(), root) for f in embedded if f not in outside}
    for f in c_files:
        if f in outside:
            continue
        value_of = (lambda shard, i: embedded_ref(rel[shard], i)) if f in rel else None
        _read_ids(corpus, [f], corpus.pages, PAGE_KEYS, ("image", "image_path"), where, value_of)
    for r_file in r_files:
        for line, row in _rows(r_file, ("query-id", "query_id", "corpus-id", "corpus_id", "score")):
            if isinstance(row, BadRow):
                corpus.problems.append((where(r_file), line, None, row.reason))
                continue
            qid, cid, score = (
                str(_first(row, *k)) for k in (("query-id", "query_id"), ("corpus-id", "corpus_id"), ("score",))
            )
            if qid in corpus.other_language:
                continue
            unknown = [f"unknown query id {qid!r}"] if qid not in corpus.queries else []
            unknown += [f"unknown corpus id {cid!r}"] if cid not in corpus.pages else []
            try:
                grade = int(float(score))
            except ValueError:
                unknown.append(f"score {score!r} is not a number")
            if unknown:
                corpus.problems.append((where(r_file), line, qid, "qrels line names " + ", ".join(unknown)))
            elif grade > 0:
                corpus.qrels.setdefault(qid, {})[cid] = grade
    return corpus


def load_beir_examples(path: str | Path, subset: str | None = None, trace_side: str | None = None,
                       image_root: str | Path = "."):  # fmt: skip
    """(line, example or BadRow) for the corpus at `path`: query examples, page examples, or both (None)."""
    corpus = load_beir(path, subset, image_root)
    for file, line, rid, reason in corpus.problems:
        yield line, BadRow(line, f"{file}: {reason}", rid)
    name = corpus.name
    order = {cid: k for k, cid in enumerate(corpus.pages)}
    if trace_side in (None, "query"):
        for qid, (line, text) in corpus.queries.items():
            rel = corpus.qrels.get(qid)
            if not rel:
                yield line, BadRow(line, "queries: query has no relevant page in qrels", f"{name}-q-{qid}")
                continue
            best = max(rel, key=lambda cid: (rel[cid], -order[cid]))
            ex = make_example(f"{name}-q-{qid}", "visdoc", name, side(text), QUERY_INSTRUCTION,
                              side("", [corpus.pages[best][1]]), target_instruction=PAGE_INSTRUCTION)  # fmt: skip
            yield line, {**ex, "query_id": qid, "qrels": dict(rel)}
    if trace_side == "eval":  # `distill eval`: every page is a candidate, graded by qrels (NDCG@5)
        pages = [side("", [image]) for _, image in corpus.pages.values()]
        ids = list(corpus.pages)
        for qid, (line, text) in corpus.queries.items():
            rel = corpus.qrels.get(qid)
            if not rel:
                yield line, BadRow(line, "queries: query has no relevant page in qrels", f"{name}-q-{qid}")
                continue
            ranked = sorted(range(len(ids)), key=lambda k: (-rel.get(ids[k], 0), k))  # most relevant page first
            ex = make_example(f"{name}-q-{qid}", "visdoc", name, side(text), QUERY_INSTRUCTION, pages[ranked[0]],
                              [pages[k] for k in ranked[1:]], target_instruction=PAGE_INSTRUCTION)  # fmt: skip
            yield line, {**ex, "query_id": qid, "relevance": [rel.get(ids[k], 0) for k in ranked]}
    if trace_side in (None, "target"):
        # the queries the qrels point at, per page (most relevant first): embedding_gain scores a page's trace by them
        by_page: dict[str, list] = {}
        for qid, rel in corpus.qrels.items():
            if qid in corpus.queries:
                for cid, grade in rel.items():
                    by_page.setdefault(cid, []).append({"query_id": qid, "text": corpus.queries[qid][1],
                                                        "instruction": QUERY_INSTRUCTION, "score": grade})  # fmt: skip
        for cid, (line, image) in corpus.pages.items():
            page = side("", [image])
            ex = make_example(f"{name}-page-{cid}", "visdoc", name, page, PAGE_INSTRUCTION, dict(page),
                              target_instruction=PAGE_INSTRUCTION)  # fmt: skip
            queries = sorted(by_page.get(cid, []), key=lambda q: -q["score"])
            yield line, {**ex, "corpus_id": cid, "queries": queries}

"""MMEB-V2 as published (issue 19): every task kind loads from small files in its published shape
(distill.testing.mmeb_published), with MMEB-V2's candidate pools; embedded page images are decoded on the fly through
distill.images; broken pages are reported by line; the 78-task table agrees with the readers and docs/formats.md.

    pytest -q tests/test_mmeb_published.py
"""

import json
from pathlib import Path

import pytest

from distill.cli import main as cli_main
from distill.data.mmeb import SUBSET_TASKS, load_examples, subset_task
from distill.data.mmeb_v2 import TASKS, task
from distill.images import ImageError, image_size, load_image
from distill.io import BadRow
from distill.testing.mmeb_published import write_published

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    root = tmp_path_factory.mktemp("mmeb")
    return root, write_published(root)


def _load(path, root, side="eval"):
    items = [item for _, item in load_examples(path, trace_side=side, image_root=root)]
    return [i for i in items if not isinstance(i, BadRow)], [i.reason for i in items if isinstance(i, BadRow)]


@pytest.mark.parametrize("name", [
    "ImageNet-1K", "OK-VQA", "MSCOCO_t2i", "RefCOCO", "HMDB51", "SmthSmthV2", "NExTQA", "Video-MME", "EgoSchema",
    "MVBench", "ActivityNetQA", "MSR-VTT", "DiDeMo", "MSVD", "VATEX", "YouCook2", "QVHighlight", "Charades-STA",
    "MomentSeeker", "arxivqa_test_subsampled_beir", "VisRAG-Ret-Test-ChartQA", "biomedical_lectures_v2"])  # fmt: skip
def test_each_published_dataset_loads_with_mmebs_candidate_pool(published, name):
    root, sets = published
    p = sets[name]
    rows, problems = _load(p.path, root)
    assert problems == [] and len(rows) == p.rows
    assert {1 + len(r["negatives"]) for r in rows} == {p.pool}  # every query ranks the pool MMEB-V2 uses
    assert {r["dataset"] for r in rows} == {task(name).name}
    for r in rows:  # each candidate once, and every visual a row names opens (frames, files, embedded pages)
        cands = [r["positive"], *r["negatives"]]
        assert len({json.dumps(c, sort_keys=True) for c in cands}) == len(cands)
        for s in (r["query"], *cands[:2]):
            for ref in s["images"]:
                load_image(root, ref).close()
            if s.get("video"):
                assert (root / s["video"]).is_dir(), s["video"]


def test_video_pools_are_built_once_and_shared(published):
    """Global pools (whole label set, whole video pool) hold the same side objects in every row."""
    root, sets = published
    rows, _ = _load(sets["MSR-VTT"].path, root)
    pools = [{id(s) for s in (r["positive"], *r["negatives"])} for r in rows]
    assert pools[0] == pools[1] == pools[2] and len(pools[0]) == 3
    labels, _ = _load(sets["HMDB51"].path, root)
    assert {s["text"] for s in (labels[0]["positive"], *labels[0]["negatives"])} == {
        "brush_hair", "cartwheel", "catch", "chew", "clap"}  # fmt: skip
    assert all(1 + len(r["negatives"]) == 1 for r in _load(sets["HMDB51"].path, root, "query")[0])  # not for generate


def test_video_qa_puts_the_options_in_the_query_as_mmeb_does(published):
    root, sets = published
    (nextqa, *_), _ = _load(sets["NExTQA"].path, root)
    assert nextqa["query"]["text"].endswith("\nOptions:\n(A) option 0\n(B) option 1\n(C) option 2\n(D) option 3\n"
                                            "(E) option 4")  # fmt: skip
    assert nextqa["instruction"].endswith("Question:") and nextqa["answer"] == nextqa["positive"]["text"] == "option 0"
    (mme, *_), _ = _load(sets["Video-MME"].path, root)
    assert mme["query"]["text"] == "What colour is the car?\nA. red\nB. blue\nC. green\nD. white"
    assert mme["answer"] == "blue" and {n["text"] for n in mme["negatives"]} == {"red", "green", "white"}
    (ego, *_), _ = _load(sets["EgoSchema"].path, root)  # VLM2Vec-V2: query + " ".join(options), no separator
    assert ego["query"]["text"] == "What is C doing?A. doing A B. doing B C. doing C D. doing D E. doing E"
    assert ego["answer"] == "doing C"


def test_embedded_pages_are_read_lazily_and_never_extracted(published, monkeypatch):
    """Reading a corpus reads its ids only; a page's bytes are read when a stage opens it, one row group at a time."""
    import distill.parquet_images as pi

    root, sets = published
    base = sets["arxivqa_test_subsampled_beir"].path
    before = {p for p in root.rglob("*") if p.is_file()}
    monkeypatch.setattr(pi, "row_bytes", lambda *a: pytest.fail("page bytes read while loading rows"))
    pages, problems = _load(base, root, side="target")
    assert problems == [] and len(pages) == 5 and {p for p in root.rglob("*") if p.is_file()} == before
    monkeypatch.undo()
    pi.clear()
    refs = [p["query"]["images"][0] for p in pages]
    assert refs[3] == "parquet:visdoc/arxivqa_test_subsampled_beir/corpus/test-00000-of-00001.parquet#3"
    assert [load_image(root, r).getpixel((0, 0)) for r in refs] == [((c * 53) % 256, (c * 97) % 256, (c * 31) % 256)
                                                                    for c in range(40, 45)]  # fmt: skip
    assert image_size(root, refs[0]) == (16, 16) and len(pi._groups) == 3  # 5 rows in groups of 2
    from distill.fingerprint import referenced_images

    assert referenced_images(str(base), str(root)) == [base / "corpus" / "test-00000-of-00001.parquet"]  # run's key
    monkeypatch.setattr(pi, "CACHE_BYTES", 1)  # the cache stays bounded: one group at a time, same pixels
    pi.clear()
    assert [load_image(root, r).size for r in refs] == [(16, 16)] * 5 and len(pi._groups) == 1
    for bad, why in ((refs[0][:-1] + "9", "out of range"), ("parquet:visdoc/nope.parquet#0", "cannot read"),
                     ("parquet:../x.parquet#0", "escapes"), ("parquet:x", "not a parquet:<file>#<row>")):  # fmt: skip
        with pytest.raises(ImageError, match=why):
            load_image(root, bad)


def test_validate_reports_a_broken_embedded_page_and_a_corpus_outside_image_root(published, tmp_path):
    import pyarrow.parquet as pq

    root, sets = published
    src = sets["VisRAG-Ret-Test-ChartQA"].path / "corpus" / "train-00000-of-00001.parquet"
    table = pq.read_table(src)
    images = table.column("image").to_pylist()
    images[2] = {"bytes": b"not a png", "path": "x.png"}
    broken = root / "visdoc" / "broken" / "VisRAG-Ret-Test-ChartQA"
    for part in ("queries", "qrels"):
        (broken / part).mkdir(parents=True)
        for f in (src.parents[1] / part).iterdir():
            (broken / part / f.name).write_bytes(f.read_bytes())
    (broken / "corpus").mkdir()
    pq.write_table(table.set_column(1, "image", __import__("pyarrow").array(images, table.schema.field("image").type)),
                   broken / "corpus" / src.name)  # fmt: skip
    report = tmp_path / "r.json"
    assert cli_main(["validate", "--input", str(broken), "--image_root", str(root), "--report", str(report)]) == 1
    problems = json.loads(report.read_text())["problems"]  # the page's own row and the query it is the answer to
    assert len(problems) == 2 and all("#2'" in p["reason"] and "corrupt" in p["reason"] for p in problems)
    assert cli_main(["validate", "--input", str(broken), "--image_root", str(broken / "queries"), "--report",
                     str(report)]) == 1  # fmt: skip
    assert any("outside image_root" in p["reason"] for p in json.loads(report.read_text())["problems"])


def test_the_78_tasks_have_a_reader_and_a_row_in_docs(published):
    assert len(TASKS) == 78 and [sum(t.modality == m for t in TASKS) for m in ("image", "video", "visdoc")] == [36, 18,
                                                                                                           24]  # fmt: skip
    kinds = {"image_cls": "classification", "image_qa": "vqa", "image_ret": "retrieval", "image_ground": "grounding"}
    for t in TASKS:
        assert subset_task(t.name) == kinds.get(t.kind, t.modality if t.modality == "visdoc" else "video")
        assert SUBSET_TASKS[t.name] and task(t.hub.split("@")[0].split(":")[0].split("/")[1] if t.modality != "image"
                                             else t.name).name == t.name  # fmt: skip
    table = (REPO / "docs" / "formats.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and line.count("|") >= 5]
    named = {line.split("|")[1].strip().strip("`") for line in rows}
    assert {t.name for t in TASKS} <= named


def test_validate_reports_what_it_found_per_task_kind(published, tmp_path, capsys):
    root, sets = published
    report = tmp_path / "r.json"
    assert cli_main(["validate", "--input", str(root / "video"), "--image_root", str(root), "--report",
                     str(report)]) == 0  # fmt: skip
    kinds = json.loads(report.read_text())["kinds"]
    assert set(kinds) == {"video_cls", "video_qa", "video_ret", "video_moment"}
    assert {k: v["rows"] for k, v in kinds.items()} == {"video_cls": 6, "video_qa": 10, "video_ret": 15,
                                                         "video_moment": 5}  # fmt: skip
    pools = {ds: d["pool"] for k in kinds.values() for ds, d in k["datasets"].items()}
    assert pools == {name: p.pool for name, p in sets.items() if p.kind.startswith("video")}
    assert "video_ret: 15 rows, 15 ok; DiDeMo 3 rows [3 candidates]" in capsys.readouterr().out


def test_eval_and_embed_read_a_published_dataset_folder(published):
    """`eval --eval_rows` and `embed --input` take a dataset's Hub folder as it is, with MMEB-V2's pools."""
    from distill.embed.pairs import load_examples_checked
    from distill.eval.inputs import load_eval_rows

    root, sets = published
    for name in ("HMDB51", "MSR-VTT", "arxivqa_test_subsampled_beir"):
        rows = load_eval_rows([str(sets[name].path)], image_root=str(root))
        assert len(rows) == sets[name].rows and {len(r.candidates) for r in rows} == {sets[name].pool}
    assert len(load_examples_checked([str(sets["NExTQA"].path)], image_root=str(root))) == 2

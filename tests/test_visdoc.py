"""Visual-document corpora (BEIR layout): reader, broken input by line, query- and page-side generate, NDCG@5 eval;
and interleaved multi-image queries (<|image_N|> order) through the teacher request and the student's format."""

import json
import shutil
from pathlib import Path

import pytest

from distill.cli import main as cli_main
from distill.data.beir import load_beir
from distill.data.mmeb import from_train_row, interleave, load_examples
from distill.io import read_jsonl, write_jsonl_atomic

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "data" / "demo"
DOCS = DEMO / "visdoc" / "DemoDocs"


def test_demo_corpus_reads_as_query_and_page_examples():
    corpus = load_beir(DOCS)
    assert (len(corpus.queries), len(corpus.pages), corpus.problems) == (4, 6, [])
    queries = [ex for _, ex in load_examples(DOCS, trace_side="query")]
    pages = [ex for _, ex in load_examples(DOCS, trace_side="target")]
    assert [q["id"] for q in queries] == [f"DemoDocs-q-q{i}" for i in range(4)]
    assert queries[0]["positive"]["images"] == ["visdoc/DemoDocs/pages/page_0.png"]  # the grade-2 page
    assert queries[0]["qrels"] == {"p0": 2, "p1": 1} and not queries[0]["query"]["images"]
    assert [p["corpus_id"] for p in pages] == [f"p{i}" for i in range(6)] and all(p["task"] == "visdoc" for p in pages)
    evals = [ex for _, ex in load_examples(DOCS, trace_side="eval")]
    assert all(len(e["negatives"]) == 5 and sorted(e["relevance"], reverse=True) == e["relevance"] for e in evals)
    assert evals[0]["relevance"] == [2, 1, 0, 0, 0, 0]


@pytest.mark.parametrize(
    "edit, line, reason",
    [("qrels", 3, "unknown corpus id 'p99'"), ("qrels", 4, "unknown query id 'q77'"),
     ("corpus", 7, "duplicate id"), ("queries", 5, "row has no an id")],
)  # fmt: skip
def test_broken_corpus_lines_are_reported_by_file_and_line(tmp_path, edit, line, reason):
    root = tmp_path / "DemoDocs"
    shutil.copytree(DOCS, root)
    extra = {"qrels": [{"query-id": "q0", "corpus-id": "p99", "score": 1}, {"query-id": "q77", "corpus-id": "p0",
                                                                             "score": 1}],
             "corpus": [{"corpus-id": "p0", "image": "x.png"}], "queries": [{"query": "no id"}]}[edit]  # fmt: skip
    lines = (root / f"{edit}.jsonl").read_text().splitlines()
    if edit == "qrels":
        lines = lines[:2] + [json.dumps(x) for x in extra] + lines[2:]
    else:
        lines += [json.dumps(x) for x in extra]
    (root / f"{edit}.jsonl").write_text("\n".join(lines) + "\n")
    report = tmp_path / "r.json"
    assert cli_main(["validate", "--input", str(root), "--image_root", str(DEMO), "--report", str(report)]) == 1
    problems = json.loads(report.read_text())["problems"]
    assert any(p["line"] == line and f"{edit}.jsonl" in p["reason"] and reason in p["reason"] for p in problems), (
        problems
    )


def test_pages_are_described_once_and_queries_get_text_traces(fake_teacher, tmp_path):
    fake, url = fake_teacher(record=True)
    base = ["generate", "--input", str(DOCS), "--image_root", str(DEMO), "--base_url", url, "--model", "m",
            "--progress", "false"]  # fmt: skip
    assert cli_main([*base, "--output", str(tmp_path / "pages.jsonl"), "--side", "target"]) == 0
    pages = read_jsonl(tmp_path / "pages.jsonl")
    assert len(fake.requests) == 6 and [r["corpus_id"] for r in pages] == [f"p{i}" for i in range(6)]
    for req in fake.requests:  # the page image, then the page-description prompt
        assert [p["type"] for p in req["body"]["messages"][1]["content"]] == ["image_url", "text"]
    assert cli_main([*base, "--output", str(tmp_path / "queries.jsonl"), "--side", "query"]) == 0
    queries = read_jsonl(tmp_path / "queries.jsonl")
    assert len(queries) == 4 and all(r["status"] == "ok" for r in queries)
    assert all(isinstance(r["body"]["messages"][1]["content"], str) for r in fake.requests[6:])  # text queries


def test_eval_scores_visdoc_queries_with_ndcg5(tmp_path, tiny_vlm):
    rows = [ex for _, ex in load_examples(DOCS, trace_side="query")]
    traces = [{**ex, "sample_index": 0, "trace": {"raw": "x", "think": "pages", "final": "a bar chart"}, "status": "ok",
               "teacher": {"model": "t"}} for ex in rows]  # fmt: skip
    write_jsonl_atomic(tmp_path / "teacher.jsonl", traces)
    rc = cli_main(["eval", "--output_dir", str(tmp_path / "eval"), "--traces", f"teacher={tmp_path / 'teacher.jsonl'}",
                   "--eval_rows", str(DOCS), "--image_root", str(DEMO), "--embedder", "vlm", "--embedder_model",
                   str(tiny_vlm), "--require_think", "false", "--max_pixels", "12544"])  # fmt: skip
    assert rc == 0
    result = json.loads((tmp_path / "eval" / "eval.json").read_text())
    ds = result["retrieval"]["datasets"]["DemoDocs"]
    assert ds["metric"] == "NDCG@5" and ds["queries"] == 4 and ds["candidates_mean"] == 6
    assert all(0.0 <= v <= 1.0 for v in ds["scores"].values())


@pytest.mark.parametrize(
    "text, n, parts",
    [("What is shown?", 2, [("image", 0), ("image", 1), ("text", "What is shown?")]),
     ("Compare <|image_1|> with <|image_2|>: which is larger?", 2,
      [("text", "Compare"), ("image", 0), ("text", "with"), ("image", 1), ("text", ": which is larger?")]),
     ("<|image_2|> then <|image_1|>", 3, [("image", 2), ("image", 1), ("text", "then"), ("image", 0)]),
     ("ignore <|image_9|> here", 1, [("image", 0), ("text", "ignore  here")])],
)  # fmt: skip
def test_interleave_keeps_marker_order(text, n, parts):
    assert interleave(text, n) == parts


def test_interleaved_query_keeps_its_order_to_teacher_and_student(fake_teacher, tmp_path, tiny_vlm):
    from distill.chat_format import multimodal_messages, student_prompt, tokenize_messages
    from distill.processing import load_processor

    row = {
        "qry": "Represent the pair: is <|image_1|> the same scene as <|image_2|>?",
        "qry_image_path": ["images/vqa_00.png", "images/cls_00.png"],
        "pos_text": "no",
        "pos_image_path": "",
    }
    ex = from_train_row(row, "ShapesVQA", "vqa")
    assert ex["query"]["text"] == "is <|image_1|> the same scene as <|image_2|>?"
    write_jsonl_atomic(tmp_path / "ShapesVQA.jsonl", [row])
    fake, url = fake_teacher(record=True)
    assert cli_main(["generate", "--input", str(tmp_path / "ShapesVQA.jsonl"), "--image_root", str(DEMO),
                     "--base_url", url, "--model", "m", "--output", str(tmp_path / "t.jsonl"), "--progress",
                     "false"]) == 0  # fmt: skip
    parts = fake.requests[0]["body"]["messages"][1]["content"]
    assert [p["type"] for p in parts] == ["text", "image_url", "text", "image_url", "text"]
    assert parts[0]["text"].endswith("is") and parts[2]["text"] == "the same scene as"
    prompt = student_prompt(ex)
    blocks = multimodal_messages(prompt.messages, ["IMG1", "IMG2"])[0]["content"]
    assert [b.get("image") or b["text"] for b in blocks] == ["Represent the pair:\nis", "IMG1", "the same scene as",
                                                             "IMG2", "?"]  # fmt: skip
    proc = load_processor(tiny_vlm)
    from PIL import Image

    ids = list(tokenize_messages(proc, prompt.messages, [Image.new("RGB", (56, 56))] * 2)["input_ids"][0])
    vs = [i for i, t in enumerate(ids) if t == proc.tokenizer.convert_tokens_to_ids("<|vision_start|>")]
    assert len(vs) == 2 and vs[1] - vs[0] > 6  # text tokens sit between the two images


def test_visdoc_rows_export_collate_and_reason(tmp_path, tiny_vlm):
    """Query rows (text) and page rows (the page image) become training rows, collate, and the student answers both."""
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    from distill.export import ExportConfig, export
    from distill.processing import load_processor
    from distill.testing.traces import kept_demo_rows
    from distill.train.collator import DistillVisionCollator
    from distill.train.data import load_export

    kept = kept_demo_rows(str(DOCS))
    assert len(kept) == 10
    write_jsonl_atomic(tmp_path / "kept.jsonl", kept)
    summary = export(ExportConfig(input=str(tmp_path / "kept.jsonl"), output=str(tmp_path / "export"),
                                  image_root=str(DEMO), max_pixels=28 * 28 * 16))  # fmt: skip
    assert summary["rows_out"] == 10
    ds = load_export(str(tmp_path / "export"))
    assert [len(r["images"]) for r in ds] == [0] * 4 + [1] * 6  # text queries, then one page image per page row
    proc = load_processor(tiny_vlm, 3136, 28 * 28 * 16)
    batch = DistillVisionCollator.like(DataCollatorForVisionLanguageModeling(processor=proc))([ds[0], ds[4]])
    assert batch["image_grid_thw"].shape[0] == 1 and (batch["labels"] != -100).any()
    out = tmp_path / "reason.jsonl"
    assert cli_main(["reason", "--backend", "hf", "--model", str(tiny_vlm), "--input", str(DOCS), "--image_root",
                     str(DEMO), "--output", str(out), "--max_new_tokens", "4", "--progress", "false"]) == 0  # fmt: skip
    assert len(read_jsonl(out)) == 10


def test_interleaved_row_collates_with_text_between_its_images(tiny_vlm):
    from PIL import Image
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    from distill.processing import load_processor
    from distill.train.collator import DistillVisionCollator

    proc = load_processor(tiny_vlm)
    row = {"images": [Image.new("RGB", (56, 56))] * 2, "videos": [],
           "messages": [{"role": "user", "content": "Is <|image_1|> the same scene as <|image_2|>?"},
                        {"role": "assistant", "content": "<think>no</think>\nNo."}]}  # fmt: skip
    batch = DistillVisionCollator.like(
        DataCollatorForVisionLanguageModeling(processor=proc, assistant_only_loss=False)
    )([row])
    ids = batch["input_ids"][0].tolist()
    starts = [i for i, t in enumerate(ids) if t == proc.tokenizer.convert_tokens_to_ids("<|vision_start|>")]
    assert len(starts) == 2 and batch["image_grid_thw"].shape[0] == 2
    between = proc.tokenizer.decode(ids[starts[0] : starts[1]])
    assert "the same scene as" in between and "<|image_1|>" not in proc.tokenizer.decode(ids)


@pytest.mark.parametrize("nested", [False, True])
@pytest.mark.parametrize("verb", ["generate", "validate"])
def test_a_corpus_folder_without_qrels_names_them(tmp_path, capsys, verb, nested):
    """Before: the folder was read as MMEB rows ("MMEB rows need a subset name" x10) and generate exited 0, 0 rows."""
    root = tmp_path / "docs" / "DemoDocs" if nested else tmp_path / "DemoDocs"
    shutil.copytree(DOCS, root)
    (root / "qrels.jsonl").unlink()
    given = root.parent if nested else root
    args = {"generate": ["generate", "--input", str(given), "--output", str(tmp_path / "t.jsonl"), "--model", "m",
                         "--base_url", "http://127.0.0.1:9/v1", "--image_root", str(DEMO)],
            "validate": ["validate", "--input", str(given), "--image_root", str(DEMO)]}[verb]  # fmt: skip
    assert cli_main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"distill {verb}: error: {root}: a visual-document corpus folder")
    assert "without its qrels (qrels.jsonl/.parquet, qrels.tsv, qrels/<split>.tsv or qrels/ shards)" in err[0]
    assert not (tmp_path / "t.jsonl").exists()


def test_a_qrels_tsv_with_a_byte_order_mark_keeps_its_header(tmp_path):
    root = tmp_path / "DemoDocs"
    shutil.copytree(DOCS, root)
    rows = [json.loads(x) for x in (root / "qrels.jsonl").read_text().splitlines() if x.strip()]
    (root / "qrels.jsonl").unlink()
    tsv = "query-id\tcorpus-id\tscore\n" + "".join(f"{r['query-id']}\t{r['corpus-id']}\t{r['score']}\n" for r in rows)
    (root / "qrels.tsv").write_bytes(b"\xef\xbb\xbf" + tsv.encode())
    corpus = load_beir(root)
    assert corpus.problems == [] and corpus.qrels == load_beir(DOCS).qrels

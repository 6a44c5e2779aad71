"""`distill export`: kept traces -> TRL conversational dataset in the Hub layout (+ JSONL, manifest, quarantine)."""

import json

import pytest
from datasets import load_dataset

from distill.export import ExportConfig, assistant_text, export, row_problem, user_text
from distill.io import write_jsonl_atomic
from distill.testing.traces import kept_demo_rows

TINY_MAX = 28 * 28 * 16


@pytest.fixture(scope="module")
def kept_rows(demo_dir):
    return kept_demo_rows(str(demo_dir / "train"))


def _export(tmp_path, demo_dir, rows, extra_lines=(), **kw):
    src = tmp_path / "filter" / "kept.jsonl"
    write_jsonl_atomic(src, rows)
    if extra_lines:
        with open(src, "ab") as f:
            f.writelines(extra_lines)
    cfg = ExportConfig(input=str(src), output=str(tmp_path / "export"), image_root=str(demo_dir),
                       max_pixels=TINY_MAX, **kw)  # fmt: skip
    return cfg, export(cfg)


def test_export_rows_images_manifest_and_quarantine(tmp_path, demo_dir, kept_rows):
    good = kept_rows[:10]
    failed = {**kept_rows[10], "status": "failed", "error": "timeout"}
    no_think = {**kept_rows[11], "trace": {"raw": "x", "think": " ", "final": "x"}}
    missing_img = {**kept_rows[12], "query": {"text": "q", "images": ["images/nope.png"]}}
    (tmp_path / "filter").mkdir()
    (tmp_path / "filter" / "summary.json").write_text(json.dumps({"rows_in": 20, "keep_rate": 0.5}))
    cfg, summary = _export(tmp_path, demo_dir, [*good, failed, no_think, missing_img], [b"{not json\n"],
                           filter_summary=str(tmp_path / "filter" / "summary.json"))  # fmt: skip

    assert (summary["rows_in"], summary["rows_out"], summary["quarantined"]) == (14, 10, 4)
    reasons = {p["line"]: p["reason"] for p in summary["problems"]}
    assert "status is 'failed'" in reasons[11] and reasons[12] == "empty think part"
    assert "image file not found" in reasons[13] and "invalid JSON" in reasons[14]
    quarantine = [json.loads(x) for x in (tmp_path / "export" / "quarantine.jsonl").read_text().splitlines()]
    assert [q["id"] for q in quarantine] == [failed["id"], no_think["id"], missing_img["id"]]

    ds = load_dataset(str(tmp_path / "export"), split="train")  # the Hub layout, read by the stock loader
    assert len(ds) == 10 and {"images", "messages"} <= set(ds.column_names)
    for row, src in zip(ds, good, strict=True):
        assert row["id"] == src["id"]
        assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
        assert row["messages"][0]["content"] == user_text(src)
        assert row["messages"][1]["content"] == f"<think>{src['trace']['think']}</think>\n{src['trace']['final']}"
        assert len(row["images"]) == len(src["query"]["images"])
        for img in row["images"]:  # resized into the pixel budget on 28-px multiples
            assert img.width * img.height <= TINY_MAX and img.width % 28 == 0 and img.height % 28 == 0

    jsonl = [json.loads(x) for x in (tmp_path / "export" / "train.jsonl").read_text().splitlines()]
    assert jsonl[0]["images"] == good[0]["query"]["images"] and jsonl[0]["messages"] == ds[0]["messages"]
    manifest = json.loads((tmp_path / "export" / "manifest.json").read_text())
    assert manifest["rows_out"] == 10 and manifest["teacher"]["models"] == {"demo-teacher": 10}
    pid = good[0]["teacher"]["prompt_id"]
    assert manifest["teacher"]["prompts"] == {pid: {good[0]["teacher"]["prompt_sha"]: 10}}  # the 10 are ShapesCLS rows
    assert manifest["filter_summary"] == {"rows_in": 20, "keep_rate": 0.5}


def test_export_strict_stops_at_first_bad_row(tmp_path, demo_dir, kept_rows):
    with pytest.raises(ValueError, match=r"kept.jsonl:2: status is 'truncated'"):
        _export(tmp_path, demo_dir, [kept_rows[0], {**kept_rows[1], "status": "truncated"}], strict=True)


ROW = {"id": "a", "task": "retrieval", "dataset": "d", "query": {"text": "q", "images": []}, "instruction": "i",
       "positive": {"text": "p", "images": []}, "negatives": [], "answer": None, "sample_index": 0,
       "trace": {"raw": "", "think": "t", "final": "f"}, "status": "ok"}  # fmt: skip


@pytest.mark.parametrize(
    "change, problem",
    [
        ({}, None),
        ({"trace": {"raw": "", "think": "t", "final": ""}}, "empty final part"),
        ({"trace": None}, "field 'trace' must be an object"),
        ({"status": "truncated"}, "status is 'truncated'"),
        ({"instruction": 7}, "field 'instruction' must be a string"),  # passed validate, crashed export
        ({"trace": "str"}, "field 'trace' must be an object"),
        ({"query": "x"}, "field 'query' must be an object"),
        ({"id": 3}, "field 'id' must be a string"),
    ],
)
def test_row_problem(change, problem):
    got = row_problem({**ROW, **change})
    assert got == problem if problem is None else problem in got


def test_texts():
    row = {"instruction": "Represent the image:", "query": {"text": " What color? ", "images": []}}
    assert user_text(row) == "Represent the image:\nWhat color?"
    assert user_text({"instruction": "", "query": {"text": "caption", "images": []}}) == "caption"
    assert assistant_text({"think": " a ", "final": "b\n"}) == "<think>a</think>\nb"


@pytest.mark.parametrize("kw", [{"min_pixels": 0}, {"min_pixels": 100, "max_pixels": 50}, {"input": ""}])
def test_export_config_validation(kw):
    with pytest.raises(ValueError):
        ExportConfig(**{"input": "k.jsonl", "output": "o", **kw})


def test_export_cli(tmp_path, demo_dir, kept_rows, capsys):
    from distill.cli import main

    write_jsonl_atomic(tmp_path / "kept.jsonl", kept_rows[:3])
    out = tmp_path / "export"
    rc = main(["export", "--input", str(tmp_path / "kept.jsonl"), "--output", str(out), "--image_root", str(demo_dir),
               "--max_pixels", str(TINY_MAX)])  # fmt: skip
    assert rc == 0 and "3 rows in, 3 exported, 0 quarantined" in capsys.readouterr().out
    assert (out / "config.yaml").exists() and json.loads((out / "summary.json").read_text())["rows_out"] == 3
    assert main(["export", "--input", "k.jsonl", "--output", str(out), "--bogus", "1"]) != 0


def _visdoc_trace(side, demo_dir):
    """A ViDoRe-style row: a text query, a page image as the positive; the trace is about `side`."""
    return {"id": f"doc-{side}", "task": "visdoc", "dataset": "ViDoRe_docvqa", "instruction": "Find the page:",
            "query": {"text": "How many circles?", "images": []}, "target_instruction": "Represent the page:",
            "positive": {"text": "", "images": ["images/t2i_00.png"]}, "negatives": [], "answer": None,
            "sample_index": 0, "side": side, "status": "ok",
            "trace": {"raw": "<think>p</think>A page.", "think": "p", "final": "A page."},
            "teacher": {"model": "t", "prompt_id": "x@v1", "prompt_sha": "s", "mode": "blind"}}  # fmt: skip


@pytest.mark.parametrize(
    "side, user, images",
    [
        ("query", "Find the page:\nHow many circles?", []),  # the query side: text query, no page
        ("target", "Represent the page:", ["images/t2i_00.png"]),  # the page it describes, never the query
    ],
)
def test_export_builds_the_user_turn_from_the_trace_side(tmp_path, demo_dir, side, user, images):
    _, summary = _export(tmp_path, demo_dir, [_visdoc_trace(side, demo_dir)])
    assert summary["rows_out"] == 1
    (row,) = [json.loads(x) for x in (tmp_path / "export" / "train.jsonl").read_text().splitlines()]
    assert (row["side"], row["messages"][0]["content"], row["images"]) == (side, user, images)
    assert "How many circles?" not in row["messages"][0]["content"] or side == "query"
    assert len(load_dataset(str(tmp_path / "export"), split="train")[0]["images"]) == len(images)
    assert json.loads((tmp_path / "export" / "manifest.json").read_text())["sides"] == {side: 1}


def test_export_quarantines_a_row_of_unknown_side(tmp_path, demo_dir, kept_rows):
    _, summary = _export(tmp_path, demo_dir, [kept_rows[0], {**_visdoc_trace("query", demo_dir), "side": "page"}])
    assert summary["rows_out"] == 1 and "unknown side 'page'" in summary["problems"][0]["reason"]

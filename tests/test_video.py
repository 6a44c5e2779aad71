"""Video rows: frame sampling (folders and files), MMEB-V2 video readers, validate, the teacher request, export,
the numpy video processor, pre-flight token accounting with the 2B recipe, and training on the tiny VLM."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from distill.cli import main as cli_main
from distill.data.mmeb import load_examples
from distill.data.mmeb_video import from_video_row
from distill.export import ExportConfig, export
from distill.io import read_jsonl, write_jsonl_atomic
from distill.teacher.prompts import ImageStore
from distill.testing.traces import kept_demo_rows
from distill.video import VideoError, open_frame, open_frames, sample_frames, uniform_indices
from distill.video_processing import PilQwen2VLVideoProcessor

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "data" / "demo"


@pytest.mark.parametrize(
    "total, k, expected",
    [(12, 8, [0, 2, 3, 5, 6, 8, 9, 11]), (8, 8, list(range(8))), (3, 8, [0, 1, 2]), (100, 1, [50]), (0, 8, [])],
)  # fmt: skip
def test_uniform_indices_span_the_whole_video(total, k, expected):
    assert uniform_indices(total, k) == expected


@pytest.mark.parametrize("rel", ["videos/clip_00", "videos/clip_01.mp4"])
def test_folder_and_file_give_eight_ordered_frames(rel):
    refs = sample_frames(DEMO, rel, 8)
    assert len(refs) == 8 and all(r.startswith("frame:" + rel) for r in refs)
    frames = [open_frame(DEMO, r) for r in refs]
    assert {f.size for f in frames} == {(56, 56)}
    # the shape moves: the first and last sampled frames differ
    assert frames[0].tobytes() != frames[-1].tobytes()
    # one decoding pass for all frames gives the same pixels, and so does the teacher's image cache
    assert [f.tobytes() for f in open_frames(DEMO, refs)] == [f.tobytes() for f in frames]
    store = ImageStore(DEMO, 3136, 50176)
    assert store.side_images({"images": [], "video": rel}) == refs
    assert len({store.data_url(r) for r in reversed(refs)}) == 8 and store.encoded == 8 and not store._decoded


@pytest.fixture
def broken(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video")
    (tmp_path / "notes.txt").write_text("x")
    return tmp_path


@pytest.mark.parametrize(
    "rel, reason",
    [("missing", "video not found"), ("empty", "holds no frames"), ("bad.mp4", "unreadable video"),
     ("notes.txt", "not a frame folder or a video file"), ("../x", "escapes")],
)  # fmt: skip
def test_broken_videos_raise_a_reason(broken, rel, reason):
    with pytest.raises(VideoError, match=reason):
        sample_frames(broken, rel)


@pytest.mark.parametrize(
    "subset, row, query, positive, negatives, answer",
    [("K700", {"video_id": "abc", "pos_text": "dancing"}, ("", "video-tasks/frames/video_cls/K700/abc"),
      ("dancing", None), 0, "dancing"),
     ("NExTQA", {"video_path": "v.mp4", "question": "Why?", "options": ["a", "b", "c"], "answer": "B"},
      ("Why?\nOptions:\n(A) a\n(B) b\n(C) c", "v.mp4"), ("b", None), 2, "b"),
     ("MSR-VTT", {"caption": "a dog runs", "tgt_video_path": ["v1", "v2", "v3"]}, ("a dog runs", None), ("", "v1"), 2,
      None),
     ("QVHighlight", {"video_path": "v", "query": "the goal", "pos_video_path": "c1", "neg_video_path": ["c2"]},
      ("the goal", "v"), ("", "c1"), 1, None)],
)  # fmt: skip
def test_mmeb_v2_video_rows(subset, row, query, positive, negatives, answer):
    ex = from_video_row(row, subset)
    assert ex["task"] == "video" and ex["answer"] == answer and len(ex["negatives"]) == negatives
    assert (ex["query"]["text"], ex["query"].get("video")) == query
    assert (ex["positive"]["text"], ex["positive"].get("video")) == positive


def test_validate_reports_broken_video_rows_by_line(tmp_path, capsys):
    good = json.loads((DEMO / "video" / "DemoVideoCLS.jsonl").read_text().splitlines()[0])
    rows = [good, {**good, "video_path": "videos/nope"}, {**good, "video_path": "videos/empty"}, {"pos_text": "x"}]
    (DEMO / "videos" / "empty").mkdir(exist_ok=True)
    try:
        write_jsonl_atomic(tmp_path / "DemoVideoCLS.jsonl", rows)
        report = tmp_path / "r.json"
        rc = cli_main(["validate", "--input", str(tmp_path / "DemoVideoCLS.jsonl"), "--image_root", str(DEMO),
                       "--report", str(report)])  # fmt: skip
    finally:
        (DEMO / "videos" / "empty").rmdir()
    problems = {p["line"]: p["reason"] for p in json.loads(report.read_text())["problems"]}
    assert rc == 1 and set(problems) == {2, 3, 4}
    assert "video not found" in problems[2] and "no frames" in problems[3] and "qry_video_path" in problems[4]


def test_teacher_sees_eight_frames_in_order_at_the_frame_budget(fake_teacher, tmp_path):
    fake, url = fake_teacher(record=True)
    out = tmp_path / "traces.jsonl"
    assert cli_main(["generate", "--input", str(DEMO / "video" / "DemoVideoCLS.jsonl"), "--image_root", str(DEMO),
                     "--base_url", url, "--model", "m", "--output", str(out), "--progress", "false"]) == 0  # fmt: skip
    rows = read_jsonl(out)
    assert [r["status"] for r in rows] == ["ok"] * 4
    parts = fake.requests[0]["body"]["messages"][1]["content"]
    assert [p["type"] for p in parts] == ["image_url"] * 8 + ["text"]
    assert "8 images are frames" in parts[-1]["text"]
    # a rerun asks nothing: frame keys are stable
    n = len(fake.requests)
    assert cli_main(["generate", "--input", str(DEMO / "video" / "DemoVideoCLS.jsonl"), "--image_root", str(DEMO),
                     "--base_url", url, "--model", "m", "--output", str(out), "--progress", "false"]) == 0  # fmt: skip
    assert len(fake.requests) == n


def test_numpy_video_processor_matches_the_image_processor_on_a_still(tiny_vlm):
    # the fallback's pair, built as load_processor builds it where torchvision is missing (where it imports,
    # load_processor returns the stock processors: tests/test_stock_processor.py compares the two)
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    image_processor = Qwen2VLImageProcessorPil.from_pretrained(tiny_vlm)
    video_processor = PilQwen2VLVideoProcessor.like(image_processor)
    img = Image.new("RGB", (56, 84), (10, 200, 30))
    video = video_processor([[img, img]], return_tensors="pt")
    image = image_processor(images=[img], return_tensors="pt")
    assert video["video_grid_thw"].tolist() == image["image_grid_thw"].tolist() == [[1, 6, 4]]
    assert torch.allclose(video["pixel_values_videos"], image["pixel_values"], atol=1e-5)
    eight = video_processor([[img] * 8], return_tensors="pt")
    assert eight["video_grid_thw"].tolist() == [[4, 6, 4]]
    assert video_processor.num_video_tokens(8, 84, 56) == 4 * 6 * 4 // 4


@pytest.fixture(scope="module")
def video_export(tmp_path_factory):
    """The demo video rows plus an 8-frame 640x360 video (realistic size), one kept trace each, exported."""
    import av

    tmp = tmp_path_factory.mktemp("vexport")
    root = tmp / "root"
    shutil_copy = __import__("shutil").copytree
    shutil_copy(DEMO / "videos", root / "videos")
    with av.open(str(root / "videos" / "wide.mp4"), "w") as out:
        stream = out.add_stream("mpeg4", rate=4)
        stream.width, stream.height, stream.pix_fmt = 640, 360, "yuv420p"
        for i in range(16):
            out.mux(stream.encode(av.VideoFrame.from_image(Image.new("RGB", (640, 360), (16 * i, 80, 200)))))
        out.mux(stream.encode())
    wide = from_video_row({"video_path": "videos/wide.mp4", "pos_text": "blue", "tgt_text": ["blue", "red"]}, "K700")
    write_jsonl_atomic(tmp / "ex.jsonl", [wide])
    rows = kept_demo_rows(str(tmp / "ex.jsonl")) + kept_demo_rows(str(DEMO / "video"))
    write_jsonl_atomic(tmp / "kept.jsonl", rows)
    summary = export(ExportConfig(input=str(tmp / "kept.jsonl"), output=str(tmp / "export"), image_root=str(root),
                                  max_pixels=28 * 28 * 16))  # fmt: skip
    assert summary["rows_out"] == len(rows) == 13
    return tmp / "export"


def test_export_stores_sampled_frames_and_collates_them_as_a_video(video_export, tiny_vlm):
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    from distill.processing import load_processor
    from distill.train.collator import DistillVisionCollator
    from distill.train.data import load_export

    ds = load_export(str(video_export))
    jsonl = read_jsonl(video_export / "train.jsonl")
    assert jsonl[0]["videos"] == ["videos/wide.mp4"] and jsonl[0]["images"] == []
    row = ds[0]
    assert len(row["videos"]) == 1 and len(row["videos"][0]) == 8 and row["images"] == []
    assert row["videos"][0][0].size == (588, 336)  # 640x360 under the 28*28*256 per-frame budget (252 tokens)
    proc = load_processor(tiny_vlm, 3136, 28 * 28 * 16)
    collator = DistillVisionCollator.like(DataCollatorForVisionLanguageModeling(processor=proc))
    batch = collator([ds[1], ds[5]])
    assert batch["video_grid_thw"].tolist() == [[4, 4, 4], [4, 4, 4]]  # 8 frames of 56x56: 4 temporal patches
    assert int((batch["input_ids"] == proc.video_token_id).sum()) == 2 * 4 * 4 * 4 // 4


def test_eight_frame_row_fits_the_2b_recipe_in_preflight(video_export, tiny_vlm):
    """The tiny VLM has Qwen2-VL-2B's patch geometry (14 px patches, 2x2 merge, temporal 2): same video tokens."""
    from distill.processing import load_processor
    from distill.train.data import load_export, preflight

    recipe = yaml.safe_load((REPO / "recipes/qwen2vl-2b/train_full.yaml").read_text())
    proc = load_processor(tiny_vlm, recipe["min_pixels"], recipe["max_pixels"])
    ds = load_export(str(video_export)).select([0])
    kept, lengths, report = preflight(ds, proc, recipe["max_length"])
    video_tokens = 4 * (336 // 28) * (588 // 28)  # 8 frames -> 4 temporal patches of 12x21 merged tokens
    assert report["rows_kept"] == 1 and report["video_rows"] == 1
    assert video_tokens < lengths[0] <= recipe["max_length"]


@pytest.mark.slow
def test_video_rows_train_on_the_tiny_vlm_and_pass_the_label_audit(video_export, tiny_vlm, tmp_path):
    out = tmp_path / "student"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "distill", "train", "--config", "recipes/demo/train.yaml", "--model_name_or_path",
         str(tiny_vlm), "--dataset_path", str(video_export), "--output_dir", str(out), "--max_steps", "4",
         "--per_device_train_batch_size", "4", "--audit_rows", "13", "--max_length", "4096"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rows_trained"] == 13 and summary["global_step"] == 4
    audit = summary["label_audit"]
    # 9 demo rows with a video (8 frames of 56x56: 16 tokens) + the wide one at the demo recipe's 12544-pixel budget
    wide = PilQwen2VLVideoProcessor(3136, 12544).num_video_tokens(8, 336, 588)
    assert audit["tokens_per_role"]["image"] == 9 * 16 + wide and audit["supervised_per_role"].get("image", 0) == 0
    assert audit["supervised_fraction_per_role"]["assistant"] == 1.0
    # every output file has the umask's mode (safetensors writes weights 0600; the subprocess inherits our umask)
    mask = os.umask(0o022)
    os.umask(mask)
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in out.rglob("*") if p.is_file()}
    assert set(modes.values()) == {oct(0o666 & ~mask)}, modes


def test_load_examples_reads_every_demo_video_kind():
    rows = [ex for _, ex in load_examples(DEMO / "video")]
    assert {r["dataset"] for r in rows} == {"DemoVideoCLS", "DemoVideoQA", "DemoVideoRet", "DemoVideoMoment"}
    assert all(isinstance(r, dict) and r["task"] == "video" for r in rows)


def test_reason_asks_the_student_with_the_video_it_was_trained_on(tiny_vlm, tmp_path):
    from distill.chat_format import load_videos, student_prompt
    from distill.reason_hf import Student

    ex = next(ex for _, ex in load_examples(DEMO / "video" / "DemoVideoQA.jsonl"))
    prompt = student_prompt(ex)
    student = Student(str(tiny_vlm), None, "cpu", "float32", 3136, 12544)
    encoded = student.encode(prompt.messages, [], load_videos(prompt.videos, str(DEMO), 8, 3136, 200704))
    assert encoded.video_grid_thw.tolist() == [[4, 4, 4]] and encoded.pixel_values is None
    assert encoded.input_ids.count(student.processor.video_token_id) == 16
    out = tmp_path / "reason.jsonl"
    assert cli_main(["reason", "--backend", "hf", "--model", str(tiny_vlm), "--input", str(DEMO / "video"),
                     "--image_root", str(DEMO), "--output", str(out), "--max_new_tokens", "4", "--progress",
                     "false"]) == 0  # fmt: skip
    rows = read_jsonl(out)
    assert len(rows) == 12 and all(r["status"] in ("ok", "truncated") for r in rows)


def test_generate_fails_only_the_broken_video_row_with_its_reason(fake_teacher, tmp_path, caplog):
    good = json.loads((DEMO / "video" / "DemoVideoCLS.jsonl").read_text().splitlines()[0])
    write_jsonl_atomic(tmp_path / "DemoVideoCLS.jsonl", [good, {**good, "video_path": "videos/gone.mp4"}])
    fake, url = fake_teacher()
    out = tmp_path / "t.jsonl"
    assert cli_main(["generate", "--input", str(tmp_path / "DemoVideoCLS.jsonl"), "--image_root", str(DEMO),
                     "--base_url", url, "--model", "m", "--output", str(out), "--progress", "false"]) == 0  # fmt: skip
    rows = read_jsonl(out)
    assert [r["status"] for r in rows] == ["ok", "failed"] and len(fake.seen_keys) == 1
    assert "videos/gone.mp4" in rows[1]["error"] and "video not found" in rows[1]["error"]
    assert rows[1]["id"] in caplog.text


def test_eval_ranks_every_demo_video_kind_with_hit1(tmp_path, tiny_vlm):
    write_jsonl_atomic(tmp_path / "teacher.jsonl", kept_demo_rows(str(DEMO / "video")))
    assert cli_main(["eval", "--output_dir", str(tmp_path / "eval"), "--traces", f"teacher={tmp_path / 'teacher.jsonl'}",
                     "--eval_rows", str(DEMO / "video"), "--image_root", str(DEMO), "--embedder", "vlm",
                     "--embedder_model", str(tiny_vlm), "--require_think", "false", "--max_pixels", "12544"]) == 0  # fmt: skip
    datasets = json.loads((tmp_path / "eval" / "eval.json").read_text())["retrieval"]["datasets"]
    assert {k: (v["metric"], v["queries"]) for k, v in datasets.items()} == {
        "DemoVideoCLS": ("Hit@1", 4), "DemoVideoQA": ("Hit@1", 3), "DemoVideoRet": ("Hit@1", 3),
        "DemoVideoMoment": ("Hit@1", 2)}  # fmt: skip


def test_export_card_and_summary_say_what_stock_trl_does_with_video_rows(video_export):
    """Stock `trl sft` (TRL 1.16) drops `videos` and trains those rows as text only: the card says so, not 'as is'."""
    import json

    card = (video_export / "README.md").read_text()
    n = sum(bool(r["videos"]) for r in read_jsonl(video_export / "train.jsonl"))
    assert n and json.loads((video_export / "manifest.json").read_text())["video_rows"] == n
    assert f"**Video rows ({n} of 13).**" in card and "train those rows as text only" in card
    assert "train on it as is" not in card

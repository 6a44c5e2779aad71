"""Hub-ready artefacts: the export in the Hub's dataset layout (stock `load_dataset`, the real `trl sft` CLI), trace
datasets, dataset cards parsed by `huggingface_hub.DatasetCard`, and `--push_to_hub` up to the upload call."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from datasets import load_dataset
from huggingface_hub import DatasetCard

from distill.export import ExportConfig, export
from distill.io import write_jsonl_atomic
from distill.testing.tiny import torchvision_imports
from distill.testing.traces import kept_demo_rows

REPO = Path(__file__).resolve().parents[1]
FILTER_SUMMARY = {"rows_in": 120, "kept": 60, "rejected": 60, "keep_rate": 0.5,
                  "keep_rate_by_check": {"format": {"rejected": 40, "keep_rate": 0.6667},
                                         "answer_match": {"rejected": 20, "keep_rate": 0.8333}},
                  "by_task": {"vqa": {"rows": 24, "kept": 12, "keep_rate": 0.5}}}  # fmt: skip


@pytest.fixture(scope="module")
def filtered(demo_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hub")
    rows = kept_demo_rows(str(demo_dir / "train"))
    write_jsonl_atomic(tmp / "filter" / "kept.jsonl", rows[:40])
    write_jsonl_atomic(tmp / "filter" / "rejected.jsonl", [{**r, "rejected_by": ["format"]} for r in rows[40:]])
    (tmp / "filter" / "summary.json").write_text(json.dumps(FILTER_SUMMARY))
    return tmp


@pytest.fixture(scope="module")
def sft_export(filtered, demo_dir):
    cfg = ExportConfig(input=str(filtered / "filter" / "kept.jsonl"), output=str(filtered / "export"),
                       image_root=str(demo_dir), max_pixels=28 * 28 * 16, license="cc-by-4.0",
                       filter_summary=str(filtered / "filter" / "summary.json"))  # fmt: skip
    export(cfg)
    return filtered / "export"


def test_export_is_a_hub_dataset_with_a_card(sft_export):
    assert sorted(p.name for p in (sft_export / "data").iterdir()) == ["train-00000-of-00001.parquet"]
    ds = load_dataset(str(sft_export), split="train")  # README configs: only data/, never train.jsonl
    assert len(ds) == 40 and ds.features["images"].feature.__class__.__name__ == "Image"
    assert ds[0]["images"][0].size[0] > 0  # embedded bytes, decoded to PIL
    card = DatasetCard.load(sft_export / "README.md")
    data = card.data.to_dict()
    assert data["task_categories"] == ["image-text-to-text"] and data["license"] == "cc-by-4.0"
    assert {"distill", "sft", "trl"} <= set(data["tags"]) and data["size_categories"] == ["n<1K"]
    assert data["configs"] == [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}]
    info = data["dataset_info"]
    assert {f["name"] for f in info["features"]} == {
        "id",
        "task",
        "dataset",
        "sample_index",
        "images",
        "videos",
        "messages",
    }
    assert info["splits"] == [{"name": "train", "num_bytes": info["dataset_size"], "num_examples": 40}]
    body = card.text
    manifest = json.loads((sft_export / "manifest.json").read_text())
    for pid, shas in manifest["teacher"]["prompts"].items():  # template id@version and sha per row
        assert pid in body and all(sha in body for sha in shas)
    assert "| format | 40 | 66.7% |" in body and "demo-teacher" in body and "| ShapesCLS | 12 |" in body
    assert str(sft_export.parent) not in card.content  # no machine-local paths


@pytest.mark.parametrize(("family", "vision_prefix"), [
    ("tiny_llava", "vision_tower"),
    pytest.param("tiny_vlm", "visual", marks=[pytest.mark.torchvision, pytest.mark.skipif(
        not torchvision_imports(), reason="the stock Qwen2-VL processor needs torchvision")]),
])  # fmt: skip
def test_real_trl_sft_cli_trains_on_the_export(sft_export, family, vision_prefix, request, tmp_path):
    """The stock `trl sft` command, from another directory, with no distill code on the path, on the tiny LLaVA (its
    stock processor loads without torchvision) and, where torchvision imports, on the tiny Qwen2-VL."""
    model_dir = request.getfixturevalue(family)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    trl = Path(sys.executable).parent / "trl"
    proc = subprocess.run([str(trl), "sft", "--model_name_or_path", str(model_dir), "--dataset_name", str(sft_export),
                           "--output_dir", str(tmp_path / "out"), "--max_steps", "2", "--per_device_train_batch_size",
                           "2", "--logging_steps", "1", "--report_to", "none", "--save_strategy", "no", "--bf16",
                           "false", "--use_cpu", "true"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    logs = [line for line in (proc.stdout + proc.stderr).replace("}", "}\n").splitlines() if "'loss'" in line]
    assert len(logs) == 2 and (tmp_path / "out" / "model.safetensors").exists()
    # the images went through the vision tower: its weights got gradients and moved (text alone leaves them as is)
    from safetensors.torch import load_file

    base, trained = load_file(model_dir / "model.safetensors"), load_file(tmp_path / "out" / "model.safetensors")
    vision = [k for k in base if vision_prefix in k and k.endswith("weight")]
    assert vision and any(not (base[k] == trained[k]).all() for k in vision)


def test_trace_datasets_one_config_per_file(filtered, demo_dir, tmp_path):
    from distill.cli import main

    out = tmp_path / "traces"
    rc = main(["export", "--format", "traces", "--input", str(filtered / "filter" / "kept.jsonl"), "--extra_inputs",
               str(filtered / "filter" / "rejected.jsonl"), "--output", str(out), "--image_root", str(demo_dir)])  # fmt: skip
    assert rc == 0
    kept, rejected = load_dataset(str(out), split="train"), load_dataset(str(out), "rejected", split="train")
    assert (len(kept), len(rejected)) == (40, 20) and rejected[0]["rejected_by"] == ["format"]
    src = kept_demo_rows(str(demo_dir / "train"))[0]
    assert kept[0]["trace"]["think"] == src["trace"]["think"] and kept[0]["teacher"]["prompt_id"]
    assert len(kept[0]["images"]) == len(src["query"]["images"])  # query images embedded
    card = DatasetCard.load(out / "README.md").data.to_dict()
    assert [c["config_name"] for c in card["configs"]] == ["kept", "rejected"] and card["configs"][0]["default"]
    assert [i["config_name"] for i in card["dataset_info"]] == ["kept", "rejected"]


@pytest.mark.parametrize("private_flag, private", [([], True), (["--hub_private_repo", "false"], False)])
def test_export_push_uploads_only_the_final_card_and_data(filtered, demo_dir, tmp_path, monkeypatch, private_flag,
                                                          private):  # fmt: skip
    """No network here: everything up to `HfApi.upload_folder`, which records what it would send."""
    from huggingface_hub import HfApi

    from distill.cli import main
    from distill.hub import upload_plan

    calls = []

    def create_repo(self, repo_id, **kw):
        calls.append(("create_repo", repo_id, kw))
        return type("Repo", (), {"repo_id": repo_id})()

    def upload_folder(self, **kw):  # snapshot at upload time: the card and data must already be final
        folder = Path(kw["folder_path"])
        readme = (folder / "README.md").read_text()
        calls.append(("upload_folder", kw, upload_plan(folder, kw["allow_patterns"]), readme))

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    out = tmp_path / "export"
    rc = main(["export", "--input", str(filtered / "filter" / "kept.jsonl"), "--output", str(out), "--image_root",
               str(demo_dir), "--max_pixels", str(28 * 28 * 16), "--push_to_hub", "me/demo-sft", *private_flag])  # fmt: skip
    assert rc == 0
    (_, repo, kw), (_, up, files, readme) = calls
    assert repo == "me/demo-sft" and kw == {"repo_type": "dataset", "private": private, "exist_ok": True}
    assert up["repo_id"] == "me/demo-sft" and up["repo_type"] == "dataset" and Path(up["folder_path"]) == out
    assert files == ["README.md", "data/train-00000-of-00001.parquet"]  # no manifest, jsonl, config or summary
    assert 'load_dataset("me/demo-sft"' in readme and readme == (out / "README.md").read_text()

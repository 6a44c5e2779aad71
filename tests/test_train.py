"""`distill train` end to end on the tiny VLM, each run in its own subprocess (accelerate/DeepSpeed keep global state).

Ten runs (CPU, ~7 s each, mostly imports): a full finetune without DeepSpeed and with ZeRO-1, -2 and -3 (same
losses); the first run's config killed after its step-4 checkpoint and resumed (same losses as uninterrupted); two
processes (torchrun, gloo) against one with their whole batch (same losses); LoRA under ZeRO-3 (default
length-grouped order) with a merged export; the export trained by a plain TRL script.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from distill.export import ExportConfig, export
from distill.io import write_jsonl_atomic
from distill.testing.traces import kept_demo_rows

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
# One torch thread: on a shared 2-core machine, more threads oversubscribe the cores and a tiny-model run goes 10x slower.
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO),
       "OMP_NUM_THREADS": "1"}  # fmt: skip
# Same kernels, same data order: only the reduction order can differ (DeepSpeed's flattened grads, a resumed run's
# reloaded optimizer state), which moves float32 losses by ~1e-7 relative; 1e-4 leaves room without hiding a real bug.
RTOL = 1e-4


@pytest.fixture(scope="module")
def export_dir(demo_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train")
    write_jsonl_atomic(tmp / "filter" / "kept.jsonl", kept_demo_rows(str(demo_dir / "train")))
    (tmp / "filter" / "summary.json").write_text(json.dumps({"rows_in": 120, "rows_kept": 60, "keep_rate": 0.5}))
    export(ExportConfig(input=str(tmp / "filter" / "kept.jsonl"), output=str(tmp / "export"), image_root=str(demo_dir),
                        max_pixels=28 * 28 * 16, filter_summary=str(tmp / "filter" / "summary.json")))  # fmt: skip
    return tmp / "export"


def _train(tiny_vlm, export_dir, out, *flags, driver=None) -> subprocess.CompletedProcess:
    args = ["--config", "recipes/demo/train.yaml", "--model_name_or_path", str(tiny_vlm), "--dataset_path",
            str(export_dir), "--output_dir", str(out), "--max_steps", "12", "--per_device_train_batch_size", "5",
            "--audit_rows", "60", *flags]  # fmt: skip
    cmd = [sys.executable, "-m", "distill", "train", *args] if driver is None else [sys.executable, "-c", driver, *args]
    return subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)


def _summary(proc, out) -> dict:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((Path(out) / "summary.json").read_text())


def _mean(xs):
    return sum(xs) / len(xs)


# Subset-ordered rows in batches of 5: image, mixed and text-only (ShapesT2I) batches all occur. Checkpoints every 4
# steps: the plain run is also the uninterrupted reference of the resume test.
SEQ = ["--train_sampling_strategy", "sequential", "--save_strategy", "steps", "--save_steps", "4"]
# The recipe fields the card's YAML takes (a hub id as the base's public name; the weights load from model_name_or_path)
CARD_FLAGS = ["--base_model", "Qwen/Qwen2-VL-2B-Instruct", "--license", "apache-2.0", "--dataset_hub_id", "me/demo-sft"]


@pytest.fixture(scope="module")
def sequential_runs(tiny_vlm, export_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("seq")
    runs: dict = {"dir": tmp}
    for name in ("plain", "zero1", "zero2", "zero3"):
        flags = CARD_FLAGS if name == "plain" else ["--deepspeed", f"recipes/deepspeed/{name}.json"]
        runs[name] = _summary(_train(tiny_vlm, export_dir, tmp / name, *SEQ, *flags), tmp / name)
    return runs


def test_full_finetune_learns_audits_and_writes_lineage(sequential_runs, export_dir, tmp_path_factory):
    s = sequential_runs["plain"]
    assert len(s["losses"]) == 12 and _mean(s["losses"][-5:]) < _mean(s["losses"][:5])
    # the audit covered every row: supervised tokens decode to exactly each assistant turn
    audit = s["label_audit"]
    assert audit["rows"] == 60 and audit["supervised_fraction_per_role"]["assistant"] == 1.0
    assert set(audit["supervised_per_role"]) == {"assistant"}
    from datasets import load_dataset

    turns = {r["id"]: r["messages"][-1]["content"] for r in load_dataset(str(export_dir), split="train")}
    for ex in audit["examples"]:
        assert ex["supervised_text"] == turns[ex["id"]] + "<|im_end|>\n"
    assert s["preflight"]["parameters"]["vision"][0] == 0 and s["preflight"]["parameters"]["language"][0] > 0


def test_lineage_and_model_card(sequential_runs):
    base = sequential_runs["dir"] / "plain"
    lineage = json.loads((base / "lineage.json").read_text())
    assert lineage["manifest"]["teacher"]["models"] == {"demo-teacher": 60}
    assert lineage["filter_keep_rates"] == {"keep_rate": 0.5}
    card = (base / "README.md").read_text()
    prompts = lineage["manifest"]["teacher"]["prompts"]
    for pid, shas in prompts.items():
        assert pid in card and all(sha in card for sha in shas)
    assert "keep_rate: 0.5" in card and "learning_rate: 0.003" in card  # resolved config inside the card
    assert (base / "config.yaml").exists() and lineage["result"]["global_step"] == 12
    assert all(len(shas) == 1 for shas in prompts.values())  # one template hash per prompt, not one per row
    assert lineage["result"]["global_batch_size"] == 5  # logged: 5 per device x 1 accumulation x 1 process
    assert "global batch 5 = 5 per device x 1 gradient accumulation x 1 processes" in card
    from huggingface_hub import ModelCard

    data = ModelCard.load(base / "README.md").data.to_dict()
    assert data["base_model"] == "Qwen/Qwen2-VL-2B-Instruct" and data["datasets"] == ["me/demo-sft"]
    assert data["pipeline_tag"] == "image-text-to-text" and data["library_name"] == "transformers"
    assert data["license"] == "apache-2.0" and {"distill", "sft", "trl"} <= set(data["tags"])
    tmp = str(sequential_runs["dir"].parent)
    assert tmp not in card and tmp not in (base / "lineage.json").read_text()  # no machine-local paths


def test_student_processor_is_saved_under_stock_class_names(sequential_runs):
    """The torchvision-less fallback processor is a loading detail: the saved configs name the stock classes, so
    stock AutoProcessor loads the student where torchvision imports, and here fails loudly instead of silently
    returning a bare tokenizer that would ignore images (what the old own-class config did)."""
    import importlib.util

    from transformers import AutoProcessor

    base = sequential_runs["dir"] / "plain"
    proc_cfg = json.loads((base / "processor_config.json").read_text())
    assert proc_cfg["processor_class"] == "Qwen2VLProcessor"
    assert proc_cfg["image_processor"]["image_processor_type"] == "Qwen2VLImageProcessor"
    assert proc_cfg["video_processor"]["video_processor_type"] == "Qwen2VLVideoProcessor"
    assert json.loads((base / "tokenizer_config.json").read_text())["processor_class"] == "Qwen2VLProcessor"
    try:
        import torchvision  # noqa: F401

        has_torchvision = importlib.util.find_spec("torchvision") is not None
    except Exception:  # the PyPI wheel does not import beside the CPU torch build
        has_torchvision = False
    if has_torchvision:
        assert AutoProcessor.from_pretrained(base).image_processor is not None
    else:
        with pytest.raises(ImportError, match="(?i)torchvision"):
            AutoProcessor.from_pretrained(base)


def test_deepspeed_zero123_match_plain_and_zero3_handles_mixed_batches(sequential_runs):
    plain = sequential_runs["plain"]["losses"]
    for name in ("zero1", "zero2", "zero3"):
        assert sequential_runs[name]["losses"] == pytest.approx(plain, rel=RTOL), name
    kinds = sequential_runs["zero3"]["batch_kinds"]
    assert kinds["mixed"] >= 1 and kinds["text_only"] >= 1 and kinds["image"] >= 1
    assert sequential_runs["zero3"]["text_only_batches_guarded"] == kinds["text_only"]


KILL_AFTER_SAVE = """
import os, signal, sys
from transformers import TrainerCallback
from distill.configs import parse_configs
from dataclasses import replace
from functools import partial
from distill.train.sft import STAGE, ModelConfig, TrainConfig, run

class KillAfterSave(TrainerCallback):
    def on_save(self, args, state, control, **kw):
        if state.global_step == 4:
            os.kill(os.getpid(), signal.SIGKILL)  # a real crash: no cleanup, no final save

cfg, model_args = parse_configs((TrainConfig, ModelConfig), sys.argv[1:])
sys.exit(replace(STAGE, run=partial(run, callbacks=[KillAfterSave()])).main(cfg, model_args))
"""


def test_resume_after_kill_gives_the_uninterrupted_losses(sequential_runs, tiny_vlm, export_dir, tmp_path):
    killed = _train(tiny_vlm, export_dir, tmp_path / "resumed", *SEQ, driver=KILL_AFTER_SAVE)
    assert killed.returncode == -9 and (tmp_path / "resumed" / "checkpoint-4").is_dir()
    assert not (tmp_path / "resumed" / "summary.json").exists()
    resumed = _summary(
        _train(tiny_vlm, export_dir, tmp_path / "resumed", *SEQ, "--resume_from_checkpoint", "last"),
        tmp_path / "resumed",
    )
    whole = sequential_runs["plain"]["losses"]
    assert len(resumed["losses"]) == len(whole) == 12
    assert resumed["losses"] == pytest.approx(whole, rel=RTOL)


def test_two_processes_train_as_one_process_with_the_whole_batch(tiny_vlm, export_dir, tmp_path):
    """DDP like a multi-GPU launch: torchrun with 2 CPU processes (gloo; a CPU launch needs `--use_cpu true`) splits
    the global batch of 10 into 5 + 5 and gives the losses of one process training on all 10 (tokens averaged across
    the processes); the main process alone writes the model and the summary."""
    flags = ["--max_steps", "3", "--global_batch_size", "10", "--audit_rows", "10", "--use_cpu", "true",
             "--train_sampling_strategy", "sequential"]  # fmt: skip
    one = _summary(_train(tiny_vlm, export_dir, tmp_path / "one", *flags, "--per_device_train_batch_size", "10"),
                   tmp_path / "one")  # fmt: skip
    out = tmp_path / "ddp"
    args = ["--config", "recipes/demo/train.yaml", "--model_name_or_path", str(tiny_vlm), "--dataset_path",
            str(export_dir), "--output_dir", str(out), *flags, "--per_device_train_batch_size", "5"]  # fmt: skip
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "distill.cli",
                           "train", *args], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)  # fmt: skip
    ddp = _summary(proc, out)
    assert ddp["global_batch"] == "global batch 10 = 5 per device x 1 gradient accumulation x 2 processes"
    assert len(ddp["losses"]) == 3 and ddp["losses"] == pytest.approx(one["losses"], rel=RTOL)
    assert (out / "model.safetensors").is_file() and (out / "lineage.json").is_file()


def test_lora_under_zero3_saves_adapter_and_merged_model(tiny_vlm, export_dir, tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "lora"
    s = _summary(_train(tiny_vlm, export_dir, out, "--use_peft", "--lora_target_modules", "all-linear",
                        "--lora_modules_to_save", "lm_head", "--learning_rate", "1e-2", "--merge_lora_on_save",
                        "--deepspeed", "recipes/deepspeed/zero3.json"), out)  # fmt: skip
    assert _mean(s["losses"][-5:]) < _mean(s["losses"][:5])
    adapter = load_file(out / "adapter_model.safetensors")
    lora = {k: v for k, v in adapter.items() if "lora_" in k}
    assert lora and all(v.numel() > 0 for v in lora.values())  # full tensors, not ZeRO-3 shards
    assert not any("visual" in k for k in lora)  # frozen vision tower gets no adapters
    assert any(torch.count_nonzero(v) for k, v in lora.items() if "lora_B" in k)  # B starts at 0: it trained
    from transformers import AutoModelForImageTextToText

    merged = AutoModelForImageTextToText.from_pretrained(out / "merged")
    base = AutoModelForImageTextToText.from_pretrained(tiny_vlm)
    w = "model.language_model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(dict(merged.named_parameters())[w], dict(base.named_parameters())[w])


def test_export_trains_with_plain_trl(tiny_vlm, export_dir, tmp_path):
    proc = subprocess.run([sys.executable, "benchmarks/plain_trl_sft.py", str(tiny_vlm), str(export_dir),
                           str(tmp_path / "plain"), "--max_steps", "2"], cwd=REPO, env=ENV, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(result["losses"]) == 2 and all(0 < x < 20 for x in result["losses"])


PUSH_RECORDER = """
import json, sys
from pathlib import Path
from huggingface_hub import HfApi
from distill.configs import parse_configs
from distill.hub import upload_plan
from distill.train.sft import STAGE, ModelConfig, TrainConfig

calls = []
HfApi.create_repo = lambda self, repo_id, **kw: calls.append(["create_repo", repo_id, kw]) or type("R", (), {"repo_id": repo_id})()

def upload_folder(self, **kw):  # what would be sent, and the card as it is at upload time
    folder = Path(kw["folder_path"])
    calls.append(["upload_folder", kw, upload_plan(folder, kw["allow_patterns"]), (folder / "README.md").read_text()])

HfApi.upload_folder = upload_folder
cfg, model_args = parse_configs((TrainConfig, ModelConfig), sys.argv[1:])
STAGE.main(cfg, model_args)
Path(cfg.output_dir, "push_calls.json").write_text(json.dumps(calls))
"""

# Only stock classes, from another working directory, with no distill code importable: the LLaVA-family student's
# stock processor loads here (no torchvision needed), so the image path is checked end to end.
LOAD_STOCK = """
import json, sys
from PIL import Image
from peft import PeftConfig, PeftModel
from transformers import AutoModelForImageTextToText, AutoProcessor
adapter, merged = sys.argv[1], sys.argv[2]
base = AutoModelForImageTextToText.from_pretrained(PeftConfig.from_pretrained(adapter).base_model_name_or_path)
peft_model = PeftModel.from_pretrained(base, adapter)
processor = AutoProcessor.from_pretrained(merged)
model = AutoModelForImageTextToText.from_pretrained(merged)
msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What color is the circle?"}]}]
text = processor.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
with_image = processor(text=[text], images=[Image.new("RGB", (56, 56), "red")], return_tensors="pt")
text_only = processor(text=[text.replace("<|vision_start|><|image_pad|><|vision_end|>", "")], return_tensors="pt")
out = model.generate(**with_image, max_new_tokens=2, do_sample=False)
out_peft = peft_model.generate(**with_image, max_new_tokens=2, do_sample=False)
assert not any(m.startswith("distill") for m in sys.modules), "stock classes pulled in distill code"
print(json.dumps({"processor": type(processor).__name__, "with_image": with_image["input_ids"].shape[1],
                  "text_only": text_only["input_ids"].shape[1], "pixel_values": list(with_image["pixel_values"].shape),
                  "merged_tokens": out[0].tolist(), "peft_tokens": out_peft[0].tolist()}))
"""


def test_lora_student_loads_with_stock_classes_from_another_dir_and_pushes_last(tiny_llava, export_dir, tmp_path):
    from huggingface_hub import ModelCard

    out = tmp_path / "student"
    proc = _train(tiny_llava, export_dir, out, "--use_peft", "--lora_target_modules", "all-linear",
                  "--merge_lora_on_save", "--max_steps", "3", "--audit_rows", "8", "--license", "apache-2.0",
                  "--push_to_hub", "me/tiny-student", driver=PUSH_RECORDER)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    adapter_cfg = json.loads((out / "adapter_config.json").read_text())
    assert adapter_cfg["base_model_name_or_path"] == str(Path(tiny_llava).resolve())  # loads from anywhere
    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "peft" and card.data.pipeline_tag == "image-text-to-text"
    assert card.data.license == "apache-2.0" and card.data.base_model is None  # a local base is not a hub id
    assert ModelCard.load(out / "merged" / "README.md").data.library_name == "transformers"
    assert str(tmp_path) not in card.content

    (create, repo, kw), (_, up, files, readme) = json.loads((out / "push_calls.json").read_text())
    assert repo == "me/tiny-student" and kw == {"repo_type": "model", "private": True, "exist_ok": True}
    assert Path(up["folder_path"]) == out and readme == (out / "README.md").read_text()  # the final card
    assert {"README.md", "lineage.json", "adapter_config.json", "adapter_model.safetensors", "processor_config.json",
            "merged/model.safetensors", "merged/README.md", "merged/processor_config.json"} <= set(files)  # fmt: skip
    assert not any(
        f.startswith("checkpoint-") or f in ("config.yaml", "summary.json", "push_calls.json") for f in files
    )

    env = {k: v for k, v in ENV.items() if k != "PYTHONPATH"}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    loaded = subprocess.run([sys.executable, "-c", LOAD_STOCK, str(out), str(out / "merged")], cwd=elsewhere, env=env,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    r = json.loads(loaded.stdout.strip().splitlines()[-1])
    assert r["processor"] == "LlavaProcessor" and r["pixel_values"] == [1, 3, 28, 28]
    assert r["with_image"] == r["text_only"] + 2 + 4  # <|vision_start|>, <|vision_end|> and 4 image tokens
    assert r["merged_tokens"] == r["peft_tokens"]  # the merged copy is the adapter on its base

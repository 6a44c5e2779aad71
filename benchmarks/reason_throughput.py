"""Throughput of `distill reason`'s hf backend vs a plain per-row `model.generate` loop, same model, same rows.

    python benchmarks/reason_throughput.py                            # CPU: a ~20M-parameter random Qwen2-VL
    python benchmarks/reason_throughput.py --size 2b --rows 256 --batch_size 64 --max_new_tokens 128   # GPU, bf16

Both sides generate for the same prompts (demo rows: image and text-only queries, asked in the student's chat format)
with greedy decoding and the same `max_new_tokens`, on the same loaded model. The backend side is the stage's own code
path (`distill.reason_hf.run_batches`: prompt encoding, length-sorted batches, left padding, decoding); the baseline
encodes each prompt the same way and calls `model.generate` on it alone. Tokens/s counts generated tokens (up to and
including eos, as `usage.completion_tokens` does). The model is random-init (no download): sizes are what matter.
Prints one table; figures are measured side by side in one run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]

# Random-init Qwen2-VL text towers; vision towers kept small except for 2b (Qwen2-VL-2B's real shapes).
SIZES = {
    "small": dict(text=dict(hidden_size=384, intermediate_size=1536, num_hidden_layers=6, num_attention_heads=6,
                            num_key_value_heads=2), vision=dict(depth=2, embed_dim=128, hidden_size=384, num_heads=4)),
    "2b": dict(text=dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                         num_key_value_heads=2, vocab_size=151936),
               vision=dict(depth=32, embed_dim=1280, hidden_size=1536, num_heads=16)),
}  # fmt: skip


def build_model(path: Path, size: str) -> Path:
    """A random-init Qwen2-VL of `size` with the kit's tiny tokenizer and processor, saved like a checkpoint."""
    from transformers import AutoModelForImageTextToText, AutoTokenizer, Qwen2VLConfig

    from distill.testing.tiny import build_tiny_vlm, tiny_config

    build_tiny_vlm(path)  # tokenizer, processor, chat template (the tiny weights are overwritten below)

    tok = AutoTokenizer.from_pretrained(path)
    tiny = tiny_config(tok)
    spec = SIZES[size]
    head_dim = spec["text"]["hidden_size"] // spec["text"]["num_attention_heads"]
    t = (head_dim // 2) // 4  # mrope sections (temporal, height, width) sum to head_dim / 2, split 1:1.5:1.5
    h = (head_dim // 2 - t) // 2
    text = {k: v for k, v in tiny.text_config.to_dict().items() if k != "layer_types"}  # re-derived per layer count
    text.update(
        spec["text"], rope_parameters={**text["rope_parameters"], "mrope_section": [t, h, head_dim // 2 - t - h]}
    )
    vision = {**tiny.vision_config.to_dict(), **spec["vision"]}
    ids = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id", "eos_token_id",
           "pad_token_id")  # fmt: skip
    config = Qwen2VLConfig(text_config=text, vision_config=vision, bos_token_id=None, tie_word_embeddings=False,
                           **{k: getattr(tiny, k) for k in ids})  # fmt: skip
    torch.manual_seed(0)
    dtype = torch.bfloat16 if size == "2b" else torch.float32
    model = AutoModelForImageTextToText.from_config(config, dtype=dtype)
    model.generation_config.eos_token_id = tok.convert_tokens_to_ids("<|im_end|>")
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(path)
    return path


def rows_and_prompts(n: int, image_root: Path, min_pixels: int, max_pixels: int) -> list:
    from distill.chat_format import load_images, student_prompt
    from distill.data.mmeb import load_examples

    examples = [e for _, e in load_examples(image_root / "train")]
    out = []
    for i in range(n):
        p = student_prompt(examples[i % len(examples)])
        out.append((p.messages, load_images(p.images, str(image_root), min_pixels, max_pixels)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="small")
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--batch_size", type=int, default=16)
    ap.add_argument("--max_new_tokens", type=int, default=32)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--model_dir", default=None, help="Reuse/keep the random model here (default: a temp dir).")
    args = ap.parse_args()

    from distill.reason_hf import Student, run_batches

    pixels = dict(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 16)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.model_dir or Path(tmp) / f"random-qwen2vl-{args.size}")
        if not (path / "config.json").exists():
            build_model(path, args.size)
        student = Student(str(path), device=args.device, **pixels)
        n_params = sum(p.numel() for p in student.model.parameters())
        inputs = rows_and_prompts(args.rows, REPO / "data" / "demo", **pixels)
        sampling = {"temperature": 0.0, "max_tokens": args.max_new_tokens}
        sync = torch.cuda.synchronize if student.device.startswith("cuda") else (lambda: None)

        # warm-up (kernels, allocator) on both paths, outside the timings
        student.generate([student.encode(*inputs[0])], sampling)

        sync()
        t0 = time.perf_counter()
        loop_tokens = 0
        for messages, images in inputs:  # the plain loop: one prompt, one generate call
            prompt = student.encode(messages, images)
            loop_tokens += student.generate([prompt], sampling)[0]["usage"]["completion_tokens"]
        sync()
        loop_s = time.perf_counter() - t0

        records = {}
        sync()
        t0 = time.perf_counter()
        stats = run_batches(student, list(enumerate(inputs)), lambda mi: student.encode(*mi), sampling,
                            args.batch_size, records.__setitem__, progress=False)  # fmt: skip
        sync()
        batched_s = time.perf_counter() - t0

    print(
        f"\nreason throughput: {args.rows} rows (demo prompts, images + text-only), greedy, max_new_tokens "
        f"{args.max_new_tokens}, random-init Qwen2-VL ({n_params / 1e6:.1f}M params, {student.device}, "
        f"{str(student.dtype).removeprefix('torch.')}, {torch.get_num_threads()} threads)\n"
    )
    print("| path | batch | rows/s | generated tokens | tokens/s | speedup |")
    print("|---|---|---|---|---|---|")
    print(f"| per-row model.generate loop | 1 | {args.rows / loop_s:.2f} | {loop_tokens} | {loop_tokens / loop_s:.1f} "
          f"| 1.00x |")  # fmt: skip
    tok = stats["completion_tokens"]
    print(f"| distill reason (hf backend) | {args.batch_size} | {args.rows / batched_s:.2f} | {tok} | "
          f"{tok / batched_s:.1f} | {(tok / batched_s) / (loop_tokens / loop_s):.2f}x |")  # fmt: skip
    print(
        f"\npadding tokens in batches: {stats['padding_tokens']} "
        f"({stats['padding_tokens'] / max(stats['prompt_tokens'] + stats['padding_tokens'], 1):.1%} of prompt slots)"
    )


if __name__ == "__main__":
    main()

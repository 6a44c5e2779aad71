"""Throughput and padding of `distill train` vs a plain TRL SFTTrainer script, same data and model, one run.

    python benchmarks/sft_throughput.py [--copies 10] [--batch_size 8] [--threads 1]

Data: the demo traces (distill.testing.traces), copied `--copies` times with think parts of 1-3x length so lengths
vary as real traces do, exported once. Model: the tiny random Qwen2-VL. Both trainers run 1 epoch in their own
process with the same batch size, lr and threads; `distill train` uses its default length-grouped batches, the plain
script TRL's default random order. tokens/s = real (non-pad) tokens / seconds of `trainer.train()`.
On the shared 2-core CPU machines timings are noisy: compare the ratio, and rerun before trusting one figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def make_export(tmp: Path, copies: int) -> Path:
    from distill.export import ExportConfig, export
    from distill.io import write_jsonl_atomic
    from distill.testing.traces import kept_demo_rows

    base = kept_demo_rows(str(REPO / "data/demo/train"))
    rows = []
    for k in range(copies):
        for i, r in enumerate(base):
            think = " ".join([r["trace"]["think"]] * (1 + (i + k) % 3))
            rows.append({**r, "id": f"{r['id']}-{k}", "trace": {**r["trace"], "think": think}})
    write_jsonl_atomic(tmp / "kept.jsonl", rows)
    export(ExportConfig(input=str(tmp / "kept.jsonl"), output=str(tmp / "export"), image_root=str(REPO / "data/demo"),
                        max_pixels=28 * 28 * 16))  # fmt: skip
    return tmp / "export"


def run(cmd: list[str], env: dict) -> tuple[float, str]:
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return time.time() - t0, proc.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--copies", type=int, default=10)
    ap.add_argument("--batch_size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO),
           "OMP_NUM_THREADS": str(args.threads)}  # fmt: skip
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        from distill.testing.tiny import build_tiny_vlm

        model = build_tiny_vlm(tmp / "tiny")
        data = make_export(tmp, args.copies)
        common = ["--per_device_train_batch_size", str(args.batch_size)]
        ours_wall, _ = run([sys.executable, "-m", "distill", "train", "--config", "recipes/demo/train.yaml",
                            "--model_name_or_path", str(model), "--dataset_path", str(data), "--output_dir",
                            str(tmp / "ours"), "--num_train_epochs", "1", "--logging_steps", "10", "--max_length", "4096",
                            *common], env)  # fmt: skip
        ours = json.loads((tmp / "ours" / "summary.json").read_text())
        plain_wall, out = run([sys.executable, "benchmarks/plain_trl_sft.py", str(model), str(data),
                               str(tmp / "plain"), "--max_steps", "-1", "--epochs", "1", "--batch_size",
                               str(args.batch_size), "--learning_rate", "3e-3"], env)  # fmt: skip
        plain = json.loads(out.strip().splitlines()[-1])
    rows = [("distill train (length-grouped)", ours["tokens_per_second"], ours["pad_fraction"], ours["train_seconds"],
             ours_wall, ours["real_tokens"]),
            ("plain TRL SFTTrainer (random order)", plain["tokens_per_second"], plain["pad_fraction"],
             plain["train_seconds"], plain_wall, plain["real_tokens"])]  # fmt: skip
    print(f"rows {ours['rows_trained']}, batch {args.batch_size}, 1 epoch, tiny Qwen2-VL, CPU threads {args.threads}")
    print(f"{'trainer':38s} {'tokens/s':>10s} {'pad frac':>9s} {'train s':>8s} {'wall s':>7s} {'tokens':>8s}")
    for name, tps, pad, secs, wall, toks in rows:
        print(f"{name:38s} {tps:10.0f} {pad:9.3f} {secs:8.2f} {wall:7.1f} {toks:8d}")
    print(f"speed ratio distill/plain (tokens/s): {ours['tokens_per_second'] / plain['tokens_per_second']:.2f}  "
          f"(target >= 1.0); padding {ours['pad_fraction']:.1%} vs {plain['pad_fraction']:.1%} (target <= 5%)")  # fmt: skip
    print("note: shared 2-core CPU machine, timings noisy; rerun before trusting a single figure")


if __name__ == "__main__":
    main()

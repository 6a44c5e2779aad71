"""A plain TRL SFT script on an export: only `datasets.load_dataset` + TRL's SFTTrainer, none of distill's training
code. It shows the export is stock TRL data, and it is the baseline of `benchmarks/sft_throughput.py`.

    python benchmarks/plain_trl_sft.py MODEL_DIR EXPORT_DIR OUT_DIR [--max_steps 2] [--batch_size 2]

Prints one JSON line: {"losses": [...], "real_tokens", "pad_fraction", "train_seconds", "tokens_per_second"}.
The processor: `AutoProcessor`; only where that cannot load (CPU torch without torchvision, see docs/environment.md) the
PIL-processor fallback from `distill.processing`, which changes nothing about the data path.
"""

from __future__ import annotations

import argparse
import json
import time

from datasets import load_dataset
from transformers import AutoProcessor
from trl import SFTConfig, SFTTrainer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("data")
    ap.add_argument("out")
    ap.add_argument("--max_steps", type=int, default=2)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--batch_size", type=int, default=2)
    ap.add_argument("--learning_rate", type=float, default=1e-3)
    ap.add_argument("--bf16", action="store_true")
    args = ap.parse_args()
    try:
        processor = AutoProcessor.from_pretrained(args.model)
        assert getattr(processor, "image_processor", None) is not None
    except Exception:
        from distill.processing import load_processor

        processor = load_processor(args.model)
    config = SFTConfig(output_dir=args.out, max_steps=args.max_steps, num_train_epochs=args.epochs,
                       per_device_train_batch_size=args.batch_size, learning_rate=args.learning_rate,
                       assistant_only_loss=True, bf16=args.bf16, activation_checkpointing=False, max_length=None,
                       logging_steps=1, save_strategy="no", report_to="none", seed=0)  # fmt: skip
    trainer = SFTTrainer(model=args.model, args=config, train_dataset=load_dataset(args.data, split="train"),
                         processing_class=processor)  # fmt: skip
    real = total = 0
    collate = trainer.data_collator

    def counting_collator(examples):
        nonlocal real, total
        batch = collate(examples)
        real += int(batch["attention_mask"].sum())
        total += batch["attention_mask"].numel()
        return batch

    trainer.data_collator = counting_collator
    t0 = time.time()
    trainer.train()
    seconds = time.time() - t0
    print(json.dumps({"losses": [h["loss"] for h in trainer.state.log_history if "loss" in h], "real_tokens": real,
                      "pad_fraction": 1 - real / total if total else 0.0, "train_seconds": seconds,
                      "tokens_per_second": real / seconds}))  # fmt: skip


if __name__ == "__main__":
    main()

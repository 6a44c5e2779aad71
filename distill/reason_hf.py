"""The `hf` backend of `distill reason`: the student in-process (transformers), batched, left-padded `generate`.

    distill reason --backend hf --model runs/demo/train/model --input data/demo/heldout --output runs/x/traces.jsonl

`Student(path)` loads a full checkpoint, or a PEFT LoRA adapter over its base (`adapter_config.json` names the base;
`base_model` overrides it), merged once for speed. bf16 on GPU, float32 on CPU. Prompts are tokenized one by one with
`distill.chat_format.tokenize_messages` (the exact ids the student was trained on), sorted by length and generated in
batches of `batch_size` rows with left padding, so a batch holds prompts of similar length and little padding.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from distill.checkpoint import resolve_checkpoint
from distill.serve.local_engine import (  # serve's batching and context rules
    MAX_CHARS_PER_TOKEN,
    collate_left_padded,
    resolve_device_dtype,
)

log = logging.getLogger(__name__)


@dataclass
class Prompt:
    """One row's model inputs, unpadded."""

    input_ids: list[int]
    pixel_values: torch.Tensor | None = None
    image_grid_thw: torch.Tensor | None = None
    pixel_values_videos: torch.Tensor | None = None  # a video row's frames, as training collated them
    video_grid_thw: torch.Tensor | None = None
    # which tokens are image/video tokens: Qwen2-VL's M-RoPE positions need them, and `generate` without them silently
    # gives image tokens text positions (unlike training, where the collator passes the processor's)
    mm_token_type_ids: list[int] | None = None


class Student:
    """A loaded student: processor, model (adapter merged), eos / pad ids and identity for provenance."""

    def __init__(self, path: str, base_model: str | None = None, device: str = "auto", dtype: str = "auto",
                 min_pixels: int | None = None, max_pixels: int | None = None):  # fmt: skip
        from transformers import AutoModelForImageTextToText

        from distill.processing import load_processor

        start = time.perf_counter()
        checkpoint = resolve_checkpoint(path, base_model)  # checked once per process (and `distill reason` did)
        self.path, self.base_model = path, checkpoint.base
        self.device, self.dtype = resolve_device_dtype(device, dtype)
        # train saves the processor next to the adapter; an adapter saved without one uses its base's
        proc_dir = path if any((Path(path) / f).exists() for f in ("tokenizer.json", "tokenizer_config.json")) else (
            self.base_model or path)  # fmt: skip
        self.processor = load_processor(proc_dir, min_pixels, max_pixels)
        self.tokenizer = self.processor.tokenizer
        if self.base_model:
            from peft import PeftModel

            base = AutoModelForImageTextToText.from_pretrained(self.base_model, dtype=self.dtype)
            self.model = PeftModel.from_pretrained(base, path).merge_and_unload()  # one matmul per layer, not two
        else:
            self.model = AutoModelForImageTextToText.from_pretrained(path, dtype=self.dtype)
        self.model.to(self.device).eval()
        self.fingerprint = checkpoint.fingerprint
        gen = self.model.generation_config
        eos = gen.eos_token_id if isinstance(gen.eos_token_id, list) else [gen.eos_token_id]
        self.eos_ids = sorted({i for i in [*eos, self.tokenizer.eos_token_id] if i is not None})
        if not self.eos_ids:
            raise ValueError(f"{path}: the model defines no eos token")
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else gen.pad_token_id
        self.pad_id = pad if pad is not None else self.eos_ids[0]
        text_config = self.model.config.get_text_config()
        self.max_context = getattr(text_config, "max_position_embeddings", None)
        self.max_prompt_chars = (self.max_context or 1 << 16) * MAX_CHARS_PER_TOKEN  # serve's rule
        log.info("student %s%s: %.1fM parameters, %s/%s, loaded in %.1f s", path,
                 f" (LoRA over {self.base_model})" if self.base_model else "",
                 sum(p.numel() for p in self.model.parameters()) / 1e6, self.device,
                 str(self.dtype).removeprefix("torch."), time.perf_counter() - start)  # fmt: skip

    def encode(self, messages: list[dict], images: list, videos: list | None = None, max_new_tokens: int = 0) -> Prompt:
        """The prompt exactly as training tokenized it (`distill.chat_format`), with the generation prompt.
        ValueError when it cannot fit the context with `max_new_tokens` more: text far too long is refused before
        tokenizing (`serve`'s rule); one 1 MB row asked `generate` for hundreds of GB and killed the whole run."""
        from distill.chat_format import tokenize_messages

        chars = sum(len(m["content"]) if isinstance(m["content"], str) else
                    sum(len(p.get("text") or "") for p in m["content"]) for m in messages)  # fmt: skip
        if chars > self.max_prompt_chars:
            raise ValueError(f"the prompt holds {chars} characters of text, more than {self.max_prompt_chars}: it "
                             f"cannot fit the model's context of {self.max_context} tokens")  # fmt: skip
        out = tokenize_messages(self.processor, messages, images, add_generation_prompt=True, videos=videos)
        n = len(out["input_ids"][0])
        if self.max_context and n + max_new_tokens > self.max_context:
            raise ValueError(f"the prompt is {n} tokens; with max_new_tokens={max_new_tokens} that is over the "
                             f"model's context of {self.max_context} tokens")  # fmt: skip
        t = {k: None if out.get(k) is None else torch.as_tensor(out[k])
             for k in ("pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw")}  # fmt: skip
        mm = out.get("mm_token_type_ids")
        return Prompt(list(map(int, out["input_ids"][0])), **t,
                      mm_token_type_ids=None if mm is None else list(map(int, mm[0])))  # fmt: skip

    def _collate(self, rows: list[Prompt]) -> dict:
        return collate_left_padded(rows, self.pad_id, self.device, self.dtype)

    @torch.inference_mode()
    def generate(self, rows: list[Prompt], sampling: dict) -> list[dict]:
        """One batched `generate`; per row {content, finish_reason, usage} (the journal record shape)."""
        temperature = sampling.get("temperature") or 0.0
        kw = {"do_sample": False} if temperature <= 0 else {"do_sample": True, "temperature": temperature,
                                                            "top_p": sampling.get("top_p") or 1.0, "top_k": 0}  # fmt: skip
        inputs = self._collate(rows)
        out = self.model.generate(**inputs, max_new_tokens=sampling["max_tokens"], eos_token_id=self.eos_ids,
                                  pad_token_id=self.pad_id, **kw)  # fmt: skip
        results = []
        for r, tokens in zip(rows, out[:, inputs["input_ids"].shape[1] :].tolist(), strict=True):
            end = next((i for i, t in enumerate(tokens) if t in self.eos_ids), None)
            kept, finish, count = (tokens, "length", len(tokens)) if end is None else (tokens[:end], "stop", end + 1)
            results.append({"status": "truncated" if finish == "length" else "ok",
                            "content": self.tokenizer.decode(kept, skip_special_tokens=True), "finish_reason": finish,
                            "usage": {"prompt_tokens": len(r.input_ids), "completion_tokens": count}})  # fmt: skip
        return results


def length_sorted_batches(items: list, length: Callable[[object], int], batch_size: int) -> Iterator[list]:
    """`items` sorted longest first (the first batch shows the memory peak at once), cut into batches."""
    ordered = sorted(items, key=length, reverse=True)
    for b in range(0, len(ordered), batch_size):
        yield ordered[b : b + batch_size]


def run_batches(student: Student, todo: list[tuple[str, object]], encode: Callable[[object], Prompt], sampling: dict,
                batch_size: int, on_result: Callable[[str, dict], None], progress: bool = True,
                window_batches: int = 16) -> dict:  # fmt: skip
    """Generate for every (key, payload): `encode(payload)` gives the prompt (an exception: a failed record with the
    error, not generated), `on_result(key, record)` is called as each batch finishes. Prompts are encoded a window of
    `window_batches` batches at a time and length-sorted inside it: pixel values of a whole dataset never sit in memory
    at once, and padding stays low. Returns stats."""
    stats = {"rows": 0, "failed": 0, "prompt_tokens": 0, "completion_tokens": 0, "batches": 0, "padding_tokens": 0}
    start = time.monotonic()
    bar = tqdm(total=len(todo), desc="reason (hf)", unit="row", dynamic_ncols=True, disable=not progress)
    window = batch_size * window_batches
    try:
        for w in range(0, len(todo), window):
            encoded = []
            for key, payload in todo[w : w + window]:
                try:
                    encoded.append((key, encode(payload)))
                except (ValueError, OSError) as e:  # an unreadable image (ImageError), a prompt the processor refuses
                    on_result(key, {"status": "failed", "error": f"bad input: {e}"})
                    stats["failed"] += 1
                    bar.update(1)
            for batch in length_sorted_batches(encoded, lambda kp: len(kp[1].input_ids), batch_size):
                prompts = [p for _, p in batch]
                width = max(len(p.input_ids) for p in prompts)
                for (key, _), record in zip(batch, student.generate(prompts, sampling), strict=True):
                    on_result(key, record)
                    stats["prompt_tokens"] += record["usage"]["prompt_tokens"]
                    stats["completion_tokens"] += record["usage"]["completion_tokens"]
                stats["rows"] += len(batch)
                stats["batches"] += 1
                stats["padding_tokens"] += sum(width - len(p.input_ids) for p in prompts)
                elapsed = max(time.monotonic() - start, 1e-9)
                bar.update(len(batch))
                bar.set_postfix(tok_s=f"{stats['completion_tokens'] / elapsed:.0f}", refresh=False)
    finally:
        bar.close()
    stats["elapsed_s"] = round(time.monotonic() - start, 3)
    return stats

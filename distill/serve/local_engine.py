"""One local HF model behind `distill serve`: load it, turn a checked chat request into model inputs, and run
batched, left-padded, resumable generation over many requests (per-row sampling and stopping: `distill.serve.decode`).

Image-text models (any `model_type` transformers maps to `AutoModelForImageTextToText`, e.g. the Qwen2-VL family) load
their processor through `distill.processing.load_processor`; text-only causal LMs load `AutoModelForCausalLM` and use
the tokenizer's chat template. A text-only model refuses image input with a 400. A prompt whose text cannot fit the
context (more than `MAX_CHARS_PER_TOKEN` characters per context token) is refused before it is tokenized: tokenizing
a 100 MB prompt costs minutes of CPU and gigabytes, only to find it is too long.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import LogitsProcessorList, StoppingCriteriaList

from distill.serve.chat_request import ChatRequest, Choice, RequestError, SamplingParams
from distill.serve.decode import Row, RowSampler, RowStop, Running, row_generator

log = logging.getLogger(__name__)
# No tokenizer here spends more than this many characters on one token, so longer text cannot fit the context.
MAX_CHARS_PER_TOKEN = 32


def parse_model_spec(spec: str) -> tuple[str, str]:
    """`name=PATH` -> (name, PATH); `PATH` -> (the directory's name, PATH); `smollm2` -> ("smollm2", "smollm2")."""
    if "=" in spec:
        name, path = spec.split("=", 1)
        if not name or not path:
            raise ValueError(f"bad model spec {spec!r}: expected PATH or NAME=PATH")
        return name, path
    return Path(spec.rstrip("/")).name or spec, spec


def resolve_device_dtype(device: str, dtype: str) -> tuple[str, torch.dtype]:
    """'auto' picks cuda when available (bfloat16 there), else cpu (float32)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        return device, torch.bfloat16 if device.startswith("cuda") else torch.float32
    return device, getattr(torch, dtype)


@dataclass
class Prepared:
    """Model inputs for one request (no padding yet)."""

    input_ids: list[int]
    pixel_values: torch.Tensor | None = None
    image_grid_thw: torch.Tensor | None = None
    mm_token_type_ids: list[int] | None = None  # which tokens are image tokens (Qwen2-VL's 3D rope positions)

    @property
    def prompt_tokens(self) -> int:
        return len(self.input_ids)


class LocalModel:
    """A loaded model with its tokenizer/processor. `prepare` may run in any thread; `generate` in one worker thread."""

    def __init__(self, model_id: str, path: str | Path, device: str = "auto", dtype: str = "auto",
                 max_prompt_chars: int | None = None):  # fmt: skip
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText, AutoTokenizer
        from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

        start = time.perf_counter()
        self.model_id, self.path = model_id, Path(path)
        self.device, self.dtype = resolve_device_dtype(device, dtype)
        config = AutoConfig.from_pretrained(str(path))
        self.is_vlm = config.model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES
        if self.is_vlm:
            from distill.processing import load_processor

            self.processor = load_processor(path)
            self.tokenizer = self.processor.tokenizer
            loader = AutoModelForImageTextToText
        else:
            self.processor = None
            self.tokenizer = AutoTokenizer.from_pretrained(str(path))
            loader = AutoModelForCausalLM
        if not getattr(self.processor or self.tokenizer, "chat_template", None):
            raise ValueError(f"model {model_id!r} at {path} has no chat template; a chat server needs one")
        self.model = loader.from_pretrained(str(path), dtype=self.dtype).to(self.device).eval()
        gen = self.model.generation_config
        eos = gen.eos_token_id if isinstance(gen.eos_token_id, list) else [gen.eos_token_id]
        self.eos_ids = {i for i in [*eos, self.tokenizer.eos_token_id] if i is not None}
        if not self.eos_ids:
            raise ValueError(f"model {model_id!r} at {path} defines no eos token")
        # Rows end in RowStop (eos unless ignore_eos, own max_tokens, cancelled), not in generate's own eos check.
        self._gen_config = copy.deepcopy(gen)
        self._gen_config.eos_token_id = None
        self._gen_config.do_sample, self._gen_config.return_dict_in_generate = False, True
        for name in ("temperature", "top_p", "top_k", "max_length"):  # sampling is RowSampler's; length is per call
            setattr(self._gen_config, name, None)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else gen.pad_token_id
        self.pad_id = pad if pad is not None else min(self.eos_ids)
        self._gen_config.pad_token_id = self.pad_id
        text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
        self.max_context = getattr(text_config, "max_position_embeddings", None)
        self.max_prompt_chars = max_prompt_chars or (self.max_context or 1 << 16) * MAX_CHARS_PER_TOKEN
        # Fast tokenizers can raise "Already borrowed" when used from several threads at once.
        self._tokenizer_lock = threading.Lock()
        n_params = sum(p.numel() for p in self.model.parameters())
        log.info("model %r: %s %s, %.1fM parameters, %s/%s, loaded in %.1f s from %s", model_id,
                 "image-text" if self.is_vlm else "text-only", type(self.model).__name__, n_params / 1e6,
                 self.device, str(self.dtype).removeprefix("torch."), time.perf_counter() - start, path)  # fmt: skip

    @property
    def kind(self) -> str:
        return "image-text" if self.is_vlm else "text-only"

    def prepare(self, request: ChatRequest) -> Prepared:
        """Render the chat template and tokenize; RequestError(400) for image input to a text-only model, messages
        the template or processor refuses, or a prompt that does not fit the context."""
        from jinja2 import TemplateError

        chars = sum(len(p.get("text", "")) for m in request.messages for p in m["content"])
        if chars > self.max_prompt_chars:  # before tokenizing: a huge prompt is refused for the cost of a len()
            raise RequestError(400, f"the messages hold {chars} characters of text, more than {self.max_prompt_chars} "
                               f"(this model's maximum context length is {self.max_context} tokens)",
                               code="context_length_exceeded", param="messages")  # fmt: skip
        if request.images and not self.is_vlm:
            raise RequestError(400, f"model {self.model_id!r} is a text-only model and cannot take image input "
                               f"({len(request.images)} image_url part(s) sent); send images to an image-text model",
                               code="image_input_not_supported", param="messages")  # fmt: skip
        try:
            prepared = self._tokenize(request)
        except TemplateError as e:  # e.g. templates that insist on alternating roles
            raise RequestError(400, f"the chat template of {self.model_id!r} rejected the messages: {e}",
                               param="messages") from None  # fmt: skip
        except ValueError as e:  # e.g. an image whose aspect ratio the processor refuses
            raise RequestError(400, f"model {self.model_id!r} cannot process this input: {e}",
                               param="messages") from None  # fmt: skip
        wanted = prepared.prompt_tokens + request.params.max_tokens
        if self.max_context and wanted > self.max_context:
            raise RequestError(400, f"This model's maximum context length is {self.max_context} tokens. However, you "
                               f"requested {wanted} tokens ({prepared.prompt_tokens} in the messages, "
                               f"{request.params.max_tokens} in the completion).",
                               code="context_length_exceeded", param="messages")  # fmt: skip
        return prepared

    def _tokenize(self, request: ChatRequest) -> Prepared:
        with self._tokenizer_lock:
            if self.is_vlm:
                text = self.processor.apply_chat_template(request.messages, add_generation_prompt=True, tokenize=False)
                inputs = self.processor(text=[text], images=request.images or None, return_tensors="pt")
                mm = inputs.get("mm_token_type_ids")
                return Prepared(inputs["input_ids"][0].tolist(), inputs.get("pixel_values"), inputs.get("image_grid_thw"),
                                mm[0].tolist() if mm is not None else None)  # fmt: skip
            messages = [{"role": m["role"], "content": "\n".join(p["text"] for p in m["content"])}
                        for m in request.messages]  # fmt: skip
            text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            return Prepared(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _collate(self, rows: list[Prepared]) -> dict:
        return collate_left_padded(rows, self.pad_id, self.device, self.dtype)

    def begin(self, jobs: list) -> Running:
        """A batch of `jobs` (each has `prepared`, `params`, `rows` to fill), not started yet: one row per choice."""
        rows = []
        for job in jobs:
            job.rows = [Row(job, j, row_generator(job.params.seed, j, self.device)) for j in range(job.params.n)]
            rows += job.rows
        inputs = self._collate([row.job.prepared for row in rows])
        return Running(self, rows, inputs, prompt_width=inputs["input_ids"].shape[1], jobs=list(jobs))

    @torch.inference_mode()
    def advance(self, run: Running, on_job_done: Callable, should_pause: Callable[[], bool], min_steps: int) -> None:
        """Generate until every row is done or `should_pause()` (asked after `min_steps` tokens) says yield; then drop
        the finished rows from the batch (sequences, mask, KV cache) so a resumed batch only computes live rows."""
        live = run.live_rows()
        budget = max(row.job.params.max_tokens for row in live) - run.generated
        stop = RowStop(run, self.eos_ids, on_job_done, should_pause, min_steps)
        config = copy.copy(self._gen_config)
        config.max_new_tokens = max(budget, 1)
        common = {"generation_config": config, "logits_processor": LogitsProcessorList([RowSampler(run.rows)]),
                  "stopping_criteria": StoppingCriteriaList([stop])}  # fmt: skip
        inner = getattr(self.model, "model", None)
        if run.sequences is None:
            out = self.model.generate(**run.inputs, **common)
            mask = run.inputs["attention_mask"]
        else:  # resume: the cache holds every token but the last; rope deltas are per batch, the model keeps one
            if run.rope_deltas is not None:
                inner.rope_deltas = run.rope_deltas
            out = self.model.generate(input_ids=run.sequences, attention_mask=run.attention_mask, cache=run.cache,
                                      **common)  # fmt: skip
            mask = run.attention_mask
        new = out.sequences.shape[1] - mask.shape[1]
        run.attention_mask = torch.cat([mask, mask.new_ones((mask.shape[0], new))], dim=1)
        run.sequences, run.cache = out.sequences, out.cache
        run.rope_deltas = getattr(inner, "rope_deltas", None) if self.is_vlm else None
        run.inputs = {}
        keep = [i for i, row in enumerate(run.rows) if not row.done]
        if keep and len(keep) < len(run.rows):
            index = torch.tensor(keep, device=run.sequences.device)
            run.sequences, run.attention_mask = run.sequences[index], run.attention_mask[index]
            run.cache.batch_select_indices(index)
            if run.rope_deltas is not None and run.rope_deltas.shape[0] == len(run.rows):
                run.rope_deltas = run.rope_deltas[index]
            run.rows = [run.rows[i] for i in keep]
        elif not keep:
            run.cache = None  # done: let the KV cache go now

    def choices(self, job) -> list[Choice]:
        """The finished job's `n` choices, each cut at its own eos / max_tokens / stop string."""
        with self._tokenizer_lock:
            return [self._choice(row.tokens, row.finish, job.params) for row in job.rows]

    def generate(self, jobs: list[tuple[Prepared, SamplingParams]]) -> list[list[Choice]]:
        """Run `jobs` to completion in one batch (scripts and tests; the server goes through the batcher)."""
        batch = [_SimpleJob(prepared, params) for prepared, params in jobs]
        run = self.begin(batch)
        while run.live_rows():
            self.advance(run, lambda job: None, lambda: False, 1)
        return [self.choices(job) for job in batch]

    def _choice(self, tokens: list[int], finish: str, params: SamplingParams) -> Choice:
        """One finished row: `tokens` end with the eos token when `finish` is "stop"."""
        if finish == "stop":
            kept, count = tokens[:-1], len(tokens)  # the eos token was generated, so it is counted
        else:
            kept, count, finish = tokens[: params.max_tokens], min(len(tokens), params.max_tokens), "length"
        text = self.tokenizer.decode(kept, skip_special_tokens=True)
        cut = min((p for p in (text.find(s) for s in params.stop) if p >= 0), default=-1)
        if cut >= 0:
            # Tokens generated up to the one that completed the stop string (OpenAI leaves the stop string out).
            count = next(k for k in range(1, len(kept) + 1)
                         if any(s in self.tokenizer.decode(kept[:k], skip_special_tokens=True) for s in params.stop))  # fmt: skip
            text, finish = text[:cut], "stop"
        return Choice(text=text, finish_reason=finish, completion_tokens=count)


@dataclass(eq=False)
class _SimpleJob:
    prepared: Prepared
    params: SamplingParams
    cancelled: bool = False
    rows: list = field(default_factory=list)


def collate_left_padded(rows: list, pad_id: int, device: str, dtype: torch.dtype) -> dict:
    """One `generate` batch from unpadded prompts (`input_ids`, optional `mm_token_type_ids`, `pixel_values` +
    `image_grid_thw`, `pixel_values_videos` + `video_grid_thw`), shared by serve and `distill reason`. Left padding,
    so every prompt ends where generation starts; Qwen2-VL takes the batch's patches concatenated in the order of
    its image (video) tokens; `mm_token_type_ids` give image/video tokens their M-RoPE positions, as in training."""
    width = max(len(r.input_ids) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r.input_ids) :] = torch.tensor(r.input_ids, dtype=torch.long)
        mask[i, width - len(r.input_ids) :] = 1
    inputs = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
    if any(r.mm_token_type_ids is not None for r in rows):
        mm = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            if r.mm_token_type_ids is not None:
                mm[i, width - len(r.input_ids) :] = torch.tensor(r.mm_token_type_ids, dtype=torch.long)
        inputs["mm_token_type_ids"] = mm.to(device)
    for values, grid in (("pixel_values", "image_grid_thw"), ("pixel_values_videos", "video_grid_thw")):
        with_media = [r for r in rows if getattr(r, values, None) is not None]
        if with_media:
            inputs[values] = torch.cat([getattr(r, values) for r in with_media]).to(device, dtype)
            inputs[grid] = torch.cat([getattr(r, grid) for r in with_media]).to(device)
    return inputs

"""One local HF model behind `distill serve`: load it, turn a checked chat request into model inputs, and run one
batched, left-padded `generate` over many requests.

Image-text models (any `model_type` transformers maps to `AutoModelForImageTextToText`, e.g. the Qwen2-VL family) load
their processor through `distill.processing.load_processor`; text-only causal LMs load `AutoModelForCausalLM` and use
the tokenizer's chat template. A text-only model refuses image input with a 400.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from distill.serve.chat_request import ChatRequest, Choice, RequestError, SamplingParams

log = logging.getLogger(__name__)


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

    @property
    def prompt_tokens(self) -> int:
        return len(self.input_ids)


class LocalModel:
    """A loaded model with its tokenizer/processor. `prepare` may run in any thread; `generate` in one worker thread."""

    def __init__(self, model_id: str, path: str | Path, device: str = "auto", dtype: str = "auto"):
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
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else gen.pad_token_id
        self.pad_id = pad if pad is not None else min(self.eos_ids)
        text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
        self.max_context = getattr(text_config, "max_position_embeddings", None)
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
                return Prepared(inputs["input_ids"][0].tolist(), inputs.get("pixel_values"),
                                inputs.get("image_grid_thw"))  # fmt: skip
            messages = [{"role": m["role"], "content": "\n".join(p["text"] for p in m["content"])}
                        for m in request.messages]  # fmt: skip
            text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            return Prepared(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _collate(self, rows: list[Prepared]) -> dict:
        width = max(r.prompt_tokens for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):  # left padding: every prompt ends where generation starts
            ids[i, width - r.prompt_tokens :] = torch.tensor(r.input_ids, dtype=torch.long)
            mask[i, width - r.prompt_tokens :] = 1
        inputs = {"input_ids": ids.to(self.device), "attention_mask": mask.to(self.device)}
        with_images = [r for r in rows if r.pixel_values is not None]
        if with_images:
            inputs["pixel_values"] = torch.cat([r.pixel_values for r in with_images]).to(self.device, self.dtype)
            inputs["image_grid_thw"] = torch.cat([r.image_grid_thw for r in with_images]).to(self.device)
        return inputs

    @torch.inference_mode()
    def generate(self, jobs: list[tuple[Prepared, SamplingParams]]) -> list[list[Choice]]:
        """One `generate` call over every job (each expanded `n` times); all jobs share temperature/top_p/seed
        (the batcher groups them so). Returns, per job, its `n` choices."""
        rows = [p for p, params in jobs for _ in range(params.n)]
        limits = [params for _, params in jobs for _ in range(params.n)]
        first = jobs[0][1]
        sampling = {"do_sample": False} if first.greedy else {"do_sample": True, "temperature": first.temperature,
                                                               "top_p": first.top_p, "top_k": 0}  # fmt: skip
        if first.seed is not None and not first.greedy:
            torch.manual_seed(first.seed)
        inputs = self._collate(rows)
        out = self.model.generate(**inputs, max_new_tokens=max(p.max_tokens for p in limits),
                                  eos_token_id=sorted(self.eos_ids), pad_token_id=self.pad_id, **sampling)  # fmt: skip
        new_tokens = out[:, inputs["input_ids"].shape[1] :].tolist()
        with self._tokenizer_lock:
            choices = [self._choice(toks, params) for toks, params in zip(new_tokens, limits, strict=True)]
        result, i = [], 0
        for _, params in jobs:
            result.append(choices[i : i + params.n])
            i += params.n
        return result

    def _choice(self, tokens: list[int], params: SamplingParams) -> Choice:
        """Cut one generated row at its own eos / max_tokens / stop string (rows of a batch share max_new_tokens)."""
        tokens = tokens[: params.max_tokens]
        end = next((i for i, t in enumerate(tokens) if t in self.eos_ids), None)
        if end is None:
            kept, finish, count = tokens, "length", len(tokens)
        else:
            kept, finish, count = tokens[:end], "stop", end + 1  # the eos token was generated, so it is counted
        text = self.tokenizer.decode(kept, skip_special_tokens=True)
        cut = min((p for p in (text.find(s) for s in params.stop) if p >= 0), default=-1)
        if cut >= 0:
            # Tokens generated up to the one that completed the stop string (OpenAI leaves the stop string out).
            count = next(k for k in range(1, len(kept) + 1)
                         if any(s in self.tokenizer.decode(kept[:k], skip_special_tokens=True) for s in params.stop))  # fmt: skip
            text, finish = text[:cut], "stop"
        return Choice(text=text, finish_reason=finish, completion_tokens=count)
